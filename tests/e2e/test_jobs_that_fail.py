"""Jobs that fail, or run past their time limit, end `failed` with a clear error and no traceback."""

from __future__ import annotations

from tests.e2e.harness import Stack, read_stream


def test_a_job_that_raises_ends_failed_with_its_error(stack: Stack) -> None:
    job = stack.submit({"steps": 5, "interval_ms": 0, "fail_at": 3})
    s = read_stream(stack.url, job["links"]["events"])
    end = s.events[-1]
    assert end.event == "failed" and s.ended_by_server
    assert end.data["status"] == "failed" and end.data["result"] is None
    assert end.data["error"]["code"] == "job_error"
    assert "step 3" in end.data["error"]["message"] and "Traceback" not in end.data["error"]["message"]
    assert end.data["progress"] == 40  # step 2 of 5 was the last one reported
    assert end.data["message"].startswith("Failed")


def test_a_job_past_its_time_limit_ends_failed_with_timeout(stack: Stack) -> None:
    job = stack.submit({"steps": 10, "interval_ms": 1000}, timeout_s=1)
    assert job["status"] == "queued"
    end = read_stream(stack.url, job["links"]["events"]).events[-1]
    assert end.event == "failed" and end.data["error"]["code"] == "timeout"
    assert end.data["progress"] < 100
    # the worker survives and runs the next job
    after = read_stream(stack.url, stack.submit({"steps": 1, "interval_ms": 0})["links"]["events"]).events[-1]
    assert after.event == "completed"


def test_a_timed_out_job_is_retried_while_attempts_remain(stack: Stack) -> None:
    job = stack.submit({"steps": 10, "interval_ms": 1000}, timeout_s=1, max_attempts=2)
    s = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": "0"})
    retry = [e for e in s.events if e.event == "state" and e.data["attempt"] == 2][0]
    assert retry.data["status"] == "queued" and retry.data["message"].startswith("Retrying in ")
    assert "time limit" in retry.data["message"]
    end = s.events[-1]
    assert end.event == "failed" and end.data["attempt"] == 2 and end.data["error"]["code"] == "timeout"
