"""Talking to the model: one streamed chat completion at a time, through the `openai` client.

Every call streams (even when the answer is JSON), so a cancel can close the
model's response at once: the context's cancel callback closes the HTTP stream
and no further tokens are read or paid for. 429 and 5xx answers are retried
by the openai client itself (honouring `Retry-After`), `MAX_RETRIES` times.
A JSON answer that does not fit its schema gets one repair round, then the
step fails with `bad_model_output`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from jobcast.context import JobCanceled, JobContext, JobFailed

__all__ = ["LLM"]

MAX_RETRIES = 4
M = TypeVar("M", bound=BaseModel)


class LLM:
    """The model, as one job sees it."""

    def __init__(self, ctx: JobContext) -> None:
        settings = ctx.settings
        reason = settings.model_unavailable()
        if reason is not None:
            raise JobFailed(reason, code="model_unavailable")
        self.ctx = ctx
        self.model = settings.model or ""
        self.client = openai.OpenAI(api_key=settings.openai_api_key or "not-needed",
                                    base_url=settings.openai_base_url, max_retries=MAX_RETRIES, timeout=120)

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
        self.ctx.check()
        try:
            response: Any = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                                stream=True, **options)
        except openai.APIStatusError as exc:
            raise JobFailed(f"the model server answered {exc.status_code}: {exc.message}", code="model_error") from None
        except openai.APIConnectionError as exc:
            raise JobFailed(f"the model server cannot be reached: {exc}", code="model_unreachable") from None
        unregister = self.ctx.on_cancel(response.close)
        parts: list[str] = []
        usage = None
        try:
            for chunk in response:
                if self.ctx.canceled:
                    raise JobCanceled(f"job {self.ctx.id} was canceled")
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump()
                for choice in chunk.choices:
                    text = choice.delta.content
                    if text:
                        parts.append(text)
                        if on_text is not None:
                            on_text(text)
        except JobCanceled:
            raise
        except Exception as exc:
            if self.ctx.canceled:  # our own close() ended the stream
                raise JobCanceled(f"job {self.ctx.id} was canceled") from None
            raise JobFailed(f"the model's answer broke off: {exc}", code="model_error") from None
        finally:
            unregister()
            response.close()
        if self.ctx.canceled:
            raise JobCanceled(f"job {self.ctx.id} was canceled")
        return "".join(parts), usage

    def json(self, messages: list[dict[str, Any]], shape: type[M]) -> M:
        """The model's answer as `shape`; one repair round if it does not fit."""
        text, _ = self.stream(messages, json_mode=True)
        try:
            return shape.model_validate_json(text)
        except ValidationError as first:
            repair = [*messages, {"role": "assistant", "content": text},
                      {"role": "user", "content": "That answer was not valid JSON of the requested shape "
                                                  f"({first.error_count()} errors: {first.errors()[0]['msg']}). "
                                                  "Reply again with only the corrected JSON object."}]
            text, _ = self.stream(repair, json_mode=True)
            try:
                return shape.model_validate_json(text)
            except ValidationError as second:
                raise JobFailed(f"the model's answer did not fit the expected JSON shape, even after a repair "
                                f"request: {second.errors()[0]['msg']}", code="bad_model_output") from None
