"""The RQ entry point: one attempt from `queued` to its terminal event."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import tests.fixtures  # noqa: F401  (registers the test job types)
from jobcast import runner
from jobcast.context import JobFailed
from jobcast.registry import load_job_types
from jobcast.runner import run_job
from jobcast.store import Store
from jobcast.worker.runtime import Runtime, running
from tests.unit.conftest import events


@pytest.fixture
def runtime(store: Store) -> Iterator[Runtime]:
    rt = Runtime(store.settings, store, load_job_types())
    with running(rt):
        yield rt


def _run(store: Store, new_job, type_: str, payload: str, fails: bool = False) -> tuple[list, dict]:
    job = new_job(running=False, type=type_, payload=payload)
    if fails:  # the error is re-raised for RQ after the terminal event
        with pytest.raises((JobFailed, TypeError)):
            run_job(job["id"])
    else:
        run_job(job["id"])
    log = events(store, job["id"])
    return log, log[-1][2]


def test_the_readme_example_runs_to_completion(store: Store, new_job, runtime: Runtime) -> None:
    log, end = _run(store, new_job, "make_personas", '{"count": 3}')
    names = [name for _, name, _ in log]
    assert names[0] == "state" and names[-1] == "completed"
    assert end["result"] == {"personas": [{"name": f"Person {i}"} for i in (1, 2, 3)]}
    assert [i["name"] for i in end["output"]["items"]] == ["Person 1", "Person 2", "Person 3"]
    states = [d for _, n, d in log if n == "state"]
    assert [s["stage"] for s in states if s["stage"]][-1] == "save"
    assert max(s["progress"] for s in states) == 95
    assert end["progress"] == 100 and end["message"] == "Completed" and end["stage"] is None


def test_an_async_job_streams_its_text(store: Store, new_job, runtime: Runtime) -> None:
    _, end = _run(store, new_job, "async_chat", '{"words": ["Hel", "lo", "!"]}')
    assert end["status"] == "completed" and end["output"]["text"] == "Hello!" and end["result"] == {"text": "Hello!"}


def test_job_failed_ends_with_its_code(store: Store, new_job, runtime: Runtime) -> None:
    _, end = _run(store, new_job, "demo", '{"steps": 3, "interval_ms": 0, "fail_attempts": 1}', fails=True)
    assert end["status"] == "failed" and end["error"]["code"] == "job_error"
    assert "fail_attempts" in end["error"]["message"]


def test_a_result_that_is_not_json_fails_clearly(store: Store, new_job, runtime: Runtime) -> None:
    _, end = _run(store, new_job, "bad_result", "{}", fails=True)
    assert end["status"] == "failed" and end["error"]["code"] == "job_error"
    assert "not JSON serializable" in end["error"]["message"]


def test_an_unknown_type_and_a_stale_payload_fail_with_their_codes(store: Store, new_job, runtime: Runtime) -> None:
    _, end = _run(store, new_job, "gone", "{}", fails=True)
    assert end["error"]["code"] == "unknown_type" and "JOBCAST_JOB_MODULES" in end["error"]["message"]
    _, end = _run(store, new_job, "demo", '{"steps": "ten"}', fails=True)
    assert end["error"]["code"] == "invalid_payload"


def test_a_job_that_is_not_queued_is_left_alone(store: Store, new_job, runtime: Runtime) -> None:
    job = new_job()  # already running (another worker has it)
    run_job(job["id"])
    assert store.load(job["id"])["seq"] == job["seq"]
    run_job("f" * 32)  # no record at all: nothing to do


def test_outside_a_jobcast_worker_the_error_says_how_to_start_one() -> None:
    with pytest.raises(RuntimeError, match="jobcast worker"):
        run_job("x")


def test_a_canceled_job_whose_code_then_fails_ends_canceled_not_retried(store: Store, new_job,
                                                                        runtime: Runtime) -> None:
    job = new_job(running=False, type="fails_when_canceled", payload="{}", max_attempts="3")
    threading.Timer(0.2, lambda: store.redis.hset(store.keys.job(job["id"]), "cancel", "1")).start()
    with pytest.raises(RuntimeError):
        run_job(job["id"])
    end = events(store, job["id"])[-1]
    assert end[1] == "canceled" and end[2]["attempt"] == 1
    assert "the model request was closed" in end[2]["error"]["message"]
    assert store.redis.zscore(store.keys.delayed, job["id"]) is None


def test_a_stale_rq_job_of_an_earlier_run_is_skipped(store: Store, new_job, runtime: Runtime) -> None:
    job = new_job(running=False, run="2")
    run_job(job["id"], 1)
    assert store.load(job["id"])["status"] == "queued"


def test_redis_gone_for_a_moment_right_after_the_start_does_not_strand_the_job(
        server, redis, settings, new_job, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a worker's store does: ride out Redis trouble (for JOBCAST_HEARTBEAT_S).
    store = Store(redis, settings, ride_out_s=5)
    job = new_job(running=False, payload='{"steps": 2, "interval_ms": 0}')
    started = runner.start

    def start_then_lose_redis(*args, **kwargs):  # Redis restarts the moment the job has started
        res = started(*args, **kwargs)
        server.connected = False
        threading.Timer(0.3, lambda: setattr(server, "connected", True)).start()
        return res

    monkeypatch.setattr(runner, "start", start_then_lose_redis)
    with running(Runtime(settings, store, load_job_types())):
        run_job(job["id"])
    assert [name for _, name, _ in events(store, job["id"])][-1] == "completed"
