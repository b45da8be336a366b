"""Job types for the tests, importable by worker processes (`JOBCAST_JOB_MODULES=tests.fixtures`)."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobcast import JobContext, JobFailed, PartResults, job_type


class Personas(BaseModel):
    count: int = Field(ge=1, le=200)


# The README's example, verbatim apart from this comment.
@job_type("make_personas", payload=Personas, max_attempts=1, timeout_s=600,
          description="Generate personas in batches.")
def make_personas(ctx: JobContext, p: Personas) -> dict:
    people = []
    with ctx.stage("generate", 0, 90) as gen:          # this phase is 0-90% of the bar
        for i in range(p.count):
            ctx.check()                                # raises JobCanceled once canceled
            person = {"name": f"Person {i + 1}"}
            people.append(person)
            ctx.item(person)                           # an `output` item, seen live and by late viewers
            gen.progress(100 * (i + 1) / p.count, f"Generated {i + 1}/{p.count} personas")
    ctx.progress(95, "Saving", stage="save")
    if not people:
        raise JobFailed("nothing was generated", code="empty")
    return {"personas": people}


class Chat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    words: list[str]


@job_type("async_chat", payload=Chat, description="Streams words as text deltas from async code.")
async def async_chat(ctx: JobContext, p: Chat) -> dict:
    for w in p.words:
        await asyncio.sleep(0)
        ctx.delta(w)
    return {"text": "".join(p.words)}


class Nothing(BaseModel):
    pass


@job_type("bad_result", payload=Nothing, description="Returns something that is not JSON.")
def bad_result(ctx: JobContext, p: Nothing) -> object:
    return object()


@job_type("stubborn", payload=Nothing, description="Sleeps a minute without ever looking for a cancel.")
def stubborn(ctx: JobContext, p: Nothing) -> dict:
    ctx.progress(10, "Sleeping without checking for a cancel")
    time.sleep(60)
    return {}


@job_type("fails_when_canceled", payload=Nothing, description="Raises an error once it sees a cancel.")
def fails_when_canceled(ctx: JobContext, p: Nothing) -> dict:
    while not ctx.canceled:
        ctx.progress(50, "Working")
        time.sleep(0.01)
    raise RuntimeError("the model request was closed")


class Tone(StrEnum):
    warm = "warm"
    dry = "dry"


class Sampling(BaseModel):
    temperature: float = 0.7


class FormShowcase(BaseModel):
    """Fields of every kind the page's form must handle."""

    model_config = ConfigDict(extra="forbid")
    count: int = Field(3, ge=1, le=10)
    tone: Tone = Tone.warm
    style: Literal["short", "long"] | None = None
    strict: bool
    sampling: Sampling = Sampling()
    tags: list[str] = []


@job_type("form_showcase", payload=FormShowcase, description="Echoes its payload.")
def form_showcase(ctx: JobContext, p: FormShowcase) -> dict:
    return p.model_dump(mode="json")


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)


@job_type("greet", payload=Greeting, max_attempts=1, description="Fails, quoting its payload in the error.")
def greet(ctx: JobContext, p: Greeting) -> dict:
    raise ValueError(f"cannot greet {p.name}")


class Squares(BaseModel):
    model_config = ConfigDict(extra="forbid")
    numbers: list[int] = Field(min_length=1)
    fail: list[int] = []
    """The numbers whose part fails its first `fail_attempts` attempts (of 2)."""
    fail_attempts: int = 2


class Square(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int
    fail_attempts: int = 0


@job_type("square", payload=Square, max_attempts=2, description="A part of `squares`: n², or a failure.")
def square(ctx: JobContext, p: Square) -> int:
    if ctx.attempt <= p.fail_attempts:
        raise JobFailed(f"no square of {p.n} on attempt {ctx.attempt}", code="refused")
    ctx.item({"n": p.n, "square": p.n * p.n})
    return p.n * p.n


def _sum_squares(ctx: JobContext, p: Squares, parts: PartResults) -> dict:
    return {"squares": parts.results, "failed": [f["part"] for f in parts.failed]}


def _squares(ctx: JobContext, p: Squares) -> None:
    ctx.item({"own": "made before the split"})
    ctx.parts("square", [{"n": n, "fail_attempts": p.fail_attempts if n in p.fail else 0} for n in p.numbers])


job_type("squares", payload=Squares, join=_sum_squares, partial=True,
         description="A batch that takes partial results: one `square` part per number.")(_squares)
job_type("squares_all", payload=Squares, join=_sum_squares,
         description="A batch that needs every part: one `square` part per number.")(_squares)
