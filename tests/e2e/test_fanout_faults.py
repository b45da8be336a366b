"""The fan-out under pressure, with real processes: many watchers of one hot job falling behind at once."""

from __future__ import annotations

import asyncio
import time

import orjson

from tests.e2e.harness import Stack, read_raw, rss_kib, wait_for

WATCHERS = 220


def _check_one_watcher(events: list[tuple[int | None, str, bytes]], last_id: int) -> int:
    """One watcher's events make sense: ids only go up, every jump lands on a whole job object (a
    snapshot, or the end itself), and it ends with the terminal event. Returns how many jumps it made."""
    assert events, "no event at all"
    assert events[-1][1] == "completed" and events[-1][0] == last_id, events[-1][:2]
    jumps = 0
    for (prev, _, _), (eid, name, data) in zip(events, events[1:], strict=False):
        assert eid is not None and prev is not None and eid > prev, (prev, eid)
        if eid != prev + 1:
            jumps += 1
            assert name in ("snapshot", "completed"), f"jumped from {prev} to {eid} with a {name!r} event"
            assert orjson.loads(data)["last_event_id"] == eid
    return jumps


def test_fanout_collapse_when_many_watchers_fall_behind_is_fixed(make_stack) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_MAX_STREAMS_PER_OWNER="0")
    assert st.api is not None
    baseline = rss_kib(st.api.pid)
    # a job that waits a moment, then runs 2,000 steps at full speed with an item each (4,003 events)
    blocker = st.submit({"steps": 1, "interval_ms": 1500})
    job = st.submit({"steps": 2000, "interval_ms": 0, "emit_output": True})
    peak = [baseline]

    async def watch_all() -> list[list[tuple[int | None, str, bytes]]]:
        async def sample_rss() -> None:
            while True:
                peak[0] = max(peak[0], rss_kib(st.api.pid))  # type: ignore[union-attr]
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_rss())
        try:
            return await asyncio.gather(*(read_raw(st.port, job["links"]["events"], timeout=120)
                                          for _ in range(WATCHERS)))
        finally:
            sampler.cancel()

    t0 = time.monotonic()
    streams = asyncio.run(watch_all())
    took = time.monotonic() - t0
    with st.client() as c:
        last_id = c.get(f"/jobs/{job['id']}").json()["last_event_id"]
    assert last_id == 4003
    jumps = [_check_one_watcher(events, last_id) for events in streams]
    delivered = sum(len(events) for events in streams)
    with st.client() as c:
        wait_for(lambda: "jobcast_sse_streams_open 0.0" in c.get("/metrics").text, 10, "every stream to close")
    after = rss_kib(st.api.pid)
    print(f"{WATCHERS} watchers of a 4,003-event job: {delivered} events delivered in {took:.1f}s, "
          f"{sum(1 for j in jumps if j)} watchers caught up by snapshot; API RSS {baseline // 1024} MB before, "
          f"peak {peak[0] // 1024} MB, {after // 1024} MB after")
    assert peak[0] - baseline < 150 * 1024, "the API's memory grew with watchers × log length"
    assert after - baseline < 60 * 1024, "the API's memory did not come back after the job"
    assert blocker["id"] != job["id"]
