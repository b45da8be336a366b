"""Faults on the worker side, reproduced with real processes: workers killed at the worst moment, queues
emptied behind jobcast's back, Redis restarted under running jobs. No job is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from rq import Queue

from tests.e2e.harness import RedisServer, Stack, read_stream, wait_for


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that keeps every write on disk, so a SIGKILL and a start again lose nothing."""
    (tmp_path / "durable").mkdir()
    server = RedisServer(tmp_path / "durable", persistent=True)
    server.start()
    yield server
    server.close()


def _record(st: Stack, job_id: str) -> dict[str, str]:
    raw = st.redis.r.hgetall(f"{st.prefix}:job:{{{job_id}}}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def _blocked_in_dequeue(st: Stack, pid: int) -> bool:
    """Whether the process `pid` is blocked in Redis waiting for a job (RQ's BLPOP / BLMOVE)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{st.redis.port} )"],
                         capture_output=True, text=True, check=True).stdout
    ours = {line.split()[2] for line in out.splitlines() if f"pid={pid}," in line}  # its local addresses
    return any(c.get("cmd") in ("blpop", "blmove") and c["addr"] in ours for c in st.redis.r.client_list())


def _kill_group(proc_pid: int) -> None:
    with_group = os.getpgid(proc_pid)
    os.killpg(with_group, signal.SIGKILL)


def _restart(st: Stack) -> float:
    """SIGKILL Redis and start it again on the same port; how long it was away (s). Returns once the API
    answers again (a client would retry its 503s until then)."""
    t0 = time.monotonic()
    st.redis.stop()
    st.redis.start()
    away = time.monotonic() - t0
    _wait_ready(st)
    return away


def _wait_ready(st: Stack) -> None:
    with st.client() as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, 20, "the API to be ready again")


def test_a_worker_killed_between_dequeue_and_start_leaves_no_job_queued_forever(make_stack) -> None:
    st: Stack = make_stack(workers=1)  # JOBCAST_HEARTBEAT_S=4 in the test stacks
    worker = st.workers[0]
    wait_for(lambda: _blocked_in_dequeue(st, worker.pid), 10, "the worker to wait for a job")
    # Frozen while it waits: Redis hands it the next job, and it dies before it can start it.
    os.kill(worker.pid, signal.SIGSTOP)
    job = st.submit({"steps": 3, "interval_ms": 10})
    wait_for(lambda: st.redis.r.llen(f"rq:queue:{st.queue}") == 0, 10, "the frozen worker to take the job")
    _kill_group(worker.pid)
    worker.wait()
    assert _record(st, job["id"])["status"] == "queued"

    t0 = time.monotonic()
    st.start_worker()  # and the API's janitor (and the new worker's) look after it
    end = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=60)
    took = time.monotonic() - t0
    print(f"the stranded job ran {took:.1f}s after its worker died (heartbeat deadline 4s)")
    assert end.events[-1].event == "completed" and end.events[-1].data["attempt"] == 1
    assert took < 60
    ids = [e.id for e in end.events]
    assert ids == list(range(1, len(ids) + 1))
    # sent to RQ again exactly once, although two janitors (the API's, the new worker's) sweep
    assert [e.data["message"] for e in end.events if e.event == "state"].count("Starting") == 1
    assert _record(st, job["id"])["run"] == "2"


def test_a_queue_emptied_by_an_operator_fails_its_jobs_instead_of_stranding_them(make_stack) -> None:
    st: Stack = make_stack(workers=0)
    jobs = [st.submit({"steps": 1, "interval_ms": 0}) for _ in range(3)]
    assert Queue(st.queue, connection=st.redis.r).empty() == 3  # what `rq empty` and rq-dashboard do
    t0 = time.monotonic()
    ends = [read_stream(st.url, j["links"]["events"], timeout=60).events[-1] for j in jobs]
    print(f"jobs of the emptied queue ended {time.monotonic() - t0:.1f}s after it was emptied")
    for end in ends:
        assert end.event == "failed" and end.data["error"]["code"] == "rq_job_lost"
        assert "rq empty" in end.data["error"]["message"] and "retry" in end.data["error"]["message"]
    # the user can run one again, and it runs once a worker is there
    st.start_worker()
    with st.client() as c:
        assert c.post(f"/jobs/{jobs[0]['id']}/retry").status_code == 202
    again = read_stream(st.url, jobs[0]["links"]["events"], headers={"Last-Event-ID": str(ends[0].id)}, timeout=30)
    assert again.events[-1].event == "completed" and again.events[-1].data["attempt"] == 2


def test_workers_ride_out_a_short_redis_restart_and_run_every_job(make_stack, durable_redis: RedisServer) -> None:
    st: Stack = make_stack(workers=2, redis=durable_redis)
    jobs = [st.submit({"steps": 4, "interval_ms": 30}) for _ in range(20)]
    wait_for(lambda: any(_record(st, j["id"])["status"] == "completed" for j in jobs), 20, "the first job to end")
    away = _restart(st)
    t0 = time.monotonic()
    with st.client() as c:
        for j in jobs:
            end = wait_for(lambda j=j: (r := c.get(f"/jobs/{j['id']}")).status_code == 200
                           and r.json()["status"] in ("completed", "failed") and r.json(), 60, f"job {j['id']} to end")
            assert end["status"] == "completed", end["error"]
    print(f"Redis was away {away * 1000:.0f} ms; all 20 jobs completed {time.monotonic() - t0:.1f}s after")
    assert all(w.poll() is None for w in st.workers), "a worker exited after the restart"
    after = st.submit({"steps": 1, "interval_ms": 0})
    assert read_stream(st.url, after["links"]["events"], timeout=30).events[-1].event == "completed"


def _outage_seconds(log: str) -> float:
    """How long the worker has been waiting for Redis, by the times of its log lines that say so."""
    waiting = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in log.splitlines()
               if "could not connect to Redis instance" in line or "the worker waits for it" in line]
    return (waiting[-1] - waiting[0]).total_seconds() if waiting else 0.0


def test_a_worker_waits_out_a_long_redis_outage_under_its_own_name(make_stack, durable_redis: RedisServer) -> None:
    st: Stack = make_stack(workers=1, redis=durable_redis, JOBCAST_WORKER_NAME="named-worker-1")
    worker = st.workers[0]
    durable_redis.stop()
    # A long outage: RQ's dequeue tries again and again (it logs each try), and should an error get past
    # RQ, jobcast's worker loop waits for Redis itself (logging every 5 s). Either way, the same worker.
    wait_for(lambda: _outage_seconds(st.log("worker-0.log")) >= 20, 90, "the worker to wait out 20 s of outage")
    assert worker.poll() is None, "the worker exited during the outage"
    away = time.monotonic()
    durable_redis.start()
    _wait_ready(st)
    job = st.submit({"steps": 2, "interval_ms": 0})
    end = read_stream(st.url, job["links"]["events"], timeout=60).events[-1]
    assert end.event == "completed"
    print(f"after a {_outage_seconds(st.log('worker-0.log')):.0f} s outage, a job submitted once Redis was back "
          f"completed {time.monotonic() - away:.1f}s after Redis started")
    assert worker.poll() is None
    assert "There exists an active worker named" not in st.log("worker-0.log")
    # SIGTERM still stops it cleanly
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0


def test_a_redis_blip_does_not_fail_a_running_attempt(make_stack, durable_redis: RedisServer) -> None:
    st: Stack = make_stack(workers=1, redis=durable_redis)
    job = st.submit({"steps": 60, "interval_ms": 25, "emit_output": True})
    wait_for(lambda: int(_record(st, job["id"]).get("seq", 0)) > 10, 20, "the job to be well under way")
    away = _restart(st)
    print(f"Redis was away {away * 1000:.0f} ms mid-job")
    end = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=60)
    assert end.events[-1].event == "completed", end.events[-1].data.get("error")
    assert end.events[-1].data["attempt"] == 1
    # The restart moved the job's ids ahead (SEQ_JUMP in lua/lib.lua) and its log starts there: a stream from
    # the start is a snapshot, then the events after it, every item exactly once.
    first, *rest = end.events
    assert first.event == "snapshot" and first.id is not None and first.id > 1_000_000
    assert [e.id for e in rest] == list(range(first.id + 1, first.id + 1 + len(rest)))
    steps = [i["step"] for i in first.data["output"]["items"]]
    steps += [e.data["item"]["step"] for e in rest if e.event == "output"]
    assert steps == list(range(1, 61)), "every item exactly once, in order"


def test_readyz_stops_counting_a_sigkilled_worker(make_stack) -> None:
    st: Stack = make_stack(workers=2)
    _kill_group(st.workers[0].pid)
    t0 = time.monotonic()
    with st.client() as c:
        wait_for(lambda: c.get("/readyz").json()["workers"] == 1, 20, "readiness to count one worker")
        print(f"a killed worker stopped counting after {time.monotonic() - t0:.1f}s (heartbeat deadline 4s)")
        metrics = c.get("/metrics").text
    assert any(line.startswith("jobcast_workers") and line.endswith(" 1.0") for line in metrics.splitlines()), metrics
