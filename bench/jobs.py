"""The job types the benchmarks run (`JOBCAST_JOB_MODULES=bench.jobs`)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobcast import JobContext, job_type


class Ticks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticks: int = Field(100, ge=1)
    interval_ms: int = Field(100, ge=0)
    wait_s: float = Field(0, ge=0)


@job_type("bench_ticks", payload=Ticks, max_attempts=1, timeout_s=3600,
          description="After wait_s, one progress report a tick whose message is the send time in ns.")
def bench_ticks(ctx: JobContext, p: Ticks) -> None:
    ctx.sleep(p.wait_s)
    for i in range(1, p.ticks + 1):
        ctx.progress(100 * i / (p.ticks + 1), str(time.time_ns()))
        ctx.sleep(p.interval_ms / 1000)


class Burst(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int = Field(1000, ge=1)
    per_s: int = Field(100, ge=1)
    wait_s: float = Field(0, ge=0)
    pad: int = Field(0, ge=0, le=65536)
    stamp: bool = False
    start_at: float = Field(0, ge=0, description="Unix time to start at (after wait_s), so that jobs start together.")


@job_type("bench_burst", payload=Burst, max_attempts=1, timeout_s=3600,
          description="After wait_s, `items` output items (with `pad` bytes of padding; with `stamp`, the time "
                      "they were sent, ns, as `t`), `per_s` a second (in bursts of 10).")
def bench_burst(ctx: JobContext, p: Burst) -> None:
    ctx.sleep(p.wait_s)
    ctx.sleep(max(0.0, p.start_at - time.time()))
    t0 = time.monotonic()
    padding = "x" * p.pad
    for i in range(p.items):
        item: dict[str, Any] = {"i": i, "pad": padding} if p.pad else {"i": i}
        if p.stamp:
            item["t"] = time.time_ns()
        ctx.item(item)
        if i % 10 == 9:
            ahead = t0 + (i + 1) / p.per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


class Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type("bench_noop", payload=Nothing, max_attempts=1, timeout_s=60, description="Does nothing.")
def bench_noop(ctx: JobContext, p: Nothing) -> None:
    return None


class Loop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calls: int = Field(100_000, ge=1)


@job_type("bench_tight_loop", payload=Loop, max_attempts=1, timeout_s=600,
          description="progress() in a tight loop; returns how long the loop took.")
def bench_tight_loop(ctx: JobContext, p: Loop) -> dict[str, Any]:
    t0 = time.perf_counter()
    for i in range(p.calls):
        ctx.progress(100 * i / p.calls)
    return {"wall_s": time.perf_counter() - t0}


class OneJobPersonas(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(200, ge=1, le=1000)


class _Answer(BaseModel):
    personas: list[dict[str, Any]]


@job_type("bench_personas_one_job", payload=OneJobPersonas, max_attempts=1, timeout_s=3600,
          description="`count` personas as one job did before batches: calls of 10, 3 at a time in one process.")
def bench_personas_one_job(ctx: JobContext, p: OneJobPersonas) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from jobcast.llm import LLM, prompts

    llm = LLM(ctx)
    starts = range(1, p.count + 1, 10)

    def call(start: int) -> int:
        answer = llm.json(prompts.personas(start, min(10, p.count - start + 1), None, None, []), _Answer)
        return len(answer.personas)

    with ThreadPoolExecutor(3) as pool:
        made = sum(pool.map(call, starts))
    return {"personas": made}
