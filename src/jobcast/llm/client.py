"""Talking to the model: one streamed chat completion at a time, through the `openai` client.

Every call streams (even when the answer is JSON), so a cancel can end the
model's response at once: the context's cancel callback shuts the connection
down and no further tokens are read or paid for. 429 and 5xx answers are retried
here, honouring `Retry-After`, with cancel-aware waits (the openai client's own
retries would sleep through a cancel).
A JSON answer that does not fit its schema gets one repair round, then the
step fails with `bad_model_output`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from jobcast.context import JobCanceled, JobContext, JobFailed
from jobcast.llm.capacity import Call, Capacity

__all__ = ["LLM"]

log = logging.getLogger("jobcast.llm")

MAX_TRIES = 5
"""Tries of one model call: 408, 429 and 5xx answers and dropped connections are tried again."""
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_WAIT_S = 60.0
M = TypeVar("M", bound=BaseModel)

_STATUS_HINTS = {
    400: "the request was refused (is JOBCAST_MODEL a chat model that takes these options?)",
    401: "authentication failed: check OPENAI_API_KEY",
    403: "access denied: check OPENAI_API_KEY and the model's permissions",
    404: "no such model or endpoint: check JOBCAST_MODEL and OPENAI_BASE_URL",
    429: "rate limited, and still after several tries",
}


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """The seconds the server asks to wait: `Retry-After`, else the longest `x-ratelimit-reset-*` (`1.5s`,
    `6m0s`, `20ms`), else None."""
    headers = exc.response.headers
    raw = headers.get("retry-after")
    try:
        if raw is not None:
            return float(raw)
    except ValueError:
        return None
    resets = [_duration(v) for k, v in headers.items() if k.lower().startswith("x-ratelimit-reset")]
    return max((r for r in resets if r is not None), default=None)


def _duration(text: str) -> float | None:
    """`1m30s`, `1.5s`, `20ms` (OpenAI's reset headers) in seconds; None if it is none of those."""
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _hang_up(response: Any) -> None:
    """End a streamed response at once, even while another thread waits on it for the next token.

    Closing a socket does not wake a thread blocked reading it; shutting it down does.
    """
    try:
        response.response.extensions["network_stream"].get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    except Exception:  # no socket to reach (already closed, another transport): closing is all we can do
        pass
    with contextlib.suppress(Exception):
        response.close()


class LLM:
    """The model, as one job sees it. Its calls may run on several threads at once."""

    def __init__(self, ctx: JobContext) -> None:
        settings = ctx.settings
        reason = settings.model_unavailable()
        if reason is not None:
            raise JobFailed(reason, code="model_unavailable", retryable=False)
        self.ctx = ctx
        self.model = settings.model or ""
        self.capacity = Capacity(ctx, self.model)
        self.client = openai.OpenAI(api_key=settings.openai_api_key or "not-needed",
                                    base_url=settings.openai_base_url, max_retries=0, timeout=120)
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self._aborted = False

    def abort(self) -> None:
        """Hang up every call in flight and refuse new ones (one part of the job failed: stop paying for the rest)."""
        with self._lock:
            self._aborted = True
            open_now = list(self._open)
        for response in open_now:
            _hang_up(response)

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        on_text: Callable[[str], None] | None = None,
        max_tokens: int | None = None,
        json_mode: bool = False,
    ) -> tuple[str, dict[str, Any] | None]:
        """The model's whole answer and its usage; `on_text` gets each piece as it arrives."""
        options: dict[str, Any] = {"stream_options": {"include_usage": True}}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if json_mode:
            options["response_format"] = {"type": "json_object"}
        asking = _tokens(messages) + (max_tokens or 0)  # (what the call may take: its prompt and its answer's cap)
        for attempt in range(1, MAX_TRIES + 1):
            self.ctx.check()
            self.ctx.check_budget(asking)
            if self._aborted:
                raise JobFailed("stopped: another part of this job failed", code="aborted", retryable=False)
            try:
                with self.capacity.hold(asking) as call:
                    return self._once(messages, options, on_text, call)
            except openai.APIStatusError as exc:
                log.info("job %s: model answered %s (try %d of %d)", self.ctx.id, exc.status_code, attempt, MAX_TRIES)
                log.debug("job %s: model error body: %s", self.ctx.id, exc.message)
                if exc.status_code not in RETRYABLE or attempt == MAX_TRIES:
                    hint = _STATUS_HINTS.get(exc.status_code, "the model server failed")
                    raise JobFailed(f"the model server answered {exc.status_code}: {hint}", code="model_error",
                                    retryable=exc.status_code in RETRYABLE) from None
                wait = _retry_after(exc)
                if exc.status_code == 429 and wait is not None:  # every worker's next call waits it out too
                    self.capacity.slow_down(wait)
            except openai.APIConnectionError as exc:
                if attempt == MAX_TRIES:
                    raise JobFailed(f"the model server cannot be reached: {exc}", code="model_unreachable") from None
                wait = None
            self.ctx.sleep(min(MAX_WAIT_S, wait if wait is not None else 0.5 * 2 ** attempt * random.uniform(0.8, 1.2)))
        raise AssertionError("unreachable")

    def _once(self, messages: list[dict[str, Any]], options: dict[str, Any], on_text: Callable[[str], None] | None,
              call: Call) -> tuple[str, dict[str, Any] | None]:
        response: Any = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                            stream=True, **options)
        with self._lock:
            self._open.add(response)
        unregister = self.ctx.on_cancel(lambda: _hang_up(response))
        parts: list[str] = []
        usage = None
        try:
            for chunk in response:
                if self.ctx.canceled:
                    raise JobCanceled(f"job {self.ctx.id} was canceled")
                call.renew()
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump()
                for choice in chunk.choices:
                    text = choice.delta.content
                    if text:
                        parts.append(text)
                        if on_text is not None:
                            on_text(text)
        except (JobCanceled, openai.APIStatusError):
            raise
        except Exception as exc:
            if self.ctx.canceled:  # we hung up
                raise JobCanceled(f"job {self.ctx.id} was canceled") from None
            if self._aborted:
                raise JobFailed("stopped: another part of this job failed", code="aborted", retryable=False) from None
            raise openai.APIConnectionError(message=f"the answer broke off: {exc}",
                                            request=response.response.request) from exc
        finally:
            unregister()
            with self._lock:
                self._open.discard(response)
            response.close()
        if self.ctx.canceled:
            raise JobCanceled(f"job {self.ctx.id} was canceled")
        text = "".join(parts)
        reported = usage is not None and usage.get("prompt_tokens") is not None
        if usage is not None and reported:
            prompt, completion = int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)
        else:  # the server reported none: about 4 characters a token
            prompt, completion = _tokens(messages), -(-len(text) // 4)
        call.used(prompt + completion)
        self.ctx.add_usage(self.model, prompt, completion, estimated=not reported)
        return text, usage

    def json(self, messages: list[dict[str, Any]], shape: type[M],
             on_text: Callable[[str], None] | None = None) -> M:
        """The model's answer as `shape`; one repair round if it does not fit. `on_text` gets the first
        answer's pieces as they arrive (to use its parts early: `generate_personas`)."""
        text, _ = self.stream(messages, json_mode=True, on_text=on_text)
        try:
            return shape.model_validate_json(text)
        except ValidationError as first:
            repair = [*messages, {"role": "assistant", "content": text},
                      {"role": "user", "content": "That answer was not valid JSON of the requested shape "
                                                  f"({_problems(first)}). Reply again with only the corrected "
                                                  "JSON object."}]
            text, _ = self.stream(repair, json_mode=True)
            try:
                return shape.model_validate_json(text)
            except ValidationError as second:
                raise JobFailed(f"the model's answer did not fit the expected JSON shape, even after a repair "
                                f"request: {_problems(second)}", code="bad_model_output", retryable=False) from None


def _tokens(messages: list[dict[str, Any]]) -> int:
    """The prompt's tokens, at about 4 characters a token."""
    return -(-sum(len(str(m.get("content") or "")) for m in messages) // 4)


def _problems(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(answer)'}: {e['msg']}" for e in errors[:3])
    return f"{len(errors)} problem(s): {shown}"
