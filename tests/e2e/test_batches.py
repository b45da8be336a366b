"""Batches (`ctx.parts`): one job in many parts run by many workers, followed as one job over its stream, with
real Redis, a real API and real worker processes; the demo type's batch form (`parts`, `part_steps`)."""

from __future__ import annotations

import os
import signal
from datetime import datetime
from typing import Any

from tests.e2e.harness import Stack, read_stream, wait_for


def _parts(st: Stack, job: dict[str, Any]) -> list[dict[str, Any]]:
    with st.client() as c:
        r = c.get("/jobs", params={"parent": job["id"], "limit": 500})
        assert r.status_code == 200, r.text
        return list(r.json()["jobs"])


def _wait_running(st: Stack, job: dict[str, Any], parts: int) -> None:
    with st.client() as c:
        wait_for(lambda: (c.get(f"/jobs/{job['id']}").json()["parts"] or {}).get("running") == parts, 20,
                 f"{parts} parts running")


def _at(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def test_a_batch_of_six_parts_runs_on_four_workers_at_once_and_its_stream_shows_it_whole(make_stack: Any) -> None:
    st: Stack = make_stack(workers=4, JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = st.submit({"parts": 6, "part_steps": 4, "interval_ms": 250, "emit_output": True})
    s = read_stream(st.url, job["links"]["events"], timeout=60)
    assert s.events[-1].event == "completed", [e.event for e in s.events][-5:]
    done = s.events[-1].data
    assert done["result"] == {"parts": [{"steps": 4}] * 6}
    assert done["parts"] == {"total": 6, "queued": 0, "running": 0, "completed": 6, "failed": 0, "canceled": 0}
    progress = [e.data["progress"] for e in s.events if e.event in ("state", "snapshot", "completed")]
    assert progress == sorted(progress) and progress[-1] == 100, f"progress went down: {progress}"
    messages = [e.data["message"] for e in s.events if e.event == "state"]
    assert {f"{k}/6 parts done" for k in range(6)} <= set(messages), messages
    items = [(e.data["part"], e.data["item"]["step"]) for e in s.events if e.event == "output"]
    assert sorted(items) == [(p, step) for p in range(6) for step in range(1, 5)], "every part's items, once"
    assert len(done["output"]["items"]) == 24
    parts = _parts(st, job)
    assert len(parts) == 6 and all(p["status"] == "completed" and p["parent_id"] == job["id"] for p in parts)
    spans = sorted((_at(p["started_at"]), _at(p["ended_at"])) for p in parts)
    at_once = max(sum(1 for start, end in spans if start <= t < end) for t, _ in spans)
    assert at_once >= 3, f"the parts ran {at_once} at a time on 4 workers: {spans}"


def test_a_part_that_fails_fails_its_batch_with_part_failed_and_cancels_the_rest(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = st.submit({"parts": 6, "part_steps": 20, "interval_ms": 200, "fail_part": 1})
    s = read_stream(st.url, job["links"]["events"], timeout=60)
    end = s.events[-1]
    assert end.event == "failed" and end.data["error"]["code"] == "part_failed", end.data["error"]
    failed_part = end.data["error"]["details"]
    assert failed_part["part"] == 1 and failed_part["error"]["message"].startswith("failing attempt 1")
    with st.client() as c:
        wait_for(lambda: all(p["status"] in ("completed", "failed", "canceled") for p in _parts(st, job)), 10,
                 "every part to end")
        parts = {p["id"]: p for p in _parts(st, job)}
        assert parts[failed_part["part_id"]]["status"] == "failed"
        assert sum(p["status"] == "canceled" for p in parts.values()) >= 3, "the rest were canceled"
        assert c.get(f"/jobs/{job['id']}").json()["status"] == "failed"


def test_canceling_a_batch_cancels_every_part_within_five_seconds(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = st.submit({"parts": 5, "part_steps": 100, "interval_ms": 100})
    _wait_running(st, job, 2)
    with st.client() as c:
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 202
        assert c.get(f"/jobs/{job['id']}").json()["status"] == "canceled"
        wait_for(lambda: all(p["status"] == "canceled" for p in _parts(st, job)), 5, "every part canceled")


def test_a_batch_under_an_owner_limit_of_two_runs_two_parts_at_a_time(make_stack: Any) -> None:
    st: Stack = make_stack(workers=4, JOBCAST_MAX_RUNNING_PER_OWNER="2")
    job = st.submit({"parts": 4, "part_steps": 3, "interval_ms": 200})
    s = read_stream(st.url, job["links"]["events"], timeout=60)
    assert s.events[-1].event == "completed"
    spans = sorted((_at(p["started_at"]), _at(p["ended_at"])) for p in _parts(st, job))
    assert max(sum(1 for start, end in spans if start <= t < end) for t, _ in spans) <= 2, spans


def test_retrying_a_failed_batch_runs_only_the_parts_that_did_not_complete(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = st.submit({"parts": 4, "part_steps": 3, "interval_ms": 150, "emit_output": True, "fail_part": 3})
    first = read_stream(st.url, job["links"]["events"], timeout=60)
    assert first.events[-1].event == "failed"
    with st.client() as c:  # (until the parts the failure canceled have stopped, a retry is a 409)
        wait_for(lambda: c.post(f"/jobs/{job['id']}/retry").status_code != 409, 10, "the parts to stop")
    before = {p["id"]: p for p in _parts(st, job)}
    kept = {i: p for i, p in before.items() if p["status"] == "completed"}
    assert kept, "no part completed before the batch failed: this tests nothing"
    again = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(first.events[-1].id)},
                        timeout=60)
    done = again.events[-1]
    assert done.event == "completed" and done.data["attempt"] == 2
    assert done.data["result"] == {"parts": [{"steps": 3}] * 4}
    after = {p["id"]: p for p in _parts(st, job)}
    assert all(after[i]["started_at"] == p["started_at"] and after[i]["attempt"] == 1 for i, p in kept.items()), \
        "a completed part ran again"
    assert all(after[i]["attempt"] == 2 for i in before if i not in kept), "a part that did not complete stayed"
    assert len(done.data["output"]["items"]) == 12, "the kept parts' items are in the batch's output again"
    progress = [e.data["progress"] for e in again.events if e.event in ("state", "completed")]
    assert progress[-1] == 100


def test_a_batchs_parts_are_listed_in_part_order_and_go_with_it_but_not_on_their_own(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = st.submit({"parts": 5, "part_steps": 40, "interval_ms": 100})
    _wait_running(st, job, 2)
    with st.client() as c:
        page = c.get("/jobs", params={"parent": job["id"], "limit": 2}).json()
        rest = c.get("/jobs", params={"parent": job["id"], "cursor": page["next_cursor"]}).json()
        parts = page["jobs"] + rest["jobs"]
        assert rest["next_cursor"] is None and len(parts) == 5
        assert [c.get(f"/jobs/{p['id']}").json()["parent_id"] for p in parts] == [job["id"]] * 5
        ids = [p["id"] for p in parts]
        for method, path in (("DELETE", f"/jobs/{ids[0]}"), ("POST", f"/jobs/{ids[0]}/retry")):
            r = c.request(method, path)
            assert r.status_code == 409 and job["id"] in r.json()["error"]["message"], (method, r.text)
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 202
        wait_for(lambda: all(p["status"] == "canceled" for p in _parts(st, job)), 10, "every part canceled")
        assert c.delete(f"/jobs/{job['id']}").status_code == 204
        assert all(c.get(f"/jobs/{i}").status_code == 404 for i in ids), "deleting a batch deletes its parts"
        for params in ({"parent": "nope"}, {"parent": job["id"], "cursor": "p2"}):
            r = c.get("/jobs", params=params)
            assert r.status_code == 422, r.text
        assert c.get("/jobs", params={"parent": "f" * 32}).status_code == 404


def test_a_type_that_takes_partial_results_completes_with_what_its_parts_gave(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_JOB_MODULES="tests.fixtures", JOBCAST_MAX_RUNNING_PER_OWNER="0")
    with st.client() as c:
        r = c.post("/jobs", json={"type": "squares", "payload": {"numbers": [1, 2, 3, 4], "fail": [3]}})
        assert r.status_code == 202, r.text
        job = r.json()
    s = read_stream(st.url, job["links"]["events"], timeout=60)
    done = s.events[-1]
    assert done.event == "completed", done.data
    assert done.data["result"] == {"squares": [1, 4, None, 16], "failed": [2]}
    assert done.data["parts"]["failed"] == 1 and done.data["parts"]["completed"] == 3
    assert sorted(e.data["item"]["square"] for e in s.events if e.event == "output" and "part" in e.data) == [1, 4, 16]


def test_a_worker_sigkilled_mid_part_loses_the_part_and_the_batch_follows(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_MAX_RUNNING_PER_OWNER="0")  # (JOBCAST_HEARTBEAT_S=4 here)
    job = st.submit({"parts": 2, "part_steps": 60, "interval_ms": 100})
    wait_for(lambda: [p["status"] for p in _parts(st, job)] == ["running", "running"], 20, "both parts running")
    victim = _parts(st, job)[0]
    worker = st.redis.r.hget(f"{st.prefix}:job:{{{victim['id']}}}", "worker").decode()
    os.killpg(os.getpgid(int(worker.rsplit(":", 1)[1])), signal.SIGKILL)  # the work horse and its worker
    end = read_stream(st.url, job["links"]["events"], timeout=60).events[-1]
    # a demo part has one attempt: the lost one fails with worker_lost, the batch with part_failed, the other
    # part is canceled
    assert end.event == "failed" and end.data["error"]["code"] == "part_failed", end.data["error"]
    assert end.data["error"]["details"] == {"part_id": victim["id"], "part": 0, "error": {
        "code": "worker_lost", "message": end.data["error"]["details"]["error"]["message"]}}
    wait_for(lambda: [p["status"] for p in _parts(st, job)] == ["failed", "canceled"], 10, "the other part canceled")


def _squares(st: Stack, job_type: str, **payload: Any) -> dict[str, Any]:
    with st.client() as c:
        r = c.post("/jobs", json={"type": job_type, "payload": payload})
        assert r.status_code == 202, r.text
        job: dict[str, Any] = r.json()
        return job


def test_a_part_tried_again_leaves_its_batch_each_item_once(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_JOB_MODULES="tests.fixtures", JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = _squares(st, "squares_all", numbers=[1, 2, 3], fail=[2], fail_attempts=1)  # part 1 fails once
    done = read_stream(st.url, job["links"]["events"], timeout=60).events[-1]
    assert done.event == "completed" and done.data["result"]["squares"] == [1, 4, 9], done.data
    assert [p["attempt"] for p in _parts(st, job)] == [1, 2, 1]
    items = done.data["output"]["items"]
    assert items[0] == {"own": "made before the split"}
    assert sorted(i["square"] for i in items[1:]) == [1, 4, 9], items


def test_a_retried_batch_keeps_what_it_made_before_the_split_and_its_completed_parts_items(make_stack: Any) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_JOB_MODULES="tests.fixtures", JOBCAST_MAX_RUNNING_PER_OWNER="0")
    job = _squares(st, "squares_all", numbers=[1, 2, 3], fail=[3])  # part 2 fails both its attempts
    first = read_stream(st.url, job["links"]["events"], timeout=60)
    assert first.events[-1].event == "failed"
    with st.client() as c:
        wait_for(lambda: c.post(f"/jobs/{job['id']}/retry").status_code != 409, 10, "the parts to stop")
    done = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(first.events[-1].id)},
                       timeout=60).events[-1]
    assert done.event == "completed" and done.data["result"]["squares"] == [1, 4, 9], done.data
    items = done.data["output"]["items"]
    assert items.count({"own": "made before the split"}) == 1
    assert sorted(i["square"] for i in items if "square" in i) == [1, 4, 9], items
