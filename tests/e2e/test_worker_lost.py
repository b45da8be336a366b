"""A worker killed mid-job (SIGKILL of the worker and its work horse) is noticed, and every watcher is told."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.harness import Stack, read_stream


def _kill_worker_running(st: Stack, job_id: str) -> None:
    """SIGKILL the process running the job and its whole group: the work horse and its worker."""
    worker = st.redis.r.hget(f"{st.prefix}:job:{{{job_id}}}", "worker").decode()
    os.killpg(os.getpgid(int(worker.rsplit(":", 1)[1])), signal.SIGKILL)


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_a_killed_worker_is_noticed_and_its_job_fails_or_is_retried(make_stack, max_attempts: int) -> None:
    st: Stack = make_stack(workers=2)  # JOBCAST_HEARTBEAT_S=4 in the test stacks
    job = st.submit({"steps": 40, "interval_ms": 100, "emit_output": True}, max_attempts=max_attempts)
    before = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"},
                         stop=lambda s: any(e.event == "output" for e in s.events))
    _kill_worker_running(st, job["id"])
    t0 = time.monotonic()
    rest = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(before.events[-1].id)},
                       stop=lambda s: any(e.terminal or (e.event == "state" and e.data["attempt"] == 2)
                                          for e in s.events))
    noticed = time.monotonic() - t0
    print(f"worker loss noticed {noticed:.1f}s after SIGKILL (heartbeat deadline 4s)")
    assert noticed < 15
    ids = [e.id for e in before.events + rest.events]
    assert ids == list(range(1, len(ids) + 1))
    if max_attempts == 1:
        end = rest.events[-1]
        assert end.event == "failed" and end.data["error"]["code"] == "worker_lost"
        assert end.data["output"]["items"], "what the attempt produced stays visible"
    else:
        retry = rest.events[-1]
        assert retry.data["status"] == "queued" and retry.data["attempt"] == 2
        end = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(retry.id)}).events[-1]
        assert end.event == "completed" and end.data["attempt"] == 2
    # one report of the loss: nothing after the end, and RQ's own job for the lost attempt is gone
    with st.client() as c:
        assert c.get(f"/jobs/{job['id']}").json()["last_event_id"] == end.id


def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(make_stack) -> None:
    st: Stack = make_stack(workers=1)
    job = st.submit({"steps": 6, "interval_ms": 200})
    read_stream(st.url, job["links"]["events"], stop=lambda s: any(e.data.get("status") == "running" for e in s.events))
    worker = st.workers[0]
    worker.send_signal(signal.SIGTERM)
    end = read_stream(st.url, job["links"]["events"]).events[-1]
    assert end.event == "completed" and end.data["result"] == {"steps": 6}
    assert worker.wait(timeout=10) == 0
