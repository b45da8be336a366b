"""What every set stream of an API process asks of a job that comes through its owner's feed, read from Redis
once for all of them: which sets admit the job (its type and tags), and, for a job that joins sets, its
`snapshot` as of its first event. Neither ever changes for a job, so 1,000 streams of one owner that see a
new job make two reads, not 2,000; streams that ask at the same time share the read in flight."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import orjson

from jobcast.store import AsyncStore, Snapshot
from jobcast.store.record import job_object, pending_webhook
from jobcast.web.hub import Entry
from jobcast.web.sse import EventEncoder

__all__ = ["Admission", "JobFacts", "joined"]

Admission = tuple[str, str | None] | None
"""A job's type and tags (JSON), or None for a job that is gone."""

K = TypeVar("K")
V = TypeVar("V")


class _Once(Generic[K, V]):
    """Values read at most once per key while they stay among the newest `size`; a read in flight is shared
    by everyone who asks meanwhile (and is not canceled when one of them goes); a failed read is not kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.kept: OrderedDict[K, V] = OrderedDict()
        self.pending: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, read: Callable[[K], Awaitable[V]]) -> V:
        if key in self.kept:
            return self.kept[key]
        return await asyncio.shield(self._reading(key, read))

    async def get_many(self, keys: list[K], read: Callable[[K], Awaitable[V]]) -> list[V]:
        """`get` of each key; the ones not kept are awaited together, as futures (no task each: when 1,000
        streams meet 20 new jobs at once, tasks were most of the API's time)."""
        got = {k: self.kept[k] for k in keys if k in self.kept}
        missing = [k for k in keys if k not in got]
        if missing:
            values = await asyncio.shield(asyncio.gather(*(self._reading(k, read) for k in missing)))
            got.update(zip(missing, values, strict=True))
        return [got[k] for k in keys]

    def _reading(self, key: K, read: Callable[[K], Awaitable[V]]) -> asyncio.Future[V]:
        future = self.pending.get(key)
        if future is None:
            future = self.pending[key] = asyncio.ensure_future(read(key))
            future.add_done_callback(lambda done: self._settle(key, done))
        return future

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        del self.pending[key]
        if done.cancelled() or done.exception() is not None:
            return
        self.kept[key] = done.result()
        if len(self.kept) > self.size:
            self.kept.popitem(last=False)


class JobFacts:
    """The set streams' shared reads (see the module's notes), and the store and encoder they use."""

    def __init__(self, store: AsyncStore, encode: EventEncoder, size: int = 10_000) -> None:
        self.store, self.encode = store, encode
        self._admissions: _Once[str, Admission] = _Once(size)
        self._joins: _Once[tuple[str, int], Entry | None] = _Once(size // 10)

    async def admissions(self, job_ids: list[str]) -> list[Admission]:
        """Each job's type and tags, or None for a job that is gone."""
        return await self._admissions.get_many(job_ids, self._admission)

    async def _admission(self, job_id: str) -> Admission:
        (summary,) = await self.store.summaries([job_id])
        return None if summary is None else (summary[1], summary[2])

    async def joined(self, job_id: str, n: int) -> Entry | None:
        """The `snapshot` of a job as of its first event, at place `n` of the feed (where that event is), or
        None for a job that is gone."""
        return await self._joins.get((job_id, n), self._joined)

    async def _joined(self, key: tuple[str, int]) -> Entry | None:
        job_id, n = key
        snap = await self.store.snapshot(job_id)
        _, _, first = await self.store.events_after(job_id, 0, 1)
        if snap is None or not first:
            return None
        return self.encode.feed_job(n, joined(snap, first[0].data), 1, False)


def joined(snap: Snapshot, first: bytes) -> dict[str, Any]:
    """The job object of a job as it was at its first event (`first`, that `state` event's data): how a job
    that joins a set later is first sent, so that the stream's cursor stays exact."""
    state = orjson.loads(first)
    record = dict(snap.record)
    record.update(status=state["status"], progress=str(state["progress"]), message=state["message"],
                  stage=state["stage"] or "", attempt=str(state["attempt"]), eta_s="", seq="1", result="",
                  error="", started_at="", ended_at="", text="",
                  queue_position="" if state["queue_position"] is None else str(state["queue_position"]))
    if record.get("webhook"):
        record["webhook"] = pending_webhook(orjson.loads(record["webhook"])["url"])
    return job_object(record, [], state["queue_position"], webhook_url=False)
