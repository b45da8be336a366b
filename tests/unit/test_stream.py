"""The SSE response over the hub: a slow client falls behind and catches up from the log, losing nothing.

Runs on fakeredis, which is also what `jobcast dev` uses when no redis-server is installed.
"""

from __future__ import annotations

import asyncio
import re

import fakeredis
import orjson

from jobcast import hub as hub_module
from jobcast.hub import Hub
from jobcast.keys import Keys
from jobcast.settings import Settings
from jobcast.sse import EventEncoder, EventStream, backlog
from jobcast.store import AsyncStore, Store


def links(job_id: str) -> dict[str, str]:
    return {"self": f"/jobs/{job_id}", "events": f"/jobs/{job_id}/events", "cancel": f"/jobs/{job_id}/cancel"}


def _ids(body: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^id: (\d+)$", body, re.M)]


def test_a_slow_client_catches_up_from_the_log(server: fakeredis.FakeServer, store: Store, settings: Settings,
                                                new_job) -> None:
    job = new_job()
    job_id = job["id"]
    n_events = hub_module.MAX_BUFFERED * 3

    async def scenario() -> tuple[bytes, bool]:
        encode = EventEncoder(links)
        hub = Hub(fakeredis.FakeAsyncRedis(server=server), Keys(settings.prefix), encode)
        await hub.start()
        astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
        listener = await hub.listen(job_id)
        first = await backlog(astore, encode, job_id, None)
        assert first is not None
        stream = EventStream(hub, astore, encode, settings, listener, first)
        body = bytearray()
        gate = asyncio.Event()
        fell_behind = []

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
        while not listener.behind and not listener.entries:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        fell_behind.append(listener.behind)
        gate.set()
        await asyncio.wait_for(task, 10)
        await hub.stop()
        await astore.redis.aclose()
        return bytes(body), fell_behind[0]

    body, fell_behind = asyncio.run(scenario())
    assert fell_behind, "the listener should have overflowed its inbox"
    ids = _ids(body)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert ids[-1] == int(job["seq"]) + n_events + 1
    assert body.startswith(b"retry: 2000\n\n")
    last = body.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert last.startswith(b"data: ") and orjson.loads(last[6:])["links"]["self"] == f"/jobs/{job_id}"


def test_the_hub_keeps_its_link_alive_and_serves_many_listens_at_once(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    monkeypatch.setattr(hub_module, "KEEPALIVE_S", 0.05)
    jobs = [new_job() for _ in range(10)]

    async def scenario() -> list[list]:
        hub = Hub(fakeredis.FakeAsyncRedis(server=server), Keys(settings.prefix), EventEncoder(links))
        await hub.start()
        await asyncio.sleep(0.3)  # quiet for several keep-alive rounds: the hub pings, Redis answers
        assert hub.connected
        listeners = await asyncio.gather(*(hub.listen(j["id"]) for j in jobs for _ in range(3)))
        for j in jobs:
            await asyncio.to_thread(store.emit, j["id"], "item", event="output", data=b'{"kind":"item","item":1}',
                                    raw=b"1")
        async with asyncio.timeout(5):
            while not all(lst.entries for lst in listeners):
                await asyncio.sleep(0.01)
        got = [lst.take() for lst in listeners]
        for lst in listeners:
            await hub.unlisten(lst)
        assert hub.stream_count == 0
        async with asyncio.timeout(5):  # stopping mid keep-alive wait must not hang
            await hub.stop()
        return got

    got = asyncio.run(scenario())
    assert all(len(entries) == 1 and entries[0][0] == 3 for entries in got)
