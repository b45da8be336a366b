"""An owner over its concurrency limit: extra jobs wait outside RQ, in order, counting down, and never overlap."""

from __future__ import annotations

from datetime import datetime

from tests.e2e.harness import Stack, read_stream


def _t(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_jobs_over_the_limit_wait_their_turn_and_count_down(make_stack) -> None:
    st: Stack = make_stack(workers=3, JOBCAST_MAX_RUNNING_PER_OWNER="2")
    long = [st.submit({"steps": 3, "interval_ms": 700}) for _ in range(2)]
    for job in long:
        read_stream(st.url, job["links"]["events"],
                    stop=lambda s: any(e.data.get("status") == "running" for e in s.events))
    extra = [st.submit({"steps": 2, "interval_ms": 300}) for _ in range(3)]
    last = read_stream(st.url, extra[-1]["links"]["events"], headers={"Last-Event-ID": "0"})
    assert last.events[-1].event == "completed"

    said = [(e.data["stage"], e.data["queue_position"], e.data["message"]) for e in last.events if e.event == "state"]
    waiting = [(pos, msg) for stage, pos, msg in said if stage == "waiting"]
    assert [pos for pos, _ in waiting] == [2, 1, 0], said
    assert waiting[0][1] == "Waiting for a free slot (2 ahead; at most 2 of your jobs run at once)"
    assert said.index(("queued", None, "Queued")) > said.index(("waiting", 0, waiting[-1][1]))

    ends = [read_stream(st.url, j["links"]["events"]).events[-1].data for j in long + extra]
    assert all(e["status"] == "completed" for e in ends)
    spans = sorted((_t(e["started_at"]), _t(e["ended_at"])) for e in ends)
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, f"{most} jobs of one owner ran at once: {spans}"
    starts = [_t(e["started_at"]) for e in ends[2:]]
    assert starts == sorted(starts), "the waiting jobs did not start in the order they were submitted"
