"""The set stream (`GET /events`) over the hub, on fakeredis: a client that stops reading while more events
come than the hub's ring holds catches up from the owner's feed, and one within the ring from the ring only;
either gets every job's events once, in order; and what every stream asks of a job that joins is read once
for all of them."""

from __future__ import annotations

import asyncio
import re

import fakeredis
import orjson
from redis.exceptions import RedisError

from jobcast.settings import Settings
from jobcast.store import AsyncStore, Store
from jobcast.store.keys import Keys
from jobcast.store.subscription import Subscriptions
from jobcast.web import hub as hub_module
from jobcast.web.hub import Hub
from jobcast.web.jobfacts import JobFacts
from jobcast.web.jobsets import JobSet
from jobcast.web.sets import Follower, SetStream, open_set
from jobcast.web.sse import EventEncoder


def links(job_id: str, base: str = "") -> dict[str, str]:
    return {"self": f"{base}/jobs/{job_id}", "events": f"{base}/jobs/{job_id}/events",
            "cancel": f"{base}/jobs/{job_id}/cancel"}


def _events(body: bytes) -> list[tuple[str | None, str, dict]]:
    out = []
    for block in body.split(b"\n\n"):
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
        if b"data" in fields:
            out.append((fields[b"id"].decode() if b"id" in fields else None, fields[b"event"].decode(),
                        orjson.loads(fields[b"data"])))
    return out


def _stall_and_read(server: fakeredis.FakeServer, store: Store, settings: Settings, jobs: list[dict],
                    per_job: int, monkeypatch) -> tuple[bytes, list[int]]:
    """A set stream of `jobs` whose client stops reading after the first write while each job sends
    `per_job` items and ends, then reads on: what the client got, and the feed pages the stream read."""
    pages: list[int] = []
    read_page = Follower.page

    async def counted(self: Follower, after: int, until: int | None = None):  # type: ignore[no-untyped-def]
        pages.append(after)
        return await read_page(self, after, until)

    monkeypatch.setattr(Follower, "page", counted)

    async def scenario() -> bytes:
        encode = EventEncoder(links)
        astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
        hub = Hub(Subscriptions(fakeredis.FakeAsyncRedis(server=server)), Keys(settings.prefix), encode, astore)
        await hub.start()
        listener = await hub.listen_feed("anonymous")
        opened = await open_set(JobFacts(astore, encode), JobSet("anonymous", tuple(j["id"] for j in jobs)), None)
        stream = SetStream(hub, astore, encode, settings, listener, opened)
        body = bytearray()
        gate = asyncio.Event()

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and body:
                await gate.wait()  # the client stops reading after the first write
            body.extend(message.get("body", b""))

        async def receive() -> dict:
            await asyncio.Event().wait()
            return {}

        task = asyncio.create_task(stream({"type": "http"}, receive, send))

        def produce() -> None:
            for i in range(per_job):
                for job in jobs:
                    store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":%d}' % i,
                               raw=b"%d" % i)
            for job in jobs:
                store.emit(job["id"], "end", event="completed",
                           data=b'"id":"%s","status":"completed"}' % job["id"].encode(), fields={"status": "completed"})

        await asyncio.to_thread(produce)
        await asyncio.sleep(0.2)
        gate.set()
        await asyncio.wait_for(task, 20)  # a fixed list: it ends after the last terminal event
        await hub.stop()
        await astore.redis.aclose()
        return bytes(body)

    body = asyncio.run(scenario())
    events = _events(body)
    cursors = [int(i[1:]) for i, _, _ in events if i is not None]
    assert cursors == sorted(set(cursors)), "cursors only ever go up"
    for job in jobs:
        seen = [(name, data) for _, name, data in events if data["job_id"] == job["id"]]
        assert seen[0][0] == "snapshot" and seen[-1][0] == "completed"
        seqs = [data["seq"] for _, data in seen]
        assert seqs == list(range(int(job["seq"]), int(job["seq"]) + per_job + 2)), "a gap or a repeat"
        items = [data["item"] for name, data in seen if name == "output"]
        assert items == list(range(per_job))
    assert re.search(rb"^retry: ", body, re.M)
    return body, pages


def test_a_set_client_further_behind_than_the_ring_catches_up_from_the_feed_and_misses_nothing(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    monkeypatch.setattr(hub_module, "RING", 512)  # (a smaller ring: fewer events to fill)
    jobs = [new_job() for _ in range(3)]
    _, pages = _stall_and_read(server, store, settings, jobs, 512, monkeypatch)  # 3x the ring
    assert pages, "the stream never fell behind the ring: this tested nothing"


def test_a_set_client_behind_by_more_than_one_take_but_within_the_ring_reads_only_the_ring(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    """Once, a stream that took a whole take's worth (`TAKE`) read the feed from Redis next, on its own: with
    1,000 set streams that lagged for a moment, every one of them did, and the API's pool ran dry."""
    jobs = [new_job() for _ in range(3)]
    body, pages = _stall_and_read(server, store, settings, jobs, hub_module.TAKE, monkeypatch)
    assert len(body) > 3 * hub_module.TAKE * 40 and 3 * hub_module.TAKE < hub_module.RING
    assert pages == [], "it read the feed although the ring held every event it was behind by"


def test_events_a_jobs_log_no_longer_holds_come_as_one_snapshot_of_it_now(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job
) -> None:
    job = new_job()
    astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
    cursor = asyncio.run(astore.feed_position("anonymous"))
    for i in range(settings.events_kept + 200):  # the job's log keeps about events_kept; the feed keeps them all
        store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":%d}' % i, raw=b"%d" % i)

    async def resume() -> list[tuple[str, int]]:
        follower = Follower(JobSet("anonymous", (job["id"],)), JobFacts(astore, EventEncoder(links)))
        sent, at, more = [], cursor, True
        while more:
            got = await follower.page(at)
            assert got is not None
            entries, at, more = got
            sent += [(e.chunk.split(b"event: ", 1)[1].split(b"\n", 1)[0].decode(), e.job_seq) for e in entries]
        return sent

    sent = asyncio.run(resume())
    last = int(store.load(job["id"])["seq"])
    assert sent[0] == ("snapshot", last), sent[:3]  # the state now, covering what the log lost
    assert len(sent) == 1, "events the snapshot covers were sent again"


def test_a_job_joining_the_sets_of_50_streams_is_read_once_for_all_of_them(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
    cursor = asyncio.run(astore.feed_position("anonymous"))
    job = new_job()  # created after the streams' cursor: it joins their sets
    reads: list[str] = []
    for name in ("summaries", "snapshot", "events_after"):
        method = getattr(astore, name)

        async def counted(*args, _method=method, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            reads.append(_name)
            return await _method(*args, **kwargs)

        monkeypatch.setattr(astore, name, counted)

    async def streams() -> list[list[bytes]]:
        facts = JobFacts(astore, EventEncoder(links))
        followers = [Follower(JobSet("anonymous"), facts) for _ in range(50)]
        pages = await asyncio.gather(*(f.page(cursor) for f in followers))
        return [[e.chunk for e in got[0]] for got in pages if got is not None]

    sent = asyncio.run(streams())
    assert len(sent) == 50 and all(chunks == sent[0] for chunks in sent)
    assert b"event: snapshot" in sent[0][0] and f'"job_id":"{job["id"]}"'.encode() in sent[0][0]
    assert sorted(reads) == ["events_after", "snapshot", "summaries"], reads  # once each, not 50 times


def test_a_shared_read_that_failed_is_tried_again_by_the_next_stream(
    server: fakeredis.FakeServer, store: Store, settings: Settings, new_job, monkeypatch
) -> None:
    astore = AsyncStore(fakeredis.FakeAsyncRedis(server=server), settings)
    job = new_job()
    summaries = astore.summaries
    calls = []

    async def flaky(job_ids):  # type: ignore[no-untyped-def]
        calls.append(job_ids)
        if len(calls) == 1:
            raise RedisError("connection lost")
        return await summaries(job_ids)

    monkeypatch.setattr(astore, "summaries", flaky)

    async def twice() -> list[object]:
        facts = JobFacts(astore, EventEncoder(links))
        first = await asyncio.gather(facts.admissions([job["id"]]), facts.admissions([job["id"]]),
                                     return_exceptions=True)
        return [*first, await facts.admissions([job["id"]])]

    got = asyncio.run(twice())
    assert all(isinstance(g, RedisError) for g in got[:2]), "both waited on the one read, and both saw it fail"
    assert got[2] == [("demo", "{}")] and len(calls) == 2
