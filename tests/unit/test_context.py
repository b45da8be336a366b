"""What job code calls: ranges, aggregation, coalescing, monotonic progress, output, cancel."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from jobcast.context import JobCanceled, JobContext
from jobcast.store import Store
from tests.unit.conftest import events


@pytest.fixture
def ctx_for(store: Store, new_job) -> Iterator[Callable[[], JobContext]]:
    made: list[JobContext] = []

    def make() -> JobContext:
        ctx = JobContext(store, new_job())
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def _states(store: Store, ctx: JobContext) -> list[dict]:
    return [d for _, name, d in events(store, ctx.id) if name == "state"][2:]  # after queued and Starting


def _progress(store: Store, ctx: JobContext) -> float:
    return float(store.load(ctx.id)["progress"])


def test_a_stage_maps_its_0_to_100_onto_its_slice(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    with ctx.stage("epic", 0, 30) as epic:
        epic.progress(50, "Writing the epic")
        ctx.flush()
        assert _progress(store, ctx) == 15
        assert store.load(ctx.id)["stage"] == "epic"
    ctx.flush()
    assert _progress(store, ctx) == 30
    stories = ctx.stage("stories", 30, 60)
    inner = stories.stage("draft", 50, 100)
    inner.progress(50)
    ctx.flush()
    assert _progress(store, ctx) == 52.5
    assert store.load(ctx.id)["stage"] == "draft"


def test_bad_ranges_and_values_are_refused(ctx_for) -> None:
    ctx = ctx_for()
    with pytest.raises(ValueError, match="0 <= start <= end <= 100"):
        ctx.stage("x", 50, 20)
    with pytest.raises(ValueError, match="from 0 to 100"):
        ctx.progress(101)
    with pytest.raises(ValueError, match="at least one item"):
        ctx.tracker(0, 3)


def test_a_tracker_aggregates_parallel_items_and_steps(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    pieces = ctx.stage("pieces", 0, 60).tracker(items=4, steps=5, message="Building 4 pieces")

    def build(i: int) -> None:
        for _ in range(5):
            pieces.advance(i)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.flush()
    assert pieces.done == 20
    assert _progress(store, ctx) == 60
    pieces.finish(0)  # already finished: stays at its cap
    assert pieces.done == 20


def test_tracker_progress_is_the_share_of_steps_done(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    t = ctx.tracker(items=3, steps=2)
    t.advance(0)
    ctx.flush()
    assert _progress(store, ctx) == 16.7
    t.finish(1, "Generated appearances")
    assert _progress(store, ctx) == 50.0
    assert store.load(ctx.id)["message"] == "Generated appearances"


def test_progress_never_goes_down(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    ctx.progress(50, "half")
    ctx.progress(30)
    ctx.flush()
    assert [s["progress"] for s in _states(store, ctx)] == [50]
    ctx.progress(20, "a new message still keeps the progress")
    assert _states(store, ctx)[-1]["progress"] == 50


def test_a_tight_loop_is_coalesced_and_the_last_value_always_arrives(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    t0 = time.monotonic()
    for i in range(1, 20001):
        ctx.progress(i / 200)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 2
    while _progress(store, ctx) != 100 and time.monotonic() < deadline:
        time.sleep(0.01)  # the reporter thread delivers the last value by itself
    assert _progress(store, ctx) == 100
    writes = len(_states(store, ctx))
    assert writes <= (elapsed + 0.2) / 0.05 + 2, f"{writes} writes in {elapsed:.2f}s"
    values = [s["progress"] for s in _states(store, ctx)]
    assert values == sorted(values)


def test_message_and_stage_changes_are_never_dropped(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    for i in range(1, 101):
        ctx.progress(i, f"Step {i}/100")
    ctx.progress(100, stage="save")
    messages = [s["message"] for s in _states(store, ctx)]
    assert messages == [f"Step {i}/100" for i in range(1, 101)] + ["Step 100/100"]
    assert _states(store, ctx)[-1]["stage"] == "save"


def test_deltas_are_merged_but_never_lost(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    words = [f"w{i} " for i in range(2000)]
    for w in words:
        ctx.delta(w)
    ctx.flush()
    deltas = [d["text"] for _, name, d in events(store, ctx.id) if name == "output"]
    assert "".join(deltas) == "".join(words) == store.load(ctx.id)["text"] == ctx.output_text
    assert len(deltas) < 100


def test_items_are_sent_in_order_after_the_text_before_them(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    ctx.delta("intro")
    ctx.item({"name": "Ada"})
    ctx.item({"name": "Grace"})
    out = [d for _, name, d in events(store, ctx.id) if name == "output"]
    assert out == [{"kind": "delta", "text": "intro"}, {"kind": "item", "item": {"name": "Ada"}},
                   {"kind": "item", "item": {"name": "Grace"}}]
    assert ctx.output_items == [b'{"name":"Ada"}', b'{"name":"Grace"}']


def test_one_reporter_thread_serves_every_job_of_the_process(store: Store, ctx_for) -> None:
    def reporters() -> int:
        return sum(t.name == "jobcast-reporter" for t in threading.enumerate())

    for _ in range(20):  # jobs one after another: no thread each
        ctx_for().close()
    together = [ctx_for() for _ in range(5)]
    for i, ctx in enumerate(together):
        ctx.progress(10 + i)
        ctx.progress(20 + i)  # coalesced: only the reporter sends it, 50 ms after the start event
    deadline = time.monotonic() + 2
    while any(_progress(store, c) != 20 + i for i, c in enumerate(together)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [_progress(store, c) for c in together] == [20, 21, 22, 23, 24]
    assert reporters() == 1


def test_check_and_sleep_notice_a_cancel(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    ctx.check()
    assert not ctx.canceled
    store.redis.hset(store.keys.job(ctx.id), "cancel", "1")
    t0 = time.monotonic()
    with pytest.raises(JobCanceled):
        ctx.sleep(10)
    assert time.monotonic() - t0 < 1
    assert ctx.canceled


def test_a_job_ended_by_someone_else_stops_writing(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    store.emit(ctx.id, "end", event="canceled", data=b'"id":"x"}', fields={"status": "canceled"})
    seq = store.load(ctx.id)["seq"]
    ctx.progress(80, "too late")
    assert store.load(ctx.id)["seq"] == seq
    with pytest.raises(JobCanceled):
        ctx.check()


def test_eta_appears_once_there_is_enough_to_go_on(store: Store, ctx_for) -> None:
    ctx = ctx_for()
    ctx.progress(10, "early")
    assert _states(store, ctx)[-1]["eta_s"] is None
    ctx._started -= 10  # ten seconds in
    ctx.progress(25, "later")
    assert _states(store, ctx)[-1]["eta_s"] == 30


def test_async_job_code_can_report(store: Store, ctx_for) -> None:
    ctx = ctx_for()

    async def piece(i: int, t) -> None:
        await asyncio.sleep(0.001 * i)
        t.finish(i)

    async def run() -> None:
        t = ctx.tracker(5, 1, message="Generating")
        await asyncio.gather(*(piece(i, t) for i in range(5)))

    asyncio.run(run())
    ctx.flush()
    assert _progress(store, ctx) == 100
