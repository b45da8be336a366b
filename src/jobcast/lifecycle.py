"""How an attempt ends, and how a job gets (back) into an RQ queue.

Every path that ends an attempt comes through here: the runner (the function
returned, raised, timed out or was canceled), the janitor (a worker was lost),
the API (cancel of a queued job). Each is one guarded emit, so whichever path
comes first wins and the others are refused: every loss is reported once.

A failed attempt is retried while `attempt < max_attempts`: the job goes back
to `queued` with the next attempt number and a due time in the delayed set,
and the janitor enqueues it once that time has come and RQ has finished with
the previous attempt (the RQ job id is the jobcast id, so the old RQ job must
be done before the new one is written).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from jobcast.record import CANCELED, FAILED, QUEUED, QUEUED_STAGE, RUNNING, job_object, now_iso
from jobcast.store import EmitResult, Store

__all__ = [
    "RETRY_STAGE", "cancel", "delete", "end_job", "enqueue", "error_json", "fail_attempt", "forget_rq_job", "lose",
    "promote", "requeue", "retry", "retry_delay",
]

log = logging.getLogger("jobcast.lifecycle")

RUN_JOB = "jobcast.runner.run_job"
RETRY_STAGE = "retry"
MAX_RETRY_DELAY_S = 300.0


def error_json(code: str, message: str) -> str:
    return orjson.dumps({"code": code, "message": message[:2000]}).decode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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
    final = {**record, **fields, "status": status, "ended_at": now_iso(), "eta_s": "", "queue_position": ""}
    body = orjson.dumps(job_object(final, items, None, include_last_event_id=False))
    res = store.emit(
        record["id"],
        "end",
        event=status,
        data=body[1:],
        fields={k: final[k] for k in ("status", "ended_at", "eta_s", "queue_position", *fields)},
        guard_status=guard_status,
        guard_attempt=int(record["attempt"]),
    )
    if res.outcome == "ok":
        promote(store, record["owner"])  # the end freed one of the owner's slots (or a place in its line)
    return res


def promote(store: Store, owner: str) -> None:
    """Start the owner's waiting jobs that now have a slot, and tell the rest their new place."""
    queues = set()
    for job_id in store.promote(owner):
        record = store.load(job_id)
        if record is None:
            continue
        with store.redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            forget_rq_job(store, job_id, pipe)  # the RQ job that found no slot, long done
            enqueue(store, pipe, job_id, record["type"], record["queue"], int(record["timeout_s"]))
            pipe.execute()
        queues.add(record["queue"])
        log.info("job %s: got a slot of %s's; queued", job_id, owner)
    for queue in queues:
        store.tell_positions(queue)
    store.tell_waiting(owner)


def retry_delay(base_s: float, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: exponential from `base_s`, with ±20% jitter, at most 5 minutes."""
    return float(min(MAX_RETRY_DELAY_S, base_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))


def fail_attempt(
    store: Store,
    record: Mapping[str, str],
    code: str,
    message: str,
    *,
    items: list[bytes],
    fields: Mapping[str, str] | None = None,
) -> EmitResult:
    """The running attempt failed: schedule the next one while attempts remain, else end the job `failed`."""
    attempt, max_attempts = int(record["attempt"]), int(record["max_attempts"])
    if attempt < max_attempts:
        delay = retry_delay(store.settings.retry_base_s, attempt)
        next_fields = {
            "status": QUEUED, "attempt": str(attempt + 1), "progress": "0", "stage": RETRY_STAGE,
            "message": f"Retrying in {delay:.0f} s (attempt {attempt + 1} of {max_attempts}) after: {message}"[:200],
            "queue_position": "", "eta_s": "", "started_at": "",
        }
        res = store.emit(record["id"], "state", ts=now_iso(), fields=next_fields, guard_status=(RUNNING,),
                         guard_attempt=attempt, retry_at_ms=now_ms() + int(delay * 1000))
        log.info("job %s: attempt %d failed (%s); retry in %.1fs (%s)", record["id"], attempt, code, delay, res.outcome)
        return res
    res = end_job(store, record, FAILED, items=items, guard_status=(RUNNING,),
                  fields={**(fields or {}), "message": f"Failed: {message}"[:200], "error": error_json(code, message)})
    log.info("job %s: failed (%s) after attempt %d of %d (%s)", record["id"], code, attempt, max_attempts, res.outcome)
    return res


def cancel_queued(store: Store, record: Mapping[str, str], items: list[bytes], reason: str) -> EmitResult:
    return end_job(store, record, CANCELED, items=items, guard_status=(QUEUED,),
                   fields={"message": "Canceled", "error": error_json("canceled", reason)})


def forget_rq_job(store: Store, job_id: str, pipe: Pipeline | Any = None) -> None:
    """Remove RQ's job of that id from its queue, registries and keys, if there is one."""
    try:
        Job.fetch(job_id, connection=store.redis).delete(pipeline=pipe, remove_from_queue=True)
    except NoSuchJobError:
        pass


def enqueue(store: Store, pipe: Pipeline, job_id: str, type_name: str, queue: str, timeout_s: int) -> None:
    """Queue RQ's job for `job_id` in `pipe` (which must be in MULTI)."""
    Queue(queue, connection=store.redis).enqueue_call(
        RUN_JOB, args=(job_id,), job_id=job_id, timeout=timeout_s, failure_ttl=store.settings.job_ttl_s,
        description=f"{type_name} {job_id}", pipeline=pipe,
    )


def requeue(store: Store, job_id: str) -> bool:
    """Put a job whose retry is due back into its RQ queue; False to try again later."""
    keys, redis = store.keys, store.redis
    record = store.load(job_id)
    if record is None or record["status"] != QUEUED or record.get("stage") != RETRY_STAGE:
        redis.zrem(keys.delayed, job_id)
        return True
    if redis.hget(f"{Job.redis_job_namespace_prefix}{job_id}", "status") == b"started":
        return False  # RQ is still finishing the previous attempt
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        pipe.zrem(keys.delayed, job_id)
        forget_rq_job(store, job_id, pipe)
        enqueue(store, pipe, job_id, record["type"], record["queue"], int(record["timeout_s"]))
        pipe.execute()
    store.emit(job_id, "state", ts=now_iso(), fields={"stage": QUEUED_STAGE, "message": "Queued"},
               guard_status=(QUEUED,), guard_attempt=int(record["attempt"]))
    store.tell_positions(record["queue"])
    return True


def lose(store: Store, job_id: str) -> None:
    """The worker running `job_id` stopped sending heartbeats: the attempt failed with `worker_lost`."""
    record = store.load(job_id)
    score = store.redis.zscore(store.keys.running, job_id)
    if record is None or record["status"] != RUNNING:
        store.redis.zrem(store.keys.running, job_id)
        return
    if score is not None and score > now_ms():
        return  # a heartbeat came in just now
    items = store.output_items(job_id)
    log.warning("job %s: worker lost (no heartbeat for %ss)", job_id, store.settings.heartbeat_deadline_s)
    res = fail_attempt(store, record, "worker_lost",
                       "the worker running this job stopped responding (its process died or was killed)",
                       items=items)
    if res.outcome == "ok":
        forget_rq_job(store, job_id)


def cancel(store: Store, job_id: str) -> str:
    """Cancel a job: a queued one ends `canceled` at once, a running one is asked to stop.

    Returns `canceled`, `stopping` (the worker ends it within the cancel grace
    period), the terminal status it already had, or `missing`.
    """
    for _ in range(5):  # the job may move from queued to running under us: look again
        record = store.load(job_id)
        if record is None:
            return "missing"
        status = record["status"]
        if status == QUEUED:
            res = cancel_queued(store, record, store.output_items(job_id), "canceled by request")
            if res.outcome == "ok":
                forget_rq_job(store, job_id)
                store.tell_positions(record["queue"])
                return "canceled"
        elif status == RUNNING:
            res = store.emit(job_id, "state", ts=now_iso(), fields={"cancel": "1", "message": "Canceling"},
                             guard_status=(RUNNING,), guard_attempt=int(record["attempt"]))
            if res.outcome in ("ok", "same"):
                return "stopping"
        else:
            return status
    return "missing"


def retry(store: Store, job_id: str) -> str:
    """Run a failed or canceled job again as its next attempt; returns `ok`, `missing`, or the blocking status."""
    record = store.load(job_id)
    if record is None:
        return "missing"
    if record["status"] not in (FAILED, CANCELED):
        return record["status"]
    attempt = int(record["attempt"]) + 1
    fields = {"status": QUEUED, "attempt": str(attempt), "progress": "0", "message": "Queued", "stage": QUEUED_STAGE,
              "queue_position": "", "eta_s": "", "started_at": "", "ended_at": "", "result": "", "error": "",
              "cancel": ""}
    res = store.emit(job_id, "state", ts=now_iso(), fields=fields, guard_status=(FAILED, CANCELED),
                     guard_attempt=attempt - 1)
    if res.outcome != "ok":
        return retry(store, job_id) if res.outcome == "refused" else "missing"
    with store.redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        forget_rq_job(store, job_id, pipe)
        enqueue(store, pipe, job_id, record["type"], record["queue"], int(record["timeout_s"]))
        pipe.execute()
    store.tell_positions(record["queue"])
    log.info("job %s: retried by request as attempt %d", job_id, attempt)
    return "ok"


def delete(store: Store, job_id: str, owner: str) -> str:
    """Forget a finished job and its RQ job; returns `ok`, `missing`, or the status that keeps it."""
    outcome = store.delete(job_id, owner)
    if outcome == "ok":
        forget_rq_job(store, job_id)
    return outcome
