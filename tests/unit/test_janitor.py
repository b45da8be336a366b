"""The janitor: lost workers, due retries, and no false alarms after an outage."""

from __future__ import annotations

import time

from jobcast.store import Store
from jobcast.transitions import now_ms
from jobcast.worker.janitor import Janitor
from tests.unit.conftest import events


def _expire_heartbeat(store: Store, job_id: str) -> None:
    store.redis.zadd(store.keys.running, {job_id: now_ms() - 1})


def test_a_job_whose_heartbeat_stopped_is_lost_once(store: Store, new_job) -> None:
    job = new_job(max_attempts="1")
    _expire_heartbeat(store, job["id"])
    janitors = [Janitor(store), Janitor(store)]
    assert janitors[0].sweep() and janitors[1].sweep()
    ends = [e for e in events(store, job["id"]) if e[1] == "failed"]
    assert len(ends) == 1 and ends[0][2]["error"]["code"] == "worker_lost"
    assert store.redis.zscore(store.keys.running, job["id"]) is None


def test_a_lost_job_with_attempts_left_is_retried_through_the_delayed_set(store: Store, new_job) -> None:
    job = new_job(max_attempts="2")
    _expire_heartbeat(store, job["id"])
    Janitor(store).sweep()
    record = store.load(job["id"])
    assert (record["status"], record["attempt"], record["stage"]) == ("queued", "2", "retry")
    store.redis.zadd(store.keys.delayed, {job["id"]: now_ms() - 1})  # make it due now
    Janitor(store).sweep()
    record = store.load(job["id"])
    assert (record["stage"], record["run"], record["rq_id"]) == ("queued", "2", f"{job['id']}-2")
    assert store.redis.lrange("rq:queue:default", 0, -1) == [f"{job['id']}-2".encode()]
    assert store.redis.zscore(store.keys.delayed, job["id"]) is None


def test_after_a_gap_in_sweeps_running_jobs_get_a_full_period_first(store: Store, new_job) -> None:
    job = new_job()
    _expire_heartbeat(store, job["id"])
    janitor = Janitor(store)
    janitor._last_ok = time.monotonic() - 60  # as if Redis had been away for a minute
    janitor.sweep()
    assert store.load(job["id"])["status"] == "running"
    assert store.redis.zscore(store.keys.running, job["id"]) > now_ms()


def test_a_heartbeat_from_an_attempt_that_is_over_changes_nothing(store: Store, new_job) -> None:
    job = new_job()
    assert store.heartbeat(job["id"], 1)
    assert not store.heartbeat(job["id"], 2)
