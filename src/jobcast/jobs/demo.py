"""`demo`: a job that counts through steps, for trying jobcast, for tests and for benchmarks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobcast.batches import MAX_PARTS, PartResults
from jobcast.context import JobContext, JobFailed
from jobcast.registry import job_type

__all__ = ["DemoPayload", "demo"]


class DemoPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int = Field(10, ge=1, le=100_000, description="How many progress steps.")
    interval_ms: int = Field(500, ge=0, le=60_000, description="Sleep between steps.")
    fail_at: int | None = Field(None, ge=1, le=100_000, description="Raise an error at that step (every attempt).")
    fail_attempts: int | None = Field(None, ge=0, le=10, description="Fail at step 1 on the first N attempts only.")
    emit_output: bool = Field(False, description="Also send an output item each step.")
    parts: int | None = Field(None, ge=1, le=MAX_PARTS, description="Run as a batch of this many parts, each a "
                              "demo job of `part_steps` steps (same `interval_ms` and `emit_output`); the result is "
                              "`{\"parts\": [each part's result, in part order]}`.")
    part_steps: int = Field(5, ge=1, le=100_000, description="Steps of each part of a batch (with `parts`).")
    fail_part: int | None = Field(None, ge=0, le=MAX_PARTS, description="With `parts`: the part (0-based) whose "
                                  "first attempt fails at its first step (a retry of the batch then completes).")


def _join(ctx: JobContext, p: DemoPayload, parts: PartResults) -> dict[str, Any]:
    return {"parts": parts.results}


@job_type("demo", payload=DemoPayload, max_attempts=1, timeout_s=3600, join=_join,
          description="Counts through `steps` steps, `interval_ms` apart, reporting each; can be told to fail; "
                      "with `parts`, runs as a batch of demo jobs.")
def demo(ctx: JobContext, p: DemoPayload) -> dict[str, Any]:
    if p.parts is not None:
        ctx.parts("demo", [{"steps": p.part_steps, "interval_ms": p.interval_ms, "emit_output": p.emit_output,
                            "fail_attempts": 1 if i == p.fail_part else None} for i in range(p.parts)])
    for i in range(1, p.steps + 1):
        if i == 1 and p.fail_attempts is not None and ctx.attempt <= p.fail_attempts:
            raise JobFailed(f"failing attempt {ctx.attempt} of the first {p.fail_attempts} on purpose (fail_attempts)")
        if p.fail_at == i:
            raise JobFailed(f"failing at step {i} on purpose (fail_at)")
        ctx.progress(100 * i / p.steps, f"Step {i}/{p.steps}")
        if p.emit_output:
            ctx.item({"step": i, "of": p.steps})
        if i < p.steps and p.interval_ms:
            ctx.sleep(p.interval_ms / 1000)
    return {"steps": p.steps}
