"""The one RQ entry point that runs every jobcast job, and how a job's attempt ends.

RQ calls `run_job(job_id)`. It loads the record, validates the payload, emits
`running`, calls the registered function with a `JobContext`, and emits the
terminal event: `completed` with the result, `failed` with an error code, or
`canceled`. The terminal event carries the whole job object, rendered here
from the record as this attempt leaves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from jobcast.context import JobCanceled, JobContext, JobFailed
from jobcast.record import CANCELED, COMPLETED, FAILED, QUEUED, RUNNING, TERMINAL, format_progress, job_object, now_iso
from jobcast.runtime import Runtime
from jobcast.store import EmitResult, Store

__all__ = ["current_runtime", "end_job", "run_job"]

log = logging.getLogger("jobcast.runner")

_runtime: ContextVar[Runtime | None] = ContextVar("jobcast_runtime", default=None)


def current_runtime() -> Runtime:
    runtime = _runtime.get()
    if runtime is None:
        raise RuntimeError(
            "jobcast jobs must run in a jobcast worker: start one with `jobcast worker` or `python worker.py` "
            "(or `rq worker -w jobcast.worker.Worker`)."
        )
    return runtime


def _error(code: str, message: str) -> str:
    return orjson.dumps({"code": code, "message": message[:2000]}).decode()


def end_job(
    store: Store,
    record: Mapping[str, str],
    status: str,
    *,
    fields: Mapping[str, str],
    items: list[bytes],
    guard_status: tuple[str, ...],
) -> EmitResult:
    """Emit the terminal event: set `fields` on the record and publish the whole job object."""
    final = {**record, **fields, "status": status, "ended_at": now_iso(), "eta_s": ""}
    body = orjson.dumps(job_object(final, items, None, include_last_event_id=False))
    return store.emit(
        record["id"],
        "end",
        event=status,
        data=body[1:],
        fields={k: final[k] for k in ("status", "ended_at", "eta_s", *fields)},
        guard_status=guard_status,
        guard_attempt=int(record["attempt"]),
    )


def _call(func: Any, ctx: JobContext, payload: BaseModel) -> Any:
    result = func(ctx, payload)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return result


def _result_json(result: Any) -> str:
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return orjson.dumps(result).decode()


def run_job(job_id: str) -> None:
    """Run one attempt of the jobcast job `job_id` (RQ's entry point)."""
    runtime = current_runtime()
    store = runtime.store
    record = store.load(job_id)
    if record is None:
        log.warning("job %s: no record (deleted or expired before it ran); skipping", job_id)
        return
    if record["status"] in TERMINAL:
        log.info("job %s: already %s; skipping", job_id, record["status"])
        return

    started = now_iso()
    start_fields = {"status": RUNNING, "progress": "0", "message": "Starting", "stage": "",
                    "queue_position": "", "eta_s": "", "started_at": started, "ended_at": ""}
    res = store.emit(job_id, "start", ts=started, fields=start_fields,
                     guard_status=(QUEUED,), guard_attempt=int(record["attempt"]))
    if res.outcome != "ok":
        log.info("job %s: not started (%s)", job_id, res.outcome)
        return
    record.update(start_fields, text="", seq=str(res.seq))
    log.info("job %s: %s attempt %s started", job_id, record["type"], record["attempt"])
    store.tell_positions(record["queue"])

    ctx: JobContext | None = None

    def finish(status: str, **fields: str) -> None:
        base: dict[str, str] = {}
        items: list[bytes] = []
        if ctx is not None:
            ctx.close()
            progress, _, stage = ctx.current
            base = {"progress": format_progress(progress), "stage": stage or "", "text": ctx.output_text}
            items = ctx.output_items
        result = end_job(store, record, status, fields={**base, **fields}, items=items, guard_status=(RUNNING,))
        log.info("job %s: %s after %.3fs (%s)", job_id, status, time.monotonic() - t0, result.outcome)

    t0 = time.monotonic()
    try:
        job_type = runtime.registry.get(record["type"])
        if job_type is None:
            raise JobFailed(f"this worker has no job type {record['type']!r}; start workers with the same "
                            "JOBCAST_JOB_MODULES as the API", code="unknown_type")
        try:
            payload = job_type.payload_model.model_validate_json(record["payload"])
        except ValidationError as exc:
            raise JobFailed(f"the stored payload no longer fits the schema: {exc}", code="invalid_payload") from None
        ctx = JobContext(store, record)
        result_json = _result_json(_call(job_type.func, ctx, payload))
    except JobCanceled:
        finish(CANCELED, message="Canceled", error=_error("canceled", "canceled by request"))
        return
    except JobTimeoutException:
        log.warning("job %s: timed out after %ss", job_id, record["timeout_s"])
        finish(FAILED, message="Failed: timed out",
               error=_error("timeout", f"the job ran past its time limit of {record['timeout_s']} s"))
        raise
    except JobFailed as exc:
        finish(FAILED, message=f"Failed: {exc.message}"[:200], error=_error(exc.code, exc.message))
        raise
    except Exception as exc:
        log.exception("job %s: %s raised", job_id, record["type"])
        text = f"{type(exc).__name__}: {exc}"
        finish(FAILED, message=f"Failed: {text}"[:200], error=_error("job_error", text))
        raise
    finish(COMPLETED, progress="100", message="Completed", stage="", result=result_json)
