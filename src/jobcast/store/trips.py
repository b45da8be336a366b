"""Each trip of a job through RQ: into a queue, checked while it waits, taken out again.

A job's first trip is the RQ job with the jobcast id; each later one (a retry, a
start after waiting for a slot, a trip the janitor found dropped) gets an RQ job of
its own, `{id}-{run}` (`rq_job_id`), so a work horse still finishing an earlier
trip can never overwrite the next one. Every trip puts the job in `{p}:queued`
in the same MULTI as RQ's enqueue; its start, park, end or delay takes it out
(the scripts of `lua/`), and the janitor checks what stays there too long
(`check`). RQ's calls get the store's connection, and RQ's enqueue joins
jobcast's own MULTI where the two must happen together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, cast

from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job

from jobcast.states import Stage, Status
from jobcast.store.record import now_ms
from jobcast.store.writer import Store, count_submission

__all__ = [
    "DELIVER", "DELIVERY_DEADLINE_S", "DELIVERY_RETRIES", "RQ_RESULT_TTL_S", "RUN_JOB", "Whereabouts", "check",
    "create", "create_parts", "delete_runs", "enqueue_delivery", "remove", "rq_job_id", "send_again",
]

RUN_JOB = "jobcast.runner.run_job"
"""The function of every job's RQ job. RQ keeps it as this path in each RQ job hash, so it never moves."""
DELIVER = "jobcast.webhooks.deliver"
"""The function of every webhook delivery's RQ job (kept the same way)."""

RQ_RESULT_TTL_S = 1
"""How long RQ keeps a run that returned (its job hash and result stream, about 6 KiB): a second, as the
record holds the outcome. Not 0: RQ deletes such a run at once with three more round trips (and, in a
forked work horse, a second connection), which cost trivial jobs on forking workers about 8 % of their rate."""
DELIVERY_RETRIES = 5
"""How often a webhook delivery that failed is tried again."""
DELIVERY_DEADLINE_S = 20.0
"""Longest a whole delivery may take (a receiver that drips its answer is cut off; `webhooks.deliver`)."""

Whereabouts = Literal["in_rq", "dropped", "gone", "left", "busy"]
"""Where `check` found a job handed to RQ: still in RQ's hands (`in_rq`), held by nothing that will run it
(`dropped`: it was sent again, as a new trip), lost by RQ (`gone`), no longer waiting for RQ (`left`), or
changing meanwhile (`busy`)."""


def rq_job_id(job_id: str, run: int) -> str:
    """The RQ job of a job's `run`-th trip through RQ: the jobcast id itself first, then `{id}-{run}`."""
    return job_id if run == 1 else f"{job_id}-{run}"


def _enqueue(store: Store, pipe: Pipeline, record: Mapping[str, str], run: int) -> None:
    """Queue, in `pipe` (in MULTI), the RQ job of the `run`-th trip of the job `record` is of, and note it."""
    job_id = record["id"]
    rq_id = rq_job_id(job_id, run)
    pipe.hset(store.keys.job(job_id), mapping={"run": run, "rq_id": rq_id})
    pipe.zadd(store.keys.queued, {job_id: now_ms()})
    # (failed runs stay in RQ's failed registry for the job TTL)
    Queue(record["queue"], connection=store.redis).enqueue_call(
        RUN_JOB, args=(job_id, run), job_id=rq_id, timeout=int(record["timeout_s"]), result_ttl=RQ_RESULT_TTL_S,
        failure_ttl=store.settings.job_ttl_s, description=f"{record['type']} {job_id} (run {run})", pipeline=pipe,
    )


def create(store: Store, fields: Mapping[str, str], created_ms: int, ts: str, *, count_in: str | None = None) -> int:
    """Write a new job's record (`fields`) and enqueue its first trip, in one MULTI (counting the submission
    in the rate key `count_in`, if given); returns how many jobs were ahead of it in its RQ queue."""
    with store.redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # RQ's enqueue joins an explicit MULTI; it would start its own otherwise
        store.create(pipe, fields["id"], fields["owner"], created_ms, ts, fields)
        _enqueue(store, pipe, fields, 1)
        if count_in is not None:
            count_submission(pipe, count_in)
        ahead: int = pipe.execute()[0]
    return ahead


def create_parts(store: Store, parent_id: str, attempt: str, parts: Sequence[Mapping[str, str]], created_ms: int,
                 ts: str, also: Callable[[Pipeline], None]) -> Literal["ok", "stopped", "busy"]:
    """Write the records of a batch's parts and enqueue their first trips, and queue `also(pipe)` (the
    parent's move to stage `parts`), in one MULTI, watching the parent's record: `ok`; `stopped`, writing
    nothing, when the parent no longer runs that `attempt` (a stale worker's) or is asked to cancel; `busy`
    when it changed meanwhile (look again)."""
    key = store.keys.job(parent_id)
    with store.redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            status, now, cancel = cast(list[bytes | None], pipe.hmget(key, ["status", "attempt", "cancel"]))
            if status != Status.RUNNING.encode() or now != attempt.encode() or cancel == b"1":
                return "stopped"
            pipe.multi()
            for fields in parts:
                store.create(pipe, fields["id"], fields["owner"], created_ms, ts, fields)
                _enqueue(store, pipe, fields, 1)
            also(pipe)
            pipe.execute()
        except WatchError:
            return "busy"
    return "ok"


def send_again(store: Store, job_id: str) -> tuple[bool, dict[str, str] | None]:
    """Send a queued job whose time has come (`{p}:delayed`) to RQ as its next trip.

    Returns (done, the record if it was sent): not done when the job changed meanwhile (look again next
    round); done and None when there was nothing to send (the job is gone or no longer waiting to be sent,
    or another janitor took it).
    """
    keys, redis = store.keys, store.redis
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.job(job_id))  # type: ignore[no-untyped-call]
            record = store.load(job_id)
            if record is None or not _due_to_run(record):
                pipe.multi()
                pipe.zrem(keys.delayed, job_id)
                pipe.execute()
                return True, None
            if pipe.zscore(keys.delayed, job_id) is None:
                return True, None
            pipe.multi()
            pipe.zrem(keys.delayed, job_id)
            _enqueue(store, pipe, record, int(record.get("run") or 1) + 1)
            pipe.execute()
        except WatchError:
            return False, None
    return True, record


def _due_to_run(record: Mapping[str, str]) -> bool:
    """A job waiting to be sent to RQ: queued for its (next) attempt, or a batch whose join is due."""
    if record["status"] == Status.QUEUED:
        return record.get("stage") in (Stage.RETRY, Stage.QUEUED)
    return record["status"] == Status.RUNNING and record.get("stage") == Stage.JOIN


def check(store: Store, job_id: str) -> tuple[Whereabouts, dict[str, str] | None]:
    """Check that a job handed to RQ is still in RQ's hands; send it again if RQ holds it but nothing will
    run it. Returns where it was found (`Whereabouts`) and its record (None for `left` and `busy`)."""
    keys, redis = store.keys, store.redis
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.job(job_id))  # type: ignore[no-untyped-call]
            record = store.load(job_id)
            if (record is None or not _due_to_run(record) and record["status"] != Status.QUEUED
                    or record.get("stage") == Stage.WAITING or pipe.zscore(keys.delayed, job_id) is not None):
                pipe.multi()
                pipe.zrem(keys.queued, job_id)
                pipe.execute()
                return "left", None
            where = _whereabouts(store, record.get("rq_id") or job_id, record["queue"])
            pipe.multi()
            if where == "in_rq":
                pipe.zadd(keys.queued, {job_id: now_ms()}, xx=True)  # look again in a while
            elif where == "dropped":
                _enqueue(store, pipe, record, int(record.get("run") or 1) + 1)
            else:
                pipe.zrem(keys.queued, job_id)
            pipe.execute()
        except WatchError:
            return "busy", None
    return where, record


def _whereabouts(store: Store, rq_id: str, queue: str) -> Whereabouts:
    """Where RQ has the RQ job `rq_id`: `in_rq` (queued, scheduled, or held by a live worker), `dropped`
    (it has the job, but nothing will run it), or `gone`."""
    redis, keys = store.redis, store.keys
    status, worker_name = cast(list[bytes | None], redis.hmget(keys.rq_job(rq_id), ["status", "worker_name"]))
    if status is None:
        return "gone"
    if status in (b"scheduled", b"deferred"):
        return "in_rq"
    if status == b"queued":
        in_queue = redis.lpos(keys.rq_queue(queue), rq_id) is not None
        return "in_rq" if in_queue else "dropped"
    if status == b"started" and worker_name and store.worker_alive(worker_name.decode()):
        return "in_rq"
    return "dropped"  # dequeued by a worker that died, or ended without starting the job


def remove(store: Store, queue: str, rq_id: str) -> None:
    """Take the RQ job `rq_id` out of RQ's `queue` (a queued job that was canceled)."""
    Queue(queue, connection=store.redis).remove(rq_id)


def delete_runs(store: Store, job_id: str, runs: int) -> None:
    """Delete the RQ jobs of a job's trips 1..`runs` (whichever RQ still keeps)."""
    for run in range(1, runs + 1):
        try:
            Job.fetch(rq_job_id(job_id, run), connection=store.redis).delete()
        except NoSuchJobError:
            pass


def enqueue_delivery(store: Store, job_id: str, attempt: int) -> None:
    """Enqueue the delivery of `job_id`'s webhook for the end of `attempt` (once per end), tried again
    `DELIVERY_RETRIES` times while it fails, `JOBCAST_WEBHOOK_RETRY_BASE_S` x 1, 4, 16, ... apart."""
    base = store.settings.webhook_retry_base_s
    Queue(store.settings.webhook_queue, connection=store.redis).enqueue_call(
        DELIVER, args=(job_id, attempt), timeout=int(DELIVERY_DEADLINE_S * 2),
        retry=Retry(max=DELIVERY_RETRIES, interval=[int(base * 4 ** i) for i in range(DELIVERY_RETRIES)]),
        description=f"webhook of {job_id} (attempt {attempt})", result_ttl=RQ_RESULT_TTL_S,
        failure_ttl=store.settings.job_ttl_s,
    )
