"""The one RQ entry point that runs every jobcast job.

RQ calls `run_job(job_id)`, which makes an `Attempt`: `start` loads the record and
emits `running`; `perform` validates the payload, calls the registered function
with a `JobContext`, and ends the attempt through `transitions`: `completed` with
the result; for an error or a time-out, a retry while attempts remain or else
`failed`; `canceled` when the code stopped for a cancel, or did not stop within
the grace period after one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from jobcast.context import JobCanceled, JobContext, JobFailed
from jobcast.logs import current_job
from jobcast.states import TERMINAL, Outcome, Status
from jobcast.store.record import format_progress
from jobcast.transitions import end_job, error_json, fail_attempt, start
from jobcast.worker.runtime import Runtime, current_runtime, hard_stop

__all__ = ["Attempt", "run_job"]

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
        attempt = Attempt.start(current_runtime(), job_id, run)
        if attempt is not None:
            attempt.perform()
    finally:
        current_job.reset(token)


class Attempt:
    """One started attempt of a job: `start` (or not), `perform` the job's function, and end it one way:
    `finish` (completed, canceled) or `fail` (a retry while attempts remain, else failed)."""

    def __init__(self, runtime: Runtime, record: dict[str, str], canceled: bool) -> None:
        self.runtime, self.store, self.record = runtime, runtime.store, record
        self.canceled_at_start = canceled
        self.ctx: JobContext | None = None
        self.t0 = time.monotonic()
        self.kill = hard_stop()  # read here: `overdue` runs on the context's own thread

    @classmethod
    def start(cls, runtime: Runtime, job_id: str, run: int) -> Attempt | None:
        """Move the job to `running` for this trip; None when it is not this trip's to run (gone, stale,
        ended, or parked until its owner has a free slot)."""
        store = runtime.store
        record = store.load(job_id)
        if record is None:
            log.warning("job %s: no record (deleted or expired before it ran); skipping", job_id)
            return None
        if int(record.get("run") or 1) != run:
            log.info("job %s: RQ job of run %d is stale (the job is on run %s); skipping", job_id, run,
                     record.get("run"))
            return None
        if record["status"] in TERMINAL:
            log.info("job %s: already %s; skipping", job_id, record["status"])
            return None
        res, start_fields = start(store, record, run)
        if res.outcome == Outcome.PARKED:
            log.info("job %s: its owner runs its limit of jobs already; waiting for a slot", job_id)
            return None
        if res.outcome != Outcome.OK:
            log.info("job %s: not started (%s)", job_id, res.outcome)
            return None
        record.update(start_fields, text="", seq=str(res.seq))
        log.info("job %s: %s attempt %s started", job_id, record["type"], record["attempt"])
        store.tell_positions(record["queue"], at_most_every_ms=TELL_POSITIONS_EVERY_MS)
        return cls(runtime, record, bool(res.cancel))

    def perform(self) -> None:
        """Call the job's function and end the attempt by how it went; re-raise what RQ should see."""
        record = self.record
        try:
            result_json = _result_json(self._call())
        except JobCanceled:
            self.finish(Status.CANCELED, message="Canceled", error=error_json("canceled", "canceled by request"))
            return
        except JobTimeoutException:
            log.warning("job %s: timed out after %ss", record["id"], record["timeout_s"])
            self.fail("timeout", f"the job ran past its time limit of {record['timeout_s']} s")
            raise
        except JobFailed as exc:
            self.fail(exc.code, exc.message, exc.retryable)
            raise
        except Exception as exc:
            log.exception("job %s: %s raised", record["id"], record["type"])
            self.fail("job_error", f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:  # SystemExit, a stray CancelledError: the janitor reports the attempt as lost
            if self.ctx is not None:
                self.ctx.close()
            raise
        self.finish(Status.COMPLETED, progress="100", message="Completed", stage="", result=result_json)

    def _call(self) -> Any:
        record = self.record
        job_type = self.runtime.registry.get(record["type"])
        if job_type is None:
            raise JobFailed(f"this worker has no job type {record['type']!r}; start workers with the same "
                            "JOBCAST_JOB_MODULES as the API", code="unknown_type")
        try:
            payload = job_type.payload_model.model_validate_json(record["payload"])
        except ValidationError as exc:
            raise JobFailed(f"the stored payload no longer fits the schema: {exc}", code="invalid_payload") from None
        self.ctx = JobContext(self.store, record, on_overdue=self.overdue, canceled=self.canceled_at_start)
        self.ctx.check()
        return _call(job_type.func, self.ctx, payload)

    def _output(self) -> tuple[dict[str, str], list[bytes]]:
        """Close the context; the record fields and items this attempt leaves behind."""
        if self.ctx is None:
            return {}, []
        self.ctx.close()
        progress, _, stage = self.ctx.current
        fields = {"progress": format_progress(progress), "stage": stage or "", "text": self.ctx.output_text}
        return fields, self.ctx.output_items

    def finish(self, status: Status, **fields: str) -> None:
        """End the attempt, and the job, `status` (completed or canceled)."""
        base, items = self._output()
        result = end_job(self.store, self.record, status, fields={**base, **fields}, items=items,
                         guard_status=(Status.RUNNING,))
        log.info("job %s: %s after %.3fs (%s)", self.record["id"], status, time.monotonic() - self.t0,
                 result.outcome)

    def fail(self, code: str, message: str, retryable: bool = True) -> None:
        """End the attempt failed: a retry later while attempts remain (and `retryable`), else the job fails."""
        base, items = self._output()
        fail_attempt(self.store, self.record, code, message, items=items, fields=base, retryable=retryable)

    def overdue(self) -> None:
        """The job's code did not stop within the cancel grace period: end it canceled, and stop the code
        where it can be stopped (a forked work horse)."""
        try:
            self.finish(Status.CANCELED, message="Canceled", error=error_json(
                "canceled", f"canceled by request; the job did not stop by itself within "
                            f"{self.store.settings.cancel_grace_s:g} s, so it was stopped"))
        finally:  # even if Redis failed us just now: a lost worker is reported as canceled (see fail_attempt)
            if self.kill is not None:
                self.kill()
