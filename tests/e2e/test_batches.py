"""Batches (`ctx.parts`): one job in many parts run by many workers, followed as one job over its stream, with
real Redis, a real API and real worker processes; the demo type's batch form (`parts`, `part_steps`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.e2e.harness import Stack, read_stream, wait_for


def _parts(st: Stack, job: dict[str, Any]) -> list[dict[str, Any]]:
    with st.client() as c:
        ids = [j["id"] for j in c.get("/jobs", params={"limit": 500}).json()["jobs"] if j["parent_id"] == job["id"]]
        return [c.get(f"/jobs/{i}").json() for i in ids]


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
    assert failed_part["part"] == 1 and failed_part["error"]["message"].startswith("failing at step 1")
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
    with st.client() as c:
        wait_for(lambda: (c.get(f"/jobs/{job['id']}").json()["parts"] or {}).get("running") == 2, 20,
                 "two parts running")
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
