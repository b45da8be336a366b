"""What an operator reads: /metrics adding up over several API processes and workers, and JSON log lines."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import RedisServer, Stack, read_stream, wait_for


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with stack.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_done(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.client() as c:
        return wait_for(lambda: (j := c.get(f"/jobs/{job_id}").json())["status"] in ("completed", "failed") and j,
                        30, f"job {job_id} to end")


def test_metrics_add_up_over_two_api_processes_and_two_workers(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=2, JOBCAST_API_WORKERS="2", JOBCAST_LOG_FORMAT="json")
    before = scrape(stack)
    assert value(before, "jobcast_workers") == 2

    ok = [stack.submit({"steps": 3, "interval_ms": 20}) for _ in range(3)]
    bad = stack.submit({"steps": 3, "interval_ms": 0, "fail_at": 2}, max_attempts=2)
    ended = [wait_done(stack, j["id"]) for j in [*ok, bad]]
    assert [j["status"] for j in ended] == ["completed"] * 3 + ["failed"]

    # Every API process tells the same cluster-wide figures, whichever one answers.
    for _ in range(4):
        m = scrape(stack)
        assert value(m, "jobcast_jobs_submitted_total", type="demo") == 4
        assert value(m, "jobcast_jobs_finished_total", type="demo", status="completed") == 3
        assert value(m, "jobcast_jobs_finished_total", type="demo", status="failed") == 1
        assert value(m, "jobcast_job_retries_total", type="demo") == 1
        # 3 + 2 attempts ran, and each one waited in the queue first.
        assert value(m, "jobcast_job_run_seconds_count", type="demo") == 5
        assert value(m, "jobcast_job_queue_wait_seconds_count", type="demo") == 5
        assert value(m, "jobcast_job_run_seconds_bucket", type="demo", le="+Inf") == 5
        assert 0 < value(m, "jobcast_job_run_seconds_sum", type="demo") < 30
        assert value(m, "jobcast_events_published_total") == sum(j["last_event_id"] for j in ended)
        assert value(m, "jobcast_jobs_running") == 0
        assert value(m, "jobcast_queue_depth", queue=stack.queue) == 0

    # Open streams are counted where they are held: 4 streams over 2 processes add up to 4.
    long = stack.submit({"steps": 400, "interval_ms": 50})
    started = threading.Barrier(5)
    stop = threading.Event()

    def watch() -> None:
        waited = False

        def hold(s: Any) -> bool:
            nonlocal waited
            if not waited:
                waited = True
                started.wait(10)
            return stop.is_set() and len(s.events) > 1

        read_stream(stack.url, long["links"]["events"], stop=hold)

    watchers = [threading.Thread(target=watch) for _ in range(4)]
    for t in watchers:
        t.start()
    started.wait(10)
    assert wait_for(lambda: value(scrape(stack), "jobcast_sse_streams_open") == 4, 10, "4 open streams counted")
    # Whichever of the two processes answers, it reports both processes' streams.
    assert [value(scrape(stack), "jobcast_sse_streams_open") for _ in range(6)] == [4] * 6
    assert value(scrape(stack), "jobcast_jobs_running") == 1
    assert value(scrape(stack), "jobcast_events_delivered_total") >= 4
    stop.set()
    for t in watchers:
        t.join(10)
        assert not t.is_alive()
    assert wait_for(lambda: value(scrape(stack), "jobcast_sse_streams_open") == 0, 10, "streams closed counted")
    with stack.client() as c:
        assert c.post(f"/jobs/{long['id']}/cancel").status_code == 202

    # JSON logs: every line of every process is one JSON object; the job's lines carry its id.
    worker_lines = [orjson.loads(line) for n in range(2) for line in stack.log(f"worker-{n}.log").splitlines()]
    api_lines = [orjson.loads(line) for line in stack.log("api.log").splitlines()]
    assert {"ts", "level", "logger", "message"} <= set(worker_lines[0])
    bad_lines = [line for line in worker_lines if line.get("job_id") == bad["id"]]
    assert any("attempt 1 failed" in line["message"] for line in bad_lines)
    assert any(line["logger"].startswith("rq.") for line in bad_lines), "RQ's own lines about the job carry its id"
    assert any(line.get("job_id") == long["id"] and "/events" in line["message"] for line in api_lines)
    assert all(line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for line in worker_lines + api_lines)


def test_metrics_need_no_key_and_say_nothing_of_owners(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=0, JOBCAST_API_KEYS="k" * 20 + ":alice", JOBCAST_SECRET="s" * 32)
    r = httpx.get(f"{stack.url}/metrics")
    assert r.status_code == 200
    assert "alice" not in r.text and "k" * 20 not in r.text
    assert "jobcast_sse_streams_open" in r.text


def test_a_bad_log_format_is_refused_at_start_up() -> None:
    proc = subprocess.run([sys.executable, "-m", "jobcast", "serve"], env={"JOBCAST_LOG_FORMAT": "yaml", "PATH": ""},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "JOBCAST_LOG_FORMAT='yaml' is not a format; use text or json." in proc.stderr



@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_password_or_stream_token_is_ever_logged(make_stack: Any, tmp_path: Path, log_format: str) -> None:
    password = "redis-pass-0123456789"
    locked = RedisServer(tmp_path / "locked", password=password)
    (tmp_path / "locked").mkdir()
    locked.start()
    try:
        st: Stack = make_stack(workers=1, redis=locked, JOBCAST_LOG_FORMAT=log_format,
                               JOBCAST_API_KEYS="k-0123456789abcdef:alice", JOBCAST_SECRET="s" * 20,
                               OPENAI_BASE_URL="https://user:openai-pass-42@llm.example/v1")
        with st.client(headers={"Authorization": "Bearer k-0123456789abcdef"}) as c:
            job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 1, "interval_ms": 0}}).json()
        token = job["links"]["events"].split("token=", 1)[1]
        end = read_stream(st.url, job["links"]["events"]).events[-1]
        assert end.event == "completed"
        logs = st.log("api.log") + st.log("worker-0.log")
        assert "127.0.0.1" in logs and "redis://***@127.0.0.1" in logs  # the URL is there, masked
        for secret in (password, token, token.split(".")[1], "openai-pass-42"):
            assert secret not in logs, f"{secret!r} was logged"
        assert "/events?token=***" in logs  # uvicorn's access line, masked
    finally:
        locked.close()
