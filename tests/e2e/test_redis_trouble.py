"""Redis going away: clear 503s while it is gone, nothing lost when only the pub/sub link drops."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RedisServer, Stack, Stream, read_stream, wait_for


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.close()


def test_pubsub_link_dropped_mid_stream_loses_no_event(stack: Stack) -> None:
    job = stack.submit({"steps": 60, "interval_ms": 30, "emit_output": True})
    killed = []

    def kill_pubsub_once(s: Stream) -> bool:
        if len(s.events) == 10 and not killed:
            killed.append(stack.redis.r.client_kill_filter(_type="pubsub"))
        return False

    s = read_stream(stack.url, job["links"]["events"], stop=kill_pubsub_once)
    assert killed and killed[0] >= 1
    ids = [e.id for e in s.events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert s.events[-1].event == "completed"
    steps = [e.data["item"]["step"] for e in s.events if e.event == "output"]
    first_step = s.events[0].data["output"]["items"]
    assert [i["step"] for i in first_step] + steps == list(range(1, 61))


def test_redis_down_answers_503_and_ends_streams_then_recovers(make_stack, own_redis: RedisServer) -> None:
    st: Stack = make_stack(workers=1, redis=own_redis)
    job = st.submit({"steps": 200, "interval_ms": 50})
    result: list[Stream] = []
    streaming = threading.Event()

    def note_first_event(s: Stream) -> bool:
        if s.events:
            streaming.set()
        return False

    reader = threading.Thread(target=lambda: result.append(
        read_stream(st.url, job["links"]["events"], stop=note_first_event, timeout=30)))
    reader.start()
    assert streaming.wait(10), "the stream did not start"  # subscribed, backlog read, first event sent
    own_redis.stop()

    reader.join(timeout=15)
    assert not reader.is_alive(), "the open stream did not end when Redis went away"
    assert result[0].ended_by_server

    with st.client() as c:
        for r in (c.get(f"/jobs/{job['id']}"), c.post("/jobs", json={"type": "demo"}), c.get("/jobs"),
                  c.get(f"/jobs/{job['id']}/events"), c.get("/readyz")):
            assert r.status_code == 503, (r.request.url, r.text)
            assert r.json()["error"]["code"] == "unavailable" and r.headers["retry-after"]
            assert "Traceback" not in r.text
        assert c.get("/healthz").status_code == 200

    own_redis.start()  # an empty Redis on the same port: the API reconnects by itself
    with st.client() as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, 15, "readiness after Redis returned")
        again = c.post("/jobs", json={"type": "demo", "payload": {"steps": 1, "interval_ms": 0}})
        assert again.status_code == 202
        s = read_stream(st.url, again.json()["links"]["events"], stop=lambda s: bool(s.events))
        assert s.status == 200 and s.events[0].data["id"] == again.json()["id"]


def test_workers_carry_on_by_themselves_after_redis_comes_back(make_stack, own_redis: RedisServer) -> None:
    st: Stack = make_stack(workers=1, redis=own_redis)
    own_redis.stop()
    with st.client() as c:
        wait_for(lambda: c.get("/readyz").status_code == 503, 10, "readiness to fail while Redis is down")
    own_redis.start()
    with st.client() as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, 15, "readiness after Redis returned")
    job = st.submit({"steps": 2, "interval_ms": 0})
    end = read_stream(st.url, job["links"]["events"], timeout=60).events[-1]
    assert end.event == "completed"


def test_redis_killed_and_restarted_mid_stream_a_resuming_client_misses_nothing(make_stack, tmp_path: Path) -> None:
    durable = RedisServer(tmp_path / "durable", persistent=True)
    (tmp_path / "durable").mkdir()
    durable.start()
    try:
        st: Stack = make_stack(workers=1, redis=durable)
        job = st.submit({"steps": 30, "interval_ms": 100, "emit_output": True})
        before = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"},
                             stop=lambda s: sum(e.event == "output" for e in s.events) >= 5)
        durable.stop()  # SIGKILL
        durable.start()  # the append-only file brings everything back
        with st.client() as c:
            wait_for(lambda: c.get("/readyz").status_code == 200, 15, "readiness after Redis returned")
        after = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(before.events[-1].id)})
        assert [e.id for e in before.events] == list(range(1, len(before.events) + 1))
        # A restart may lose what the last fsync did not reach (not here: appendfsync always), so the job's
        # ids skip ahead there (SEQ_JUMP in lua/lib.lua): the client goes on from a snapshot under a new id.
        first, *rest = after.events
        assert first.event == "snapshot" and first.id is not None and first.id > before.events[-1].id
        assert [e.id for e in rest] == list(range(first.id + 1, first.id + 1 + len(rest)))
        steps = [i["step"] for i in first.data["output"]["items"]]
        steps += [e.data["item"]["step"] for e in rest if e.event == "output"]
        assert steps == list(range(1, len(steps) + 1)) and after.events[-1].terminal, "items missing or repeated"
        if after.events[-1].event == "completed":
            assert len(steps) == 30
        print("after the restart the job ended", after.events[-1].event, after.events[-1].data["error"])
    finally:
        durable.close()
