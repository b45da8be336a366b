"""A stand-in for an OpenAI-compatible model server, for trying the LLM job types offline and for tests.

It is NOT a model: it answers the chat-completions protocol (streaming or not,
JSON mode or not) with made-up but well-formed content, derived from a marker
that jobcast's prompts carry (`[jobcast:personas count=10]` and the like). It is
paced like a real model by default (`first_token_ms`, then `tokens_per_s` per
call: a "token" here is a word), so that a page shows work arriving as it would;
tests pass 0 for both. Tests can also script the next answers (an HTTP error, bad
JSON, a slow stream) and read back every request it got and how each stream
ended.

    POST /v1/chat/completions    the protocol
    POST /_script                append answers: [{"status": 429, "headers": {...}}, {"content": "..."},
                                                  {"delay_ms": 200}]
    GET  /_requests              what it was asked, and for streams how they ended
    POST /_reset                 forget both
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["create_fake_llm"]

MARKER = re.compile(r"\[jobcast:(\w+)((?: \w+=[^\s\]]+)*)\]")


def _marker(messages: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    for message in messages:
        found = MARKER.search(str(message.get("content", "")))
        if found:
            return found.group(1), dict(kv.split("=", 1) for kv in found.group(2).split())
    return "chat", {}


def _answer(kind: str, args: dict[str, str]) -> str:
    """Made-up content of the shape each jobcast prompt asks for."""
    if kind == "personas":
        start, count = int(args.get("start", "1")), int(args.get("count", "1"))
        return json.dumps({"personas": [
            {"name": f"Persona {i}", "age": 20 + i % 50, "occupation": ["designer", "nurse", "farmer"][i % 3],
             "background": f"Persona {i} grew up somewhere quiet.", "goals": [f"goal {i}"]}
            for i in range(start, start + count)]})
    if kind == "lore":
        return json.dumps({"value": f"The {args.get('step', 'detail')} of {args.get('kind', 'thing')} "
                                    f"#{args.get('piece', '1')}."})
    if kind == "epic":
        return json.dumps({"title": "A made-up epic", "description": "What the brief asks for, in one epic."})
    if kind == "stories":
        n = int(args.get("count", "3"))
        return json.dumps({"stories": [{"title": f"Story {i}", "description": f"As a user I want thing {i}."}
                                       for i in range(1, n + 1)]})
    if kind == "tasks":
        story = args.get("story", "1")
        return json.dumps({"tasks": [{"title": f"Task {story}.{i}", "estimate_h": i} for i in (1, 2)]})
    return ("Hello! I am the stand-in model of jobcast dev, not a real one: every answer is made up. "
            "I answer at about the pace of a real model, a word at a time, so that you can watch a reply "
            "stream in. To talk to a real model, set JOBCAST_MODEL, and OPENAI_API_KEY or OPENAI_BASE_URL "
            "for an OpenAI-compatible server such as Ollama or vLLM, then start jobcast again.")


FIRST_TOKEN_MS = 400
TOKENS_PER_S = 40


def create_fake_llm(first_token_ms: int = FIRST_TOKEN_MS, tokens_per_s: float = TOKENS_PER_S) -> Starlette:
    """The stand-in as an ASGI app; 0 for both paces answers not at all (a scripted `delay_ms` still does)."""
    script: deque[dict[str, Any]] = deque()
    requests: list[dict[str, Any]] = []

    async def completions(request: Request) -> Response:
        body = await request.json()
        record: dict[str, Any] = {"body": body, "at": time.time(), "stream_ended": None}
        requests.append(record)
        step = script.popleft() if script else {}
        if "status" in step:
            return JSONResponse({"error": {"message": step.get("message", "scripted error"), "type": "scripted"}},
                                status_code=step["status"], headers=step.get("headers"))
        kind, args = _marker(body.get("messages", []))
        content = step.get("content", _answer(kind, args))
        model = body.get("model", "stand-in")
        created = int(time.time())
        words = len(content.split())
        usage = {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}
        pieces = re.findall(r"\S+\s*", content) or [content]
        if not body.get("stream"):
            await asyncio.sleep(first_token_ms / 1000 + (len(pieces) / tokens_per_s if tokens_per_s else 0))
            return JSONResponse({
                "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
        delay = step["delay_ms"] / 1000 if "delay_ms" in step else 1 / tokens_per_s if tokens_per_s else 0

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(data)}\n\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            try:
                if first_token_ms:
                    await asyncio.sleep(first_token_ms / 1000)
                yield chunk({"role": "assistant", "content": ""})
                for piece in pieces:
                    if delay:
                        await asyncio.sleep(delay)
                    yield chunk({"content": piece})
                yield chunk({}, "stop")
                if (body.get("stream_options") or {}).get("include_usage"):
                    last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                            "model": model, "choices": [], "usage": usage}
                    yield f"data: {json.dumps(last)}\n\n".encode()
                yield b"data: [DONE]\n\n"
                record["stream_ended"] = {"how": "finished", "at": time.time()}
            except (asyncio.CancelledError, GeneratorExit):
                record["stream_ended"] = {"how": "client closed", "at": time.time()}
                raise

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def add_script(request: Request) -> Response:
        script.extend(await request.json())
        return JSONResponse({"queued": len(script)})

    async def get_requests(request: Request) -> Response:
        return JSONResponse(requests)

    async def reset(request: Request) -> Response:
        script.clear()
        requests.clear()
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/_script", add_script, methods=["POST"]),
        Route("/_requests", get_requests, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
    ])
