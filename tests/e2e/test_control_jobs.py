"""A user cancels, retries and deletes jobs; the stream tells every watcher what happened."""

from __future__ import annotations

import time

import httpx

from tests.e2e.harness import Stack, Stream, read_stream, wait_for


def _wait_running(st: Stack, job: dict) -> Stream:
    return read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"},
                       stop=lambda s: any(e.data.get("status") == "running" and e.event == "state" and
                                          e.data["progress"] > 0 for e in s.events))


def _ids(events: list) -> list[int]:
    return [e.id for e in events]


def test_cancel_a_queued_job_ends_it_at_once_and_it_never_runs(make_stack) -> None:
    st: Stack = make_stack(workers=1)
    blocker = st.submit({"steps": 2, "interval_ms": 1500})
    _wait_running(st, blocker)
    job = st.submit({"steps": 1, "interval_ms": 0})
    with st.client() as c:
        r = c.post(f"/jobs/{job['id']}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "canceled"
        assert r.json()["error"]["code"] == "canceled"
        again = c.post(f"/jobs/{job['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    s = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"})
    assert [e.event for e in s.events] == ["state", "canceled"] and s.events[-1].data["status"] == "canceled"
    assert job["id"].encode() not in st.redis.r.lrange(f"rq:queue:{st.queue}", 0, -1)
    # the worker carries on: the next job runs
    after = st.submit({"steps": 1, "interval_ms": 0})
    assert read_stream(st.url, after["links"]["events"]).events[-1].event == "completed"
    with st.client() as c:
        assert c.get(f"/jobs/{job['id']}").json()["started_at"] is None


def test_cancel_a_running_job_that_checks_ends_it_quickly(stack: Stack) -> None:
    job = stack.submit({"steps": 20, "interval_ms": 500})
    _wait_running(stack, job)
    t0 = time.monotonic()
    with stack.client() as c:
        r = c.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["message"] == "Canceling"
    end = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": str(r.json()["last_event_id"])})
    took = time.monotonic() - t0
    print(f"running job canceled {took:.2f}s after the request")
    assert end.events[-1].event == "canceled" and end.events[-1].data["error"]["code"] == "canceled"
    assert took < 2
    after = stack.submit({"steps": 1, "interval_ms": 0})
    assert read_stream(stack.url, after["links"]["events"]).events[-1].event == "completed"


def test_cancel_a_job_that_never_checks_stops_it_within_5s_and_the_worker_survives(make_stack) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_JOB_MODULES="tests.fixtures")
    with st.client() as c:
        job = c.post("/jobs", json={"type": "stubborn"}).json()
    _wait_running(st, job)
    t0 = time.monotonic()
    with st.client() as c:
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 202
    s = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"})
    took = time.monotonic() - t0
    print(f"job that ignores cancels ended {took:.2f}s after the request")
    assert s.events[-1].event == "canceled" and took < 5
    nxt = st.submit({"steps": 1, "interval_ms": 0})
    assert read_stream(st.url, nxt["links"]["events"]).events[-1].event == "completed"


def test_automatic_retry_shows_queued_attempt_2_then_succeeds(stack: Stack) -> None:
    job = stack.submit({"steps": 3, "interval_ms": 0, "fail_attempts": 1}, max_attempts=2)
    s = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": "0"})
    assert _ids(s.events) == list(range(1, len(s.events) + 1))
    states = [(e.data["status"], e.data["attempt"]) for e in s.events if e.event == "state"]
    retry_at = states.index(("queued", 2))
    assert ("running", 1) in states[:retry_at] and ("running", 2) in states[retry_at:]
    retry_msg = [e.data["message"] for e in s.events if e.event == "state" and e.data["attempt"] == 2][0]
    assert retry_msg.startswith("Retrying in ") and "attempt 2 of 2" in retry_msg
    end = s.events[-1]
    assert end.event == "completed" and end.data["attempt"] == 2 and end.data["error"] is None


def test_manual_retry_continues_the_same_stream_with_the_next_ids(stack: Stack) -> None:
    job = stack.submit({"steps": 3, "interval_ms": 0, "fail_at": 2})
    first = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": "0"})
    assert first.events[-1].event == "failed"
    with stack.client() as c:
        r = c.post(f"/jobs/{job['id']}/retry")
        assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["attempt"] == 2
        assert r.json()["error"] is None and r.json()["output"] == {"items": [], "text": ""}
    second = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": str(first.events[-1].id)})
    assert second.events[0].id == first.events[-1].id + 1
    assert second.events[0].event == "state" and second.events[0].data["status"] == "queued"
    assert second.events[0].data["attempt"] == 2
    assert second.events[-1].event == "failed" and second.events[-1].data["attempt"] == 2
    assert _ids(first.events + second.events) == list(range(1, len(first.events) + len(second.events) + 1))


def test_retry_is_409_for_completed_and_running_jobs(stack: Stack) -> None:
    done = stack.submit({"steps": 1, "interval_ms": 0})
    read_stream(stack.url, done["links"]["events"])
    running = stack.submit({"steps": 10, "interval_ms": 300})
    _wait_running(stack, running)
    with stack.client() as c:
        for job in (done, running):
            r = c.post(f"/jobs/{job['id']}/retry")
            assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        assert c.post(f"/jobs/{running['id']}/cancel").status_code == 202


def test_delete_forgets_a_finished_job_and_refuses_a_running_one(stack: Stack) -> None:
    done = stack.submit({"steps": 1, "interval_ms": 0, "emit_output": True})
    read_stream(stack.url, done["links"]["events"])
    running = stack.submit({"steps": 10, "interval_ms": 300})
    _wait_running(stack, running)
    with stack.client() as c:
        r = c.delete(f"/jobs/{running['id']}")
        assert r.status_code == 409 and "Cancel it first" in r.json()["error"]["message"]
        assert c.delete(f"/jobs/{done['id']}").status_code == 204
        assert c.get(f"/jobs/{done['id']}").status_code == 404
        assert c.delete(f"/jobs/{done['id']}").status_code == 404
        assert done["id"] not in [j["id"] for j in c.get("/jobs?limit=500").json()["jobs"]]
        assert c.post(f"/jobs/{running['id']}/cancel").status_code == 202
    assert read_stream(stack.url, done["links"]["events"]).status == 404
    keys = [k for k in stack.redis.r.scan_iter(f"*{done['id']}*")]
    assert keys == []


def test_idempotency_key_returns_the_same_job_even_under_concurrent_duplicates(stack: Stack) -> None:
    import concurrent.futures

    body = {"type": "demo", "payload": {"steps": 1, "interval_ms": 0}}

    def post(_: int) -> httpx.Response:
        with stack.client() as c:
            return c.post("/jobs", json=body, headers={"Idempotency-Key": "order-17"})

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(post, range(10)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9
    with stack.client() as c:
        other = c.post("/jobs", json={**body, "payload": {"steps": 2}}, headers={"Idempotency-Key": "order-17"})
        assert other.status_code == 409
        assert c.post("/jobs", json=body, headers={"Idempotency-Key": ""}).status_code == 422
        fresh = c.post("/jobs", json=body, headers={"Idempotency-Key": "order-18"})
        assert fresh.status_code == 202 and fresh.json()["id"] != responses[0].json()["id"]


def test_an_idempotency_key_whose_first_request_died_is_taken_over(stack: Stack) -> None:
    import hashlib

    body = b'{"type": "demo", "payload": {"steps": 1, "interval_ms": 0}}'
    key = "order-dead"
    claim = f"{stack.prefix}:idem:{{anonymous}}:{hashlib.sha256(key.encode()).hexdigest()}"
    # what a request that died between claiming the key and creating its job leaves behind (10 s ago)
    stack.redis.r.set(claim, f"{'0' * 32} {hashlib.sha256(body).hexdigest()}", ex=86400 - 10)
    with stack.client() as c:
        t0 = time.monotonic()
        r = c.post("/jobs", content=body, headers={"Idempotency-Key": key, "Content-Type": "application/json"})
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
        assert time.monotonic() - t0 < 2, "a claim older than 5 s is taken over without waiting"
        again = c.post("/jobs", content=body, headers={"Idempotency-Key": key, "Content-Type": "application/json"})
        assert again.status_code == 202 and again.json()["id"] == r.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"

        # The key's job deleted: the same request makes a new job, at once.
        wait_for(lambda: c.get(f"/jobs/{r.json()['id']}").json()["status"] == "completed", 10, "the job to end")
        assert c.delete(f"/jobs/{r.json()['id']}").status_code == 204
        t0 = time.monotonic()
        third = c.post("/jobs", content=body, headers={"Idempotency-Key": key, "Content-Type": "application/json"})
        assert third.status_code == 202 and third.json()["id"] != r.json()["id"]
        assert time.monotonic() - t0 < 2
