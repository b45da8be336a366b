"""How long the model server asks to wait, from a 429's headers: `Retry-After`, else OpenAI's
`x-ratelimit-reset-*` durations."""

from __future__ import annotations

import httpx
import openai
import pytest

from jobcast.llm.client import _duration, _retry_after


@pytest.mark.parametrize(("text", "seconds"), [("1.5s", 1.5), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3s", 3723.0),
                                               ("", None), ("soon", None), ("5", None), ("3s later", None)])
def test_reset_durations_read_as_openai_writes_them(text: str, seconds: float | None) -> None:
    assert _duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def _429(headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://model/v1/chat/completions")
    return openai.RateLimitError("slow down", response=httpx.Response(429, headers=headers, request=request),
                                 body=None)


def test_retry_after_wins_then_the_longest_reset() -> None:
    assert _retry_after(_429({"Retry-After": "2", "x-ratelimit-reset-tokens": "9s"})) == 2.0
    assert _retry_after(_429({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"})) == 360.0
    assert _retry_after(_429({})) is None
