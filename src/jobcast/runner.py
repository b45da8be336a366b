"""The one RQ entry point that runs every jobcast job.

RQ calls `run_job(job_id)`. It loads the record, validates the payload, emits
`running`, calls the registered function with a `JobContext`, and ends the
attempt through `lifecycle`: `completed` with the result; for an error or a
time-out, a retry while attempts remain or else `failed`; `canceled` when the
code stopped for a cancel, or did not stop within the grace period after one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from jobcast.context import JobCanceled, JobContext, JobFailed
from jobcast.lifecycle import end_job, error_json, fail_attempt
from jobcast.logs import current_job
from jobcast.record import format_progress, now_iso, now_ms
from jobcast.runtime import current_runtime, hard_stop
from jobcast.states import TERMINAL, Outcome, Status

__all__ = ["run_job"]

log = logging.getLogger("jobcast.runner")

def _call(func: Any, ctx: JobContext, payload: BaseModel) -> Any:
    result = func(ctx, payload)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return result


def _result_json(result: Any) -> str:
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return orjson.dumps(result).decode()


TELL_POSITIONS_EVERY_MS = 200
"""How often starts tell the queue's front jobs their places at most (the janitor catches up the rest)."""


def run_job(job_id: str, run: int = 1) -> None:
    """Run one attempt of the jobcast job `job_id`, on its `run`-th trip through RQ (RQ's entry point)."""
    token = current_job.set(job_id)  # every log line of the attempt carries the job id (logs.py)
    try:
        _run_job(job_id, run)
    finally:
        current_job.reset(token)


def _run_job(job_id: str, run: int) -> None:
    runtime = current_runtime()
    store = runtime.store
    record = store.load(job_id)
    if record is None:
        log.warning("job %s: no record (deleted or expired before it ran); skipping", job_id)
        return
    if int(record.get("run") or 1) != run:
        log.info("job %s: RQ job of run %d is stale (the job is on run %s); skipping", job_id, run, record.get("run"))
        return
    if record["status"] in TERMINAL:
        log.info("job %s: already %s; skipping", job_id, record["status"])
        return

    started = now_iso()
    start_fields = {"status": Status.RUNNING, "progress": "0", "message": "Starting", "stage": "",
                    "queue_position": "", "eta_s": "", "started_at": started, "ended_at": "", "error": "",
                    "worker": f"{socket.gethostname()}:{os.getpid()}"}
    res = store.emit(job_id, "start", ts=started, fields=start_fields, guard_status=(Status.QUEUED,),
                     guard_attempt=int(record["attempt"]), guard_run=run,
                     heartbeat_ms=now_ms() + int(store.settings.heartbeat_deadline_s * 1000))
    if res.outcome == Outcome.PARKED:
        log.info("job %s: its owner runs its limit of jobs already; waiting for a slot", job_id)
        return
    if res.outcome != Outcome.OK:
        log.info("job %s: not started (%s)", job_id, res.outcome)
        return
    record.update(start_fields, text="", seq=str(res.seq))
    log.info("job %s: %s attempt %s started", job_id, record["type"], record["attempt"])
    store.tell_positions(record["queue"], at_most_every_ms=TELL_POSITIONS_EVERY_MS)

    ctx: JobContext | None = None
    t0 = time.monotonic()

    def output() -> tuple[dict[str, str], list[bytes]]:
        """Close the context; the record fields and items this attempt leaves behind."""
        if ctx is None:
            return {}, []
        ctx.close()
        progress, _, stage = ctx.current
        return {"progress": format_progress(progress), "stage": stage or "", "text": ctx.output_text}, ctx.output_items

    def finish(status: str, **fields: str) -> None:
        base, items = output()
        result = end_job(store, record, status, fields={**base, **fields}, items=items, guard_status=(Status.RUNNING,))
        log.info("job %s: %s after %.3fs (%s)", job_id, status, time.monotonic() - t0, result.outcome)

    def fail(code: str, message: str, retryable: bool = True) -> None:
        base, items = output()
        fail_attempt(store, record, code, message, items=items, fields=base, retryable=retryable)

    kill = hard_stop()  # read here: overdue() runs on the context's own thread

    def overdue() -> None:
        try:
            finish(Status.CANCELED, message="Canceled", error=error_json(
                "canceled", f"canceled by request; the job did not stop by itself within "
                            f"{store.settings.cancel_grace_s:g} s, so it was stopped"))
        finally:  # even if Redis failed us just now: a lost worker is reported as canceled (see fail_attempt)
            if kill is not None:
                kill()

    try:
        job_type = runtime.registry.get(record["type"])
        if job_type is None:
            raise JobFailed(f"this worker has no job type {record['type']!r}; start workers with the same "
                            "JOBCAST_JOB_MODULES as the API", code="unknown_type")
        try:
            payload = job_type.payload_model.model_validate_json(record["payload"])
        except ValidationError as exc:
            raise JobFailed(f"the stored payload no longer fits the schema: {exc}", code="invalid_payload") from None
        ctx = JobContext(store, record, on_overdue=overdue, canceled=bool(res.cancel))
        ctx.check()
        result_json = _result_json(_call(job_type.func, ctx, payload))
    except JobCanceled:
        finish(Status.CANCELED, message="Canceled", error=error_json("canceled", "canceled by request"))
        return
    except JobTimeoutException:
        log.warning("job %s: timed out after %ss", job_id, record["timeout_s"])
        fail("timeout", f"the job ran past its time limit of {record['timeout_s']} s")
        raise
    except JobFailed as exc:
        fail(exc.code, exc.message, exc.retryable)
        raise
    except Exception as exc:
        log.exception("job %s: %s raised", job_id, record["type"])
        fail("job_error", f"{type(exc).__name__}: {exc}")
        raise
    except BaseException:  # SystemExit, a stray CancelledError: the janitor reports the attempt as lost
        if ctx is not None:
            ctx.close()
        raise
    finish(Status.COMPLETED, progress="100", message="Completed", stage="", result=result_json)
