"""The API process's one pub/sub connection, fanning job events out to its streams.

Each open event stream registers a `Listener` for its job (a stream of many
jobs, for its owner's feed: the same machinery, with the feed's places for
ids). The hub subscribes to the job's channel when its first listener arrives
(and only returns once Redis has confirmed the subscription, so a stream that
reads its backlog afterwards cannot miss an event in between), unsubscribes
when the last one leaves, and keeps each watched job's recent events, encoded
once, in a ring that all of the job's listeners read from.

A listener holds no events of its own: it is woken, and its stream takes what
came after the last id it sent from the ring. So a listener that falls behind
costs nothing until it reads, and catching up costs the same whatever the
number of listeners. A listener further behind than the ring is told so
(`after` returns None) and its stream sends a `snapshot`, read once for all of
the job's listeners that need one at the time (`snapshot`). The ring keeps at
most `RING` events (and `RING_BYTES`), and drops those every listener has
sent; a stream takes at most `TAKE` of them at once.

When the connection to Redis breaks, the hub reconnects at once and then reads
what it missed from each job's log, once per job and in pages (`_repair`),
into the ring; if Redis stays away, it ends every stream (their clients
reconnect, and get `503` until Redis is back) and keeps trying in the
background.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from jobcast.errors import Unavailable
from jobcast.store import AsyncStore, Snapshot
from jobcast.store.keys import Keys
from jobcast.store.subscription import Subscription, Subscriptions
from jobcast.web.metrics import STREAMS_OPEN

__all__ = ["Entry", "Hub", "Listener", "RING", "TAKE"]

log = logging.getLogger("jobcast.hub")

RING = 4096
"""Events of one job (or of one owner's feed) the hub keeps at most; a listener further behind gets a
snapshot (a set stream: reads the feed itself). At 1,000 events a second to 1,000 listeners, a ring of 512
was less than one stall of a loaded process (a full garbage collection took 0.2-0.3 s here)."""

RING_BYTES = 4 * 1024 * 1024
"""And their bytes at most: a job's items can be large."""

TAKE = 512
"""The most events a stream takes from a ring at once."""

TRIM_EVERY = 64
"""A ring drops what every listener has sent once this many events have come since it last looked."""

REPAIR_PAGE = 256
"""Events read from a job's log per request when the hub fills in what it missed."""

SUBSCRIBE_TIMEOUT_S = 5.0

KEEPALIVE_S = 5.0
"""After this long without a word from Redis the hub sends PING; after twice as long it reconnects."""

_RESYNC = object()
"""In a channel's confirmation queue: when this subscription is confirmed, fill in what was missed."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One event, ready to send."""

    seq: int
    chunk: bytes
    """The event in SSE format."""
    terminal: bool
    at: float
    """When the hub received it (monotonic), to tell how far behind a stream is."""
    links_at: int = -1
    """Where the job object's `links` start in `chunk` (a snapshot or terminal event), whose paths each stream
    puts its own base URL in front of (`EventStream`); -1: no links."""
    job_id: str = ""
    """In an owner's feed (where `seq` is the place in the feed): the job the event is of."""
    job_seq: int = 0
    """In an owner's feed: the event's id in its job's own log."""


class Encoder(Protocol):
    """Turns an event as Redis publishes it into an `Entry` (`sse.EventEncoder`)."""

    def __call__(self, job_id: str, seq: int, name: bytes, data: bytes) -> Entry: ...

    def feed_entry(self, n: int, job_id: str, seq: int, name: bytes, data: bytes) -> Entry: ...


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Listener:
    """One event stream's place in its job's channel, and what wakes the stream.

    (Not an `asyncio.Event`: an open stream holds one for hours, and an Event's deque of waiters alone is
    over 600 bytes; the stream waits on a future of its own here, made only while it waits.)
    """

    __slots__ = ("job_id", "channel", "owner", "token", "last", "closed", "_woken", "_waiter")

    def __init__(self, job_id: str, channel: bytes, owner: str = "", token: str = "") -> None:
        self.job_id = job_id
        self.channel = channel
        self.owner = owner
        self.token = token
        """The stream token the stream was opened with ('' for an API key)."""
        self.last = 0
        """The id of the last event its stream sent (the stream keeps it up to date)."""
        self.closed = False
        """The stream must end (client gone, shutdown, Redis lost)."""
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """There is something for the stream: its next (or current) `wait` returns True."""
        self._woken = True
        if self._waiter is not None:
            _expire(self._waiter)

    async def wait(self, timeout: float | None = None) -> bool:
        """Until woken (True; the wake is used up) or `timeout` seconds have passed (False)."""
        if not self._woken:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiter = None
        woken, self._woken = self._woken, False
        return woken

    def close(self) -> None:
        self.closed = True
        self.wake()


class _Channel:
    """A watched job: its listeners, its recent events, and the shared reads that serve them."""

    __slots__ = ("job_id", "feed_owner", "listeners", "ring", "held", "newest", "since_trim", "repairing",
                 "missed", "snapshot")

    def __init__(self, job_id: str, feed_owner: str | None = None) -> None:
        self.job_id = job_id
        self.feed_owner = feed_owner
        """Set for an owner's feed (its ids are places in the feed), None for a job's channel."""
        self.listeners: set[Listener] = set()
        self.ring: deque[Entry] = deque()
        """Consecutive events, oldest first."""
        self.held = 0
        """The bytes of the ring's events."""
        self.newest = 0
        """The newest id the ring has held (0: none yet)."""
        self.since_trim = 0
        self.repairing = False
        """Filling in from the log what the hub missed: live messages are only noted meanwhile."""
        self.missed = 0
        """The newest id seen live while repairing."""
        self.snapshot: asyncio.Task[Snapshot | None] | None = None

    def add(self, entry: Entry) -> None:
        ring = self.ring
        if ring and entry.seq != ring[-1].seq + 1:
            ring.clear()  # (only after a repair could not reach back: listeners behind get snapshots)
            self.held = 0
        ring.append(entry)
        self.held += len(entry.chunk)
        self.newest = entry.seq
        while len(ring) > RING or (self.held > RING_BYTES and len(ring) > 1):
            self.held -= len(ring.popleft().chunk)
        self.since_trim += 1
        if self.since_trim >= TRIM_EVERY:
            self.since_trim = 0
            slowest = min((lst.last for lst in self.listeners), default=entry.seq)
            while ring and ring[0].seq <= slowest:
                self.held -= len(ring.popleft().chunk)

    def wake_all(self) -> None:
        for listener in self.listeners:
            listener.wake()


def _count(counts: dict[str, int], key: str, by: int) -> None:
    left = counts.get(key, 0) + by
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class Hub:
    def __init__(self, subscriptions: Subscriptions, keys: Keys, encode: Encoder, store: AsyncStore) -> None:
        """`subscriptions` makes the hub's pub/sub connection; `store` reads the logs and snapshots."""
        self._subscriptions = subscriptions
        self._keys = keys
        self._encode = encode
        self._store = store
        self._channels: dict[bytes, _Channel] = {}
        self._confirms: dict[bytes, deque[object]] = {}
        self._pubsub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._repairs: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._stopping = False
        self.streams_by_owner: dict[str, int] = {}
        self.streams_by_token: dict[str, int] = {}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stream_count(self) -> int:
        return sum(len(ch.listeners) for ch in self._channels.values())

    async def start(self, wait_s: float = 5.0) -> None:
        self._task = asyncio.create_task(self._run(), name="jobcast-hub")
        try:
            await asyncio.wait_for(self._connected.wait(), wait_s)
        except TimeoutError:
            log.warning("Redis pub/sub is not reachable yet; streams answer 503 until it is")

    async def stop(self) -> None:
        self._stopping = True
        self.close_all()
        for repair in self._repairs:
            repair.cancel()
        task, pubsub = self._task, self._pubsub
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done and pubsub is not None:
                # redis-py can swallow the cancellation of a read in progress: end the read by closing.
                with contextlib.suppress(Exception):
                    await pubsub.close()
                await asyncio.wait({task}, timeout=2)
        await self._subscriptions.aclose()

    def close_all(self) -> None:
        """End every open stream (shutdown, or Redis gone)."""
        for ch in self._channels.values():
            for listener in ch.listeners:
                listener.close()

    # -- what streams call -------------------------------------------------------

    async def listen(self, job_id: str, owner: str = "", token: str = "") -> Listener:
        """A listener for `job_id`, returned once its channel's subscription is confirmed."""
        return await self._listen(Listener(job_id, self._keys.channel(job_id).encode(), owner, token))

    async def listen_feed(self, owner: str, token: str = "") -> Listener:
        """A listener for every event of `owner`'s jobs (its feed), returned once subscribed."""
        return await self._listen(Listener("", self._keys.feed_channel(owner).encode(), owner, token), feed=True)

    async def _listen(self, listener: Listener, feed: bool = False) -> Listener:
        pubsub = self._pubsub
        if pubsub is None or not self.connected:
            raise Unavailable()
        key, owner, token = listener.channel, listener.owner, listener.token
        _count(self.streams_by_owner, owner, 1)
        if token:
            _count(self.streams_by_token, token, 1)
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = _Channel(listener.job_id, owner if feed else None)
        ch.listeners.add(listener)
        STREAMS_OPEN.inc()
        confirms = self._confirms.setdefault(key, deque())
        try:
            if len(ch.listeners) == 1:
                confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                confirms.append(confirmed)
                await pubsub.subscribe(key)
            else:
                futures = [c for c in confirms if isinstance(c, asyncio.Future)]
                if not futures:
                    return listener
                confirmed = futures[-1]
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT_S)
        except BaseException as exc:
            await self.unlisten(listener)
            if isinstance(exc, (RedisError, OSError, TimeoutError, Unavailable)):
                raise Unavailable() from None
            raise
        return listener

    async def unlisten(self, listener: Listener) -> None:
        ch = self._channels.get(listener.channel)
        if ch is None or listener not in ch.listeners:
            return
        ch.listeners.discard(listener)
        STREAMS_OPEN.dec()
        _count(self.streams_by_owner, listener.owner, -1)
        if listener.token:
            _count(self.streams_by_token, listener.token, -1)
        if ch.listeners:
            return
        del self._channels[listener.channel]  # and its ring with it
        if self._pubsub is not None and self.connected:
            try:
                await self._pubsub.unsubscribe(listener.channel)
            except (RedisError, OSError):
                pass  # the connection is going; the reader loop deals with it

    def after(self, listener: Listener, last: int, limit: int = TAKE) -> list[Entry] | None:
        """The ring's events after `last` (at most `limit`), or None if the ring no longer reaches back to
        `last + 1`: the listener is too far behind (or the hub is still filling in what it missed)."""
        ch = self._channels.get(listener.channel)
        if ch is None or ch.repairing:
            return []
        ring = ch.ring
        if not ring or ring[-1].seq <= last:
            return None if ch.newest > last else []
        if ring[0].seq > last + 1:
            return None
        start = last + 1 - ring[0].seq
        stop = min(len(ring), start + limit)
        if start > len(ring) // 2:  # (a deque is walked from one end: from the nearer one)
            return list(itertools.islice(reversed(ring), len(ring) - stop, len(ring) - start))[::-1]
        return list(itertools.islice(ring, start, stop))

    async def snapshot(self, listener: Listener) -> Snapshot | None:
        """The job's current state for a listener too far behind the ring; one read serves every listener
        of the job that asks while it is under way."""
        ch = self._channels.get(listener.channel)
        if ch is None:
            return await self._store.snapshot(listener.job_id)
        if ch.snapshot is None or ch.snapshot.done():
            ch.snapshot = asyncio.ensure_future(self._store.snapshot(listener.job_id))
        return await asyncio.shield(ch.snapshot)

    # -- the reader --------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.0
        while not self._stopping:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke the link, the cure is the same: reconnect
                if self._stopping:
                    # Python 3.11's asyncio.timeout can turn our cancellation into a TimeoutError.
                    return
                was_connected = self.connected
                self._lost(exc)
                if not isinstance(exc, (RedisError, OSError)):
                    log.exception("Redis pub/sub reader failed unexpectedly; reconnecting")
                if was_connected:
                    log.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
                    delay = 0.0
                    continue
                if delay == 0.0:
                    log.error("Redis pub/sub unreachable (%s); ending open streams, retrying", exc)
                    self.close_all()
                delay = min(2.0, max(0.1, delay * 2))
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        pubsub = self._subscriptions.open()
        self._pubsub = pubsub
        try:
            await self._serve(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.close()

    async def _serve(self, pubsub: Subscription) -> None:
        await pubsub.connect()
        channels = list(self._channels)
        for key in channels:
            self._confirms.setdefault(key, deque()).append(_RESYNC)
        if channels:
            await pubsub.subscribe(*channels)
        else:
            await pubsub.ping()
        self._connected.set()
        log.info("Redis pub/sub connected; %d job channels resubscribed", len(channels))
        # (No health check of redis-py's on this connection: the loop pings instead when all is quiet.)
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False
        while not self._stopping:
            reply = await pubsub.read(KEEPALIVE_S)
            now = loop.time()
            if reply is not None:
                heard, pinged = now, False
                self._dispatch(reply)
            elif now - heard >= 2 * KEEPALIVE_S and pinged:
                raise RedisConnectionError(f"Redis did not answer a PING within {KEEPALIVE_S:.0f}s")
            elif now - heard >= KEEPALIVE_S and not pinged:
                await pubsub.ping()
                pinged = True

    def _dispatch(self, reply: list[bytes]) -> None:
        kind = reply[0]
        if kind == b"message":
            ch = self._channels.get(reply[1])
            if ch is None:
                return
            if ch.feed_owner is None:
                seq_, name, data = reply[2].split(b" ", 2)
                seq = int(seq_)
            else:
                n, job, job_seq, name, data = reply[2].split(b" ", 4)
                seq = int(n)
            if ch.repairing:
                ch.missed = max(ch.missed, seq)
                return
            if seq <= ch.newest:
                return
            if ch.newest and seq != ch.newest + 1:
                self._start_repair(ch, seq)  # a message went missing on the way: read it from the log
                return
            if ch.feed_owner is None:
                ch.add(self._encode(ch.job_id, seq, name, data))
            else:
                ch.add(self._encode.feed_entry(seq, job.decode(), int(job_seq), name, data))
            ch.wake_all()
        elif kind == b"subscribe":
            confirms = self._confirms.get(reply[1])
            if not confirms:
                return
            marker = confirms.popleft()
            if not confirms:
                del self._confirms[reply[1]]
            if isinstance(marker, asyncio.Future):
                if not marker.done():
                    marker.set_result(None)
            elif (ch := self._channels.get(reply[1])) is not None:
                self._start_repair(ch, 0)

    def _start_repair(self, ch: _Channel, seen: int) -> None:
        """Fill in from the job's log what the hub did not hear (a reconnect, a lost message), once for all
        of the job's listeners; they wait for it (`after` gives them nothing meanwhile)."""
        ch.missed = max(ch.missed, seen)
        if ch.repairing:
            return
        ch.repairing = True
        task = asyncio.create_task(self._repair(ch), name=f"jobcast-hub-repair-{ch.job_id}")
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    async def _repair(self, ch: _Channel) -> None:
        try:
            while True:
                after = ch.newest or min((lst.last for lst in ch.listeners), default=0)
                if ch.feed_owner is not None:
                    if not await self._repair_feed(ch, ch.feed_owner, after):
                        break
                    continue
                oldest, newest, events = await self._store.events_after(ch.job_id, after, count=REPAIR_PAGE)
                if events and events[0].seq != after + 1:  # the log no longer reaches back: start afresh
                    ch.ring.clear()
                for event in events:
                    ch.add(self._encode(ch.job_id, event.seq, event.name, event.data))
                if events:
                    ch.wake_all()
                if len(events) < REPAIR_PAGE and ch.newest >= ch.missed:
                    break
                if not events and newest <= after:
                    break  # (the job was deleted, or nothing more is there)
        except (RedisError, OSError) as exc:
            log.warning("could not read the missed events of job %s (%s); ending its streams", ch.job_id, exc)
            for listener in ch.listeners:
                listener.close()
        finally:
            ch.repairing = False
            ch.missed = 0
            ch.wake_all()

    async def _repair_feed(self, ch: _Channel, owner: str, after: int) -> bool:
        """One page of an owner's feed into its ring; False once there is no more. An event whose job's log
        no longer holds it leaves a gap: listeners behind it read the feed themselves (`after` gives None)."""
        _, events = await self._store.feed_after(owner, after, REPAIR_PAGE)
        if events and events[0].n != after + 1:
            ch.ring.clear()
        for event in events:
            if event.name is not None:
                ch.add(self._encode.feed_entry(event.n, event.job_id, event.seq, event.name, event.data))
        if events:
            ch.newest = max(ch.newest, events[-1].n)
            ch.wake_all()
        return bool(events) and (len(events) == REPAIR_PAGE or ch.newest < ch.missed)

    def _lost(self, exc: BaseException) -> None:
        self._connected.clear()
        self._pubsub = None
        for confirms in self._confirms.values():
            for marker in confirms:
                if isinstance(marker, asyncio.Future) and not marker.done():
                    marker.set_exception(Unavailable())
                    marker.exception()  # retrieved here, so an abandoned one is not logged
        self._confirms.clear()
        # Whatever is published while we are away is in the logs: `_repair` reads it once we are back.
