"""The one RQ entry point that runs every jobcast job.

RQ calls `run_job(job_id)`, which makes an `Attempt`: `start` loads the record and
emits `running`; `perform` validates the payload, calls the registered function
with a `JobContext`, and ends the attempt through `transitions`: `completed` with
the result; for an error or a time-out, a retry while attempts remain or else
`failed`; `canceled` when the code stopped for a cancel, or did not stop within
the grace period after one. Code that splits its job into parts (`ctx.parts`)
gives the worker back without ending the attempt; once the parts have ended, a
trip of the job's own runs the type's join (`batches.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from jobcast import batches
from jobcast.context import JobCanceled, JobContext, JobFailed, PartsStarted
from jobcast.logs import current_job
from jobcast.registry import JobType
from jobcast.states import TERMINAL, Outcome, Stage, Status
from jobcast.store.record import format_progress
from jobcast.transitions import (
    batch_error_code,
    end_job,
    error_json,
    fail_attempt,
    part_failed_message,
    promote,
    start,
    start_join,
)
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
        self.joining = False
        """A batch's join, not the job's function (`_joining`)."""
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
        if record["status"] == Status.RUNNING and record.get("stage") == Stage.JOIN:
            return cls._joining(runtime, record, run)
        res, start_fields = start(store, record, run)
        if res.outcome == Outcome.PARKED:
            log.info("job %s: its owner runs its limit of jobs already; waiting for a slot", job_id)
            return None
        if res.outcome != Outcome.OK:
            log.info("job %s: not started (%s)", job_id, res.outcome)
            return None
        record.update(start_fields, text="", seq=str(res.seq))
        log.info("job %s: %s attempt %s started", job_id, record["type"], record["attempt"])
        return cls(runtime, record, bool(res.cancel))

    @classmethod
    def _joining(cls, runtime: Runtime, record: dict[str, str], run: int) -> Attempt | None:
        """A batch whose parts have all ended, on its join's trip: it joins (None: not this trip's to)."""
        res = start_join(runtime.store, record, run)
        if res.outcome not in (Outcome.OK, Outcome.SAME):
            log.info("job %s: join not started (%s)", record["id"], res.outcome)
            return None
        log.info("job %s: all %s parts ended; joining", record["id"], record.get("parts_total"))
        attempt = cls(runtime, record, bool(res.cancel))
        attempt.joining = True
        return attempt

    def perform(self) -> None:
        """Call the job's function (or a batch's join) and end the attempt by how it went; re-raise what RQ
        should see."""
        record = self.record
        if record.get("part_ids") and not self.joining:
            self._resume()
            return
        try:
            result_json = _result_json(self._join() if self.joining else self._call())
        except PartsStarted:
            log.info("job %s: split into parts; its worker is free", record["id"])
            return
        except JobCanceled:
            self.finish(Status.CANCELED, message="Canceled", error=error_json("canceled", "canceled by request"))
            return
        except JobTimeoutException:
            log.warning("job %s: timed out after %ss", record["id"], record["timeout_s"])
            self.fail("timeout", f"the job ran past its time limit of {record['timeout_s']} s")
            raise
        except JobFailed as exc:
            self.fail(exc.code, exc.message, exc.retryable and not self.joining, exc.details)
            raise
        except Exception as exc:
            log.exception("job %s: %s raised", record["id"], record["type"])
            self.fail("job_error", f"{type(exc).__name__}: {exc}", not self.joining)  # (a join: the parts stay)
            raise
        except BaseException:  # SystemExit, a stray CancelledError: the janitor reports the attempt as lost
            if self.ctx is not None:
                self.ctx.close()
            raise
        self.finish(Status.COMPLETED, progress="100", message="Completed", stage="", result=result_json)

    def _type_and_payload(self, name: str, raw: str) -> tuple[JobType, BaseModel]:
        job_type = self.runtime.registry.get(name)
        if job_type is None:
            raise JobFailed(f"this worker has no job type {name!r}; start workers with the same "
                            "JOBCAST_JOB_MODULES as the API", code="unknown_type")
        try:
            return job_type, job_type.payload_model.model_validate_json(raw)
        except ValidationError as exc:
            raise JobFailed(f"the stored payload no longer fits the schema: {exc}", code="invalid_payload") from None

    def _call(self) -> Any:
        record = self.record
        job_type, payload = self._type_and_payload(record["type"], record["payload"])
        self.ctx = JobContext(self.store, record, on_overdue=self.overdue, canceled=self.canceled_at_start,
                              on_split=self.split)
        self.ctx.check()
        return _call(job_type.func, self.ctx, payload)

    def split(self, type_name: str, payloads: list[Any], weights: Sequence[float] | None, state: Any) -> None:
        """`ctx.parts()`: create the parts (`batches.split`); a JobFailed (not retried) for what cannot be split."""
        record = self.record
        job_type = self.runtime.registry.get(record["type"])
        part_type = self.runtime.registry.get(type_name)
        if job_type is None or job_type.join is None:
            raise JobFailed(f"job type {record['type']!r} splits into parts but registers no join "
                            "(job_type(..., join=...))", code="no_join", retryable=False)
        if part_type is None:
            raise JobFailed(f"no job type {type_name!r} for the parts", code="unknown_type", retryable=False)
        models = []
        for i, payload in enumerate(payloads):
            try:
                models.append(payload if isinstance(payload, part_type.payload_model)
                              else part_type.payload_model.model_validate(payload))
            except ValidationError as exc:
                raise JobFailed(f"part {i}: the payload does not fit job type {type_name!r}: {exc}",
                                code="invalid_parts", retryable=False) from None
        try:
            ctx = self.ctx
            ids = batches.split(self.store, record, part_type, models, weights, job_type.partial, state,
                                ctx.current[0] if ctx else 0.0, ctx.output_items if ctx else [])
        except ValueError as exc:
            raise JobFailed(str(exc), code="invalid_parts", retryable=False) from None
        except RuntimeError as exc:
            raise JobFailed(str(exc), code="split_failed") from None
        log.info("job %s: split into %d parts of %s", record["id"], len(ids), type_name)
        promote(self.store, record["owner"])  # the slot it held is its parts' now

    def _resume(self) -> None:
        """A batch's next attempt (`POST /retry`): its parts that did not complete run again."""
        try:
            batches.resume(self.store, self.record)
        except LookupError as exc:
            self.fail("part_gone", str(exc), retryable=False)
            return
        log.info("job %s: retried as a batch: its parts that did not complete run again", self.record["id"])

    def _join(self) -> Any:
        """A batch's join: the type's join function with its parts' results; `part_failed` when a part did
        not complete and the type takes no partial results."""
        record = self.record
        job_type, payload = self._type_and_payload(record["type"], record["payload"])
        self.ctx = JobContext(self.store, record, on_overdue=self.overdue, canceled=self.canceled_at_start)
        self.ctx.check()
        parts = batches.results(self.store, record)
        if parts.failed and not job_type.partial:
            first = parts.failed[0]
            raise JobFailed(part_failed_message(first, len(parts.results)), code=batch_error_code(first["error"]),
                            details={"part_id": first["id"], "part": first["part"], "error": first["error"]})
        if job_type.join is None:
            raise JobFailed(f"job type {record['type']!r} registers no join for its parts", code="no_join")
        return job_type.join(self.ctx, payload, parts)

    def _output(self) -> tuple[dict[str, str], list[bytes]]:
        """Close the context; the record fields and items this attempt leaves behind."""
        if self.ctx is None:
            return {}, []
        self.ctx.close()
        progress, _, stage = self.ctx.current
        fields = {"progress": format_progress(progress), "stage": stage or "", "text": self.ctx.output_text}
        # (a batch's items are its parts', forwarded to its own list as they came)
        return fields, self.store.output_items(self.record["id"]) if self.joining else self.ctx.output_items

    def finish(self, status: Status, **fields: str) -> None:
        """End the attempt, and the job, `status` (completed or canceled)."""
        base, items = self._output()
        result = end_job(self.store, self.record, status, fields={**base, **fields}, items=items,
                         guard_status=(Status.RUNNING,))
        log.info("job %s: %s after %.3fs (%s)", self.record["id"], status, time.monotonic() - self.t0,
                 result.outcome)

    def fail(self, code: str, message: str, retryable: bool = True, details: Any = None) -> None:
        """End the attempt failed: a retry later while attempts remain (and `retryable`), else the job fails."""
        base, items = self._output()
        fail_attempt(self.store, self.record, code, message, items=items, fields=base, retryable=retryable,
                     details=details)

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
