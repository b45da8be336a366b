"""The SSE response over the hub: a slow client falls behind and catches up from the log, losing nothing.

Runs on fakeredis, which is also what `jobcast dev` uses when no redis-server is installed.
"""

from __future__ import annotations

import asyncio
import re

import fakeredis
import orjson

from jobcast.settings import Settings
from jobcast.store import AsyncStore, Store
from jobcast.store.keys import Keys
from jobcast.store.subscription import Subscriptions
from jobcast.web import hub as hub_module
from jobcast.web.hub import Entry, Hub, Listener
from jobcast.web.sse import TRANSPORT, EventEncoder, EventStream, backlog


def links(job_id: str, base: str = "") -> dict[str, str]:
    job = f"{base}/jobs/{job_id}"
    return {"self": job, "events": f"{job}/events", "cancel": f"{job}/cancel"}


def _ids(body: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^id: (\d+)$", body, re.M)]


def _stream_scenario(server: fakeredis.FakeServer, store: Store, settings: Settings, job_id: str, n_events: int,
                     after: int | None, stall_first: bool) -> tuple[bytes, Hub]:
    """Stream one job to a client that (if `stall_first`) stops reading after the first write while
    `n_events` items and the end are emitted; return what the client got."""

    async def scenario() -> tuple[bytes, Hub]:
        encode = EventEncoder(links)
        astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
        hub = Hub(Subscriptions(fakeredis.FakeAsyncRedis(server=server)), Keys(settings.prefix), encode, astore)
        await hub.start()
        listener = await hub.listen(job_id)
        first = await backlog(astore, encode, job_id, after)
        assert first is not None
        stream = EventStream(hub, astore, encode, settings, listener, first)
        body = bytearray()
        gate = asyncio.Event()
        if not stall_first:
            gate.set()

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and body:
                await gate.wait()  # the client stops reading after the first write
            body.extend(message.get("body", b""))

        async def receive() -> dict:
            await asyncio.Event().wait()
            return {}

        task = asyncio.create_task(stream({"type": "http"}, receive, send))

        def produce() -> None:
            for i in range(n_events):
                store.emit(job_id, "item", event="output", data=b'{"kind":"item","item":%d}' % i, raw=b"%d" % i)
            store.emit(job_id, "end", event="completed", data=b'"id":"%s","status":"completed"}' % job_id.encode(),
                       fields={"status": "completed"})

        await asyncio.to_thread(produce)
        await asyncio.sleep(0.2)
        gate.set()
        await asyncio.wait_for(task, 10)
        await hub.stop()
        await astore.redis.aclose()
        return bytes(body), hub

    return asyncio.run(scenario())


def test_a_client_further_behind_than_the_ring_gets_a_snapshot_and_continues(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    monkeypatch.setattr(hub_module, "RING", 512)  # (a smaller ring: fewer events to fill)
    job = new_job()
    n_events = hub_module.RING * 3
    body, _ = _stream_scenario(server, store, settings, job["id"], n_events, None, stall_first=True)
    assert body.startswith(b"retry: 2000\n\n")
    names = re.findall(rb"^event: (\w+)$", body, re.M)
    assert names[0] == b"snapshot"
    ids = _ids(body)
    assert ids == sorted(set(ids)), "ids only ever go up"
    assert ids[-1] == int(job["seq"]) + n_events + 1
    # it fell behind the ring while it did not read, so it got the job's state as the end (no gap shown)
    assert len(ids) < n_events
    last = body.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert last.startswith(b"data: ") and orjson.loads(last[6:])["links"]["self"] == f"/jobs/{job['id']}"


def test_a_client_resuming_far_back_reads_the_log_in_pages_and_misses_nothing(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job
) -> None:
    job = new_job()
    for i in range(700):  # more than two pages of the log before the client connects
        store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":%d}' % i, raw=b"%d" % i)
    body, _ = _stream_scenario(server, store, settings, job["id"], 300, after=int(job["seq"]), stall_first=False)
    ids = _ids(body)
    assert ids == list(range(int(job["seq"]) + 1, int(job["seq"]) + 1000 + 2))
    assert b"event: snapshot" not in body


def test_the_hub_keeps_its_link_alive_and_serves_many_listens_at_once(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    monkeypatch.setattr(hub_module, "KEEPALIVE_S", 0.05)
    jobs = [new_job() for _ in range(10)]

    async def scenario() -> list[list]:
        astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
        subscriptions = Subscriptions(fakeredis.FakeAsyncRedis(server=server))
        hub = Hub(subscriptions, Keys(settings.prefix), EventEncoder(links), astore)
        await hub.start()
        await asyncio.sleep(0.3)  # quiet for several keep-alive rounds: the hub pings, Redis answers
        assert hub.connected
        listeners = await asyncio.gather(*(hub.listen(j["id"]) for j in jobs for _ in range(3)))
        for j in jobs:
            await asyncio.to_thread(store.emit, j["id"], "item", event="output", data=b'{"kind":"item","item":1}',
                                    raw=b"1")
        async with asyncio.timeout(5):
            while not all(hub.after(lst, 2) for lst in listeners):
                await asyncio.sleep(0.01)
        got = [[e.seq for e in hub.after(lst, 2) or []] for lst in listeners]
        for lst in listeners:
            await hub.unlisten(lst)
        assert hub.stream_count == 0
        async with asyncio.timeout(5):  # stopping mid keep-alive wait must not hang
            await hub.stop()
        await astore.redis.aclose()
        return got

    got = asyncio.run(scenario())
    assert all(seqs == [3] for seqs in got)


def test_a_ring_of_large_events_keeps_at_most_ring_bytes_of_them() -> None:
    channel = hub_module._Channel("j")
    for seq in range(1, 11):
        channel.add(Entry(seq, b"x" * (1024 * 1024), False, 0.0))
    assert [e.seq for e in channel.ring] == [7, 8, 9, 10] and channel.held == hub_module.RING_BYTES


class _Transport:
    """A server's transport as `StreamTransport` puts it in the scope: it only notes an abort."""

    aborted = False

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> None:
        return None


def test_a_client_slow_to_take_the_last_write_gets_the_end_not_a_reset(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job
) -> None:
    """The end of a response once had 1 s to be taken, then the connection was reset: a client still reading
    a hot job's last events (220 of them on one process, in `test_fanout_faults`) lost its terminal event."""
    job = new_job()

    async def scenario() -> tuple[bool, bytes]:
        encode = EventEncoder(links)
        astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
        hub = Hub(Subscriptions(fakeredis.FakeAsyncRedis(server=server)), Keys(settings.prefix), encode, astore)
        await hub.start()
        listener = await hub.listen(job["id"])
        first = await backlog(astore, encode, job["id"], None)
        assert first is not None
        stream = EventStream(hub, astore, encode, settings, listener, first)
        transport, body = _Transport(), bytearray()

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and not message["more_body"]:
                await asyncio.sleep(1.5)  # the client is still taking what came before
            body.extend(message.get("body", b"") + (b"<end>" if message.get("more_body") is False else b""))

        async def receive() -> dict:
            await asyncio.Event().wait()
            return {}

        task = asyncio.create_task(stream({"type": "http", TRANSPORT: transport}, receive, send))
        await asyncio.to_thread(store.emit, job["id"], "end", event="completed", fields={"status": "completed"},
                                data=b'"id":"%s","status":"completed"}' % job["id"].encode())
        await asyncio.wait_for(task, 10)
        await hub.stop()
        await astore.redis.aclose()
        return transport.aborted, bytes(body)

    aborted, body = asyncio.run(scenario())
    assert not aborted and b"event: completed" in body and body.endswith(b"<end>")


def test_the_ring_gives_a_listener_what_came_after_its_last_id_from_either_end() -> None:
    hub = Hub(None, Keys("t"), None, None)  # type: ignore[arg-type]  # (`after` reads only the channels)
    listener = Listener("j", b"ch")
    channel = hub._channels[b"ch"] = hub_module._Channel("j")
    channel.listeners.add(listener)  # (at id 0: the ring keeps everything)
    for seq in range(1, 1001):
        channel.add(Entry(seq, b"%d" % seq, False, 0.0))
    for last in (0, 10, 499, 500, 501, 700, 990, 999):
        got = hub.after(listener, last, limit=64)
        assert got is not None and [e.seq for e in got] == list(range(last + 1, min(last + 65, 1001))), last
    assert hub.after(listener, 1000) == []
