"""The fan-out under pressure, with real processes: many watchers of one hot job falling behind at once."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from datetime import datetime

import orjson
import pytest

from tests.e2e.harness import SetEvent, Stack, read_raw, read_set, read_stream, rss_kib, target, wait_for

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


def _api_connections(port: int) -> int:
    """TCP connections the API (listening on `port`) holds open, as the kernel sees them."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout
    return len(out.splitlines())


def test_stalled_streams_are_closed_after_the_lag_bound_and_keep_no_connection(make_stack) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_STREAM_MAX_LAG_S="2", JOBCAST_MAX_STREAMS_PER_OWNER="0")
    assert st.api is not None
    job = st.submit({"steps": 4000, "interval_ms": 5, "emit_output": True})
    before = _api_connections(st.port)
    stalled = []
    for _ in range(20):  # clients that ask for the stream and never read a byte, their sockets left open
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", st.port))
        sock.sendall(f"GET {target(job['links']['events'])} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        stalled.append(sock)
    try:
        wait_for(lambda: _api_connections(st.port) >= before + 20, 10, "the stalled streams to open")
        t0 = time.monotonic()
        wait_for(lambda: _api_connections(st.port) <= before, 30, "the API to let go of the stalled connections")
        print(f"20 stalled streams closed and their sockets freed {time.monotonic() - t0:.1f}s after they opened "
              f"(lag bound 2s)")
        assert "too slow or gone" in st.log("api.log")
        assert "ASGI callable returned without completing response" not in st.log("api.log")
        # the client sees its connection reset once it reads what was sent before
        stalled[0].settimeout(10)
        with pytest.raises(ConnectionResetError):
            while stalled[0].recv(65536):
                pass
        # a healthy watcher is unaffected and the job goes on
        s = read_stream(st.url, job["links"]["events"], stop=lambda s: len(s.events) >= 5)
        assert s.status == 200 and s.events[0].event == "snapshot"
    finally:
        for sock in stalled:
            sock.close()


def _exact(events: list[SetEvent], job_ids: list[str], last: dict[str, int]) -> None:
    """A set client's events, in order: for each job a whole job object first (its snapshot, or the end
    itself), then every later event of it once, up to its terminal one."""
    for job_id in job_ids:
        mine = [e for e in events if e.data["job_id"] == job_id]
        assert mine[0].event in ("snapshot", "completed"), mine[0].event
        seqs = [e.data["seq"] for e in mine]
        assert seqs == list(range(seqs[0], last[job_id] + 1)), f"a gap or a repeat in {job_id}'s events"
        assert mine[-1].event == "completed"


def test_stalled_set_clients_are_cut_off_hold_up_no_one_and_resume_by_cursor_missing_nothing(make_stack) -> None:
    # (the jobs' logs keep all their events, so a resume far back reads them all rather than a snapshot)
    st: Stack = make_stack(workers=2, JOBCAST_STREAM_MAX_LAG_S="2", JOBCAST_MAX_STREAMS_PER_OWNER="0",
                           JOBCAST_EVENTS_KEPT="20000")
    jobs = [st.submit({"steps": 2500, "interval_ms": 2, "emit_output": True}) for _ in range(2)]
    path = "/events?" + "&".join(f"job={j['id']}" for j in jobs)
    before = _api_connections(st.port)
    stalled = []
    for _ in range(10):  # clients that read the first few KiB of the stream, then nothing, their sockets left open
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", st.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        stalled.append(sock)
    head = b""
    while head.count(b"\nid: c") < 20:  # (the first stalled client's first events, ids included)
        head += stalled[0].recv(4096)
    healthy = read_set(st.url, path, timeout=120)  # meanwhile, a client that reads all: nothing holds it up
    read_all_at = time.time()
    try:
        assert healthy.status == 200 and healthy.ended_by_server
        with st.client() as c:
            ended = [c.get(f"/jobs/{j['id']}").json() for j in jobs]
        last = {j["id"]: j["last_event_id"] for j in ended}
        _exact(healthy.events, [j["id"] for j in jobs], last)
        late = read_all_at - max(datetime.fromisoformat(j["ended_at"]).timestamp() for j in ended)
        assert late < 5, f"the healthy client got the end {late:.1f}s after it (10 stalled clients x 2 s held it?)"
        wait_for(lambda: _api_connections(st.port) <= before, 30, "the API to let go of the stalled connections")
        assert "set stream of anonymous: client too slow or gone" in st.log("api.log")
        # The first stalled client comes back with the cursor of the last whole event it read: it gets the rest.
        body = head.split(b"\r\n\r\n", 1)[1]
        blocks = body[:body.rfind(b"\n\n")].split(b"\n\n")
        got: list[SetEvent] = []
        for block in blocks:
            fields = dict(line.partition(b": ")[::2] for line in block.split(b"\n") if b": " in line)
            if b"data" in fields:  # (chunk sizes aside: each chunk here holds whole lines)
                got.append(SetEvent(fields[b"id"].decode() if b"id" in fields else None, fields[b"event"].decode(),
                                    orjson.loads(fields[b"data"])))
        cursor = next(e.id for e in reversed(got) if e.id is not None)
        got = got[:max(i for i, e in enumerate(got) if e.id == cursor) + 1]
        rest = read_set(st.url, path, cursor=cursor, timeout=60)
        assert rest.status == 200 and rest.ended_by_server
        _exact(got + rest.events, [j["id"] for j in jobs], last)
        print(f"10 stalled set clients cut off; the healthy one got {len(healthy.events)} events, the last "
              f"{late:.2f}s after the jobs ended; one stalled "
              f"client resumed from {cursor} with {len(rest.events)} more")
    finally:
        for sock in stalled:
            sock.close()
