"""Reading job records for the API: `AsyncStore`, and the shapes its reads come back in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis as AsyncRedis

from jobcast.settings import Settings
from jobcast.store.capacity import WINDOW_MS, ModelInUse
from jobcast.store.keys import Keys
from jobcast.store.record import job_object, now_ms
from jobcast.store.scripts import CARRY_LUA, DELETE_IF_SAME_LUA, SNAPSHOT_LUA
from jobcast.store.writer import count_submission

__all__ = ["AsyncStore", "Event", "FeedEvent", "IDEMPOTENCY_TTL_S", "Snapshot", "logged_data"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent read of a job: its record, output items and live queue position."""

    record: dict[str, str]
    items: list[bytes]
    queue_position: int | None

    @property
    def owner(self) -> str:
        return self.record["owner"]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def seq(self) -> int:
        return int(self.record["seq"])

    def job_object(self, *, webhook_url: bool = True) -> dict[str, Any]:
        return job_object(self.record, self.items, self.queue_position, webhook_url=webhook_url)


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    name: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event of an owner's feed: its place there, the job and the job's own event id, and the event as the
    job's log has it (`name` None when the log no longer holds it, or the job is gone)."""

    n: int
    job_id: str
    seq: int
    name: bytes | None
    data: bytes


STATE_KEYS = ("status", "progress", "message", "stage", "attempt", "queue_position", "eta_s", "ts")


def logged_data(name: bytes, data: bytes) -> bytes:
    """An event's data as clients get it: the log keeps a `state` event's values as an array (`state_json`),
    its time as digits (`20261125120000120` for `2026-11-25T12:00:00.120Z`), a job's usage after it if any."""
    if name != b"state" or not data.startswith(b"["):
        return data
    values = orjson.loads(data)
    ts = len(STATE_KEYS) - 1
    if isinstance(values[ts], int):  # (arrays of an earlier version kept the ISO string: left as it is)
        d = str(values[ts])
        values[ts] = f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}.{d[14:17]}Z"
    keys = STATE_KEYS + ("usage",) if len(values) > len(STATE_KEYS) else STATE_KEYS
    return orjson.dumps(dict(zip(keys, values, strict=True)))




def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[1])




IDEMPOTENCY_TTL_S = 86400
"""How long an Idempotency-Key holds its job (24 h)."""


class AsyncStore:
    """Asynchronous reads for the API."""

    def __init__(self, redis: AsyncRedis, settings: Settings) -> None:
        self.redis = redis
        self.keys = Keys(settings.prefix)
        self._snapshot = redis.register_script(SNAPSHOT_LUA)
        self._carry = redis.register_script(CARRY_LUA)
        self._delete_if_same = redis.register_script(DELETE_IF_SAME_LUA)
        self._queue, self._queue_key = settings.queue, Keys.rq_queue(settings.queue)

    # -- what the API keeps of its requests: Idempotency-Key claims and the owners' submit counts ------

    async def claim(self, claim_key: str, claim: str) -> bool:
        """Take an Idempotency-Key (`Keys.idempotency`) for `claim`, for 24 h; False if it is taken."""
        return bool(await self.redis.set(claim_key, claim, nx=True, ex=IDEMPOTENCY_TTL_S))

    async def claimed(self, claim_key: str) -> tuple[str, int] | None:
        """Who holds an Idempotency-Key, and since how long (ms, by Redis's clock: no host's clock is
        trusted); None if nobody does."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(claim_key)
            pipe.pttl(claim_key)
            raw, ttl_ms = await pipe.execute()
        return None if raw is None else (cast(bytes, raw).decode(), IDEMPOTENCY_TTL_S * 1000 - max(0, int(ttl_ms)))

    async def release(self, claim_key: str, claim: str | None = None) -> None:
        """Let go of an Idempotency-Key: unless another request holds it by now, with `claim`."""
        if claim is None:
            await self.redis.delete(claim_key)
        else:
            await self._delete_if_same(keys=[claim_key], args=[claim])

    async def submissions(self, rate_key: str) -> int:
        """The owner's accepted submissions in the minute of `rate_key` (`Keys.submit_rate`)."""
        return int(await self.redis.get(rate_key) or 0)

    async def count_submission_now(self, rate_key: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            count_submission(pipe, rate_key)
            await pipe.execute()

    async def figures(self, queues: list[str]) -> tuple[dict[bytes, bytes], list[int], int, int]:
        """What `/metrics` reads of Redis, in one round trip: the stats hash, each RQ queue's depth, and how
        many jobs are delayed and running."""
        keys = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.stats)
            for queue in queues:
                pipe.llen(keys.rq_queue(queue))
            pipe.zcard(keys.delayed)
            pipe.zcard(keys.running)
            stats, *depths, delayed, running = await pipe.execute()
        return stats, depths, delayed, running

    async def model_in_use(self, model: str) -> ModelInUse:
        """The model's capacity in use now, across every worker: its calls in flight (leases not expired), and
        the requests and tokens of the last minute (`JOBCAST_MODEL_RPM`, `JOBCAST_MODEL_TPM`)."""
        now, k = now_ms(), self.keys
        in_flight = await self.redis.zcount(k.model_leases(model), now, "+inf")
        minute = cast(list[bytes], await self.redis.zrangebyscore(k.model_window(model), f"({now - WINDOW_MS}", "+inf"))
        tokens = await self.redis.hmget(k.model_tokens(model), minute) if minute else []
        return ModelInUse(int(in_flight), len(minute), sum(int(t) for t in tokens if t))

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        """Raises unless Redis answers."""
        await self.redis.ping()

    async def workers_alive(self, queue: str) -> int:
        """How many RQ workers that listen on `queue` are alive: registered, and beating (`Keys.alive`).

        RQ keeps a killed worker's registration for minutes (its TTL is 420 s and up);
        jobcast's beat goes `JOBCAST_HEARTBEAT_S` after the worker's last sign of life.
        """
        registered = cast(set[bytes], await self.redis.smembers(self.keys.rq_workers(queue)))
        names = [Keys.rq_worker_name(k) for k in registered]
        return int(await self.redis.exists(*map(self.keys.alive, names))) if names else 0

    async def _to_snapshot(self, reply: Any) -> Snapshot | None:
        if reply is None:
            return None
        flat, items, position, *elsewhere = reply
        record = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        if elsewhere:  # queued in a queue other than today's `JOBCAST_QUEUE`
            position = await self.redis.lpos(Keys.rq_queue(elsewhere[0].decode()), record["rq_id"])
        return Snapshot(record, items, position)

    def _snapshot_keys(self, job_id: str) -> list[str]:
        return [self.keys.job(job_id), self.keys.items(job_id), self._queue_key]

    async def snapshot(self, job_id: str) -> Snapshot | None:
        reply = await self._snapshot(keys=self._snapshot_keys(job_id), args=[self._queue])
        return await self._to_snapshot(reply)

    async def snapshots(self, job_ids: list[str]) -> list[Snapshot | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                await self._snapshot(keys=self._snapshot_keys(job_id), args=[self._queue], client=pipe)
            replies = await pipe.execute()
        return [await self._to_snapshot(r) for r in replies]

    async def summaries(self, job_ids: list[str]) -> list[tuple[str, str, str | None] | None]:
        """Each job's status, type and tags (JSON), or None for a job that is gone: what a listing filters on."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), ["status", "type", "tags"])
            replies = await pipe.execute()
        out: list[tuple[str, str, str | None] | None] = []
        for status, jtype, tags in replies:
            out.append(None if status is None else (status.decode(), (jtype or b"").decode(),
                                                    tags.decode() if tags else None))
        return out

    async def head(self, job_id: str) -> tuple[str, str, int] | None:
        """The owner, status and last event id of a job, or None if there is no such job."""
        reply = await self.redis.hmget(self.keys.job(job_id), ["owner", "status", "seq"])
        owner, status, seq = cast(list[bytes | None], reply)
        if owner is None or status is None or seq is None:
            return None
        return owner.decode(), status.decode(), int(seq)

    async def events_after(self, job_id: str, after: int, count: int) -> tuple[int, int, list[Event]]:
        """The oldest and newest event ids still kept (0, 0 if none), and up to `count` kept events after `after`."""
        key = self.keys.events(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrevrange(key, "+", "-", count=1)
            pipe.xrange(key, f"(0-{after}", "+", count=count)
            oldest, newest, entries = await pipe.execute()
        events = [Event(_seq(eid), f[b"e"], logged_data(f[b"e"], f[b"d"])) for eid, f in entries]
        return (_seq(oldest[0][0]) if oldest else 0), (_seq(newest[0][0]) if newest else 0), events

    async def carry(self, job_ids: list[str], owner: str | None = None) -> None:
        """Carry jobs over from the Redis that wrote them last, if it was another (a failover, a restart:
        `SEQ_JUMP` in `lua/lib.lua`), before a client that holds ids this one may never have had gets their
        snapshots; with `owner`, only that owner's jobs."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(k.job(job_id), "owner")
            owners = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, raw in zip(job_ids, owners, strict=True):
                of = raw.decode() if raw is not None else None
                if of is not None and owner in (None, of):
                    await self._carry(keys=[k.job(job_id), k.events(job_id), k.feed(of), k.feed_primary(of)],
                                      client=pipe)
            await pipe.execute()

    async def last_event(self, job_id: str) -> Event | None:
        """The newest event kept in the job's log."""
        rows = cast(list[tuple[bytes, dict[bytes, bytes]]],
                    await self.redis.xrevrange(self.keys.events(job_id), "+", "-", count=1))
        if not rows:
            return None
        eid, f = rows[0]
        return Event(_seq(eid), f[b"e"], logged_data(f[b"e"], f[b"d"]))

    # -- an owner's feed: every event of its jobs, in order (the streams of many jobs) ----------------

    async def feed_position(self, owner: str) -> int:
        """The place of the newest event in the owner's feed (0: none yet)."""
        rows = cast(list[tuple[bytes, Any]], await self.redis.xrevrange(self.keys.feed(owner), "+", "-", count=1))
        return _seq(rows[0][0]) if rows else 0

    async def feed_after(self, owner: str, after: int, count: int) -> tuple[int, list[FeedEvent]]:
        """The oldest place the owner's feed still holds (0: none), and up to `count` of its events after
        `after`, each with its data read from its job's log (one request for the page)."""
        key = self.keys.feed(owner)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrange(key, f"(0-{after}", "+", count=count)
            oldest, rows = await pipe.execute()
        entries = [(_seq(eid), f[b"j"].decode(), int(f[b"s"])) for eid, f in rows]
        spans: dict[str, list[int]] = {}
        for _, job_id, seq in entries:
            span = spans.setdefault(job_id, [seq, seq])
            span[0], span[1] = min(span[0], seq), max(span[1], seq)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, (low, high) in spans.items():
                pipe.xrange(self.keys.events(job_id), f"0-{low}", f"0-{high}")
            logs = await pipe.execute() if spans else []
        found: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        for job_id, rows_of_job in zip(spans, logs, strict=True):
            for eid, f in rows_of_job:
                found[(job_id, _seq(eid))] = (f[b"e"], logged_data(f[b"e"], f[b"d"]))
        events = []
        for n, job_id, seq in entries:
            name, data = found.get((job_id, seq), (None, b""))
            events.append(FeedEvent(n, job_id, seq, name, data))
        return (_seq(oldest[0][0]) if oldest else 0), events

    async def owner_jobs(self, owner: str) -> list[str]:
        """Every job id in the owner's index, oldest first (some may have expired: their snapshot is None)."""
        rows = cast(list[bytes], await self.redis.zrange(self.keys.owner(owner), 0, -1))
        return [r.decode().split(":", 1)[1] for r in rows]

    async def owner_page(self, owner: str, after: str | None, count: int) -> list[str]:
        """Up to `count` entries of the owner's index, newest first, strictly after the entry `after`.

        Entries are `"{created_ms:015d}:{id}"`, all at score 0, so the index is
        ordered by creation time and then id, and a cursor is exact even for jobs
        created in the same millisecond.
        """
        rows = await self.redis.zrange(
            self.keys.owner(owner), f"({after}" if after else "+", "-", desc=True, bylex=True, offset=0, num=count
        )
        return [r.decode() for r in cast(list[bytes], rows)]

    async def forget_owner_entries(self, owner: str, entries: list[str]) -> None:
        """Drop entries whose records have expired from the owner's index."""
        if entries:
            await self.redis.zrem(self.keys.owner(owner), *entries)
