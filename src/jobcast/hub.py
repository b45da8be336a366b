"""The API process's one pub/sub connection, fanning job events out to its streams.

Each open event stream registers a `Listener` for its job. The hub subscribes
to the job's channel when its first listener arrives (and only returns once
Redis has confirmed the subscription, so a stream that reads its backlog
afterwards cannot miss an event in between), unsubscribes when the last one
leaves, and hands every message to all of the job's listeners, encoded once.

A listener never blocks the hub: it buffers a bounded number of events, and
one that falls further behind is flagged to catch up from the job's event log
instead. When the connection to Redis breaks, the hub reconnects at once and
flags every listener to catch up from the log; if Redis stays away, it ends
every stream (their clients reconnect, and get `503` until Redis is back) and
keeps trying in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from jobcast.errors import Unavailable
from jobcast.keys import Keys
from jobcast.metrics import STREAMS_OPEN

__all__ = ["Hub", "Listener"]

log = logging.getLogger("jobcast.hub")

MAX_BUFFERED = 256
"""Events a listener may hold unsent before it is told to catch up from the log instead."""

SUBSCRIBE_TIMEOUT_S = 5.0

KEEPALIVE_S = 5.0
"""After this long without a word from Redis the hub sends PING; after twice as long it reconnects."""

_RESYNC = object()
"""In a channel's confirmation queue: when this subscription is confirmed, tell its listeners to catch up."""

Entry = tuple[int, bytes, bool]
"""One event for a listener: its id, its encoded bytes, whether it is terminal."""


class Listener:
    """One event stream's inbox."""

    __slots__ = ("job_id", "channel", "entries", "wake", "behind", "closed", "owner")

    def __init__(self, job_id: str, channel: bytes, owner: str = "") -> None:
        self.job_id = job_id
        self.owner = owner
        self.channel = channel
        self.entries: list[Entry] = []
        self.wake = asyncio.Event()
        self.behind = False
        """Events were dropped (a full inbox or a reconnect): catch up from the log."""
        self.closed = False
        """The stream must end (client gone, shutdown, Redis lost)."""

    def push(self, entry: Entry) -> None:
        if len(self.entries) >= MAX_BUFFERED:
            self.behind = True
            self.entries.clear()
        elif not self.behind:
            self.entries.append(entry)
        self.wake.set()

    def take(self) -> list[Entry]:
        entries, self.entries = self.entries, []
        self.wake.clear()
        return entries

    def fall_behind(self) -> None:
        self.behind = True
        self.entries.clear()
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


Encoder = Callable[[str, int, bytes, bytes], Entry]


class Hub:
    def __init__(self, redis: AsyncRedis, keys: Keys, encode: Encoder) -> None:
        """`redis` must not retry on its own (a silent reconnect would lose messages unseen)."""
        self._redis = redis
        self._keys = keys
        self._encode = encode
        self._channels: dict[bytes, set[Listener]] = {}
        self._confirms: dict[bytes, deque[object]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self.streams_by_owner: dict[str, int] = {}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stream_count(self) -> int:
        return sum(len(group) for group in self._channels.values())

    async def start(self, wait_s: float = 5.0) -> None:
        self._task = asyncio.create_task(self._run(), name="jobcast-hub")
        try:
            await asyncio.wait_for(self._connected.wait(), wait_s)
        except TimeoutError:
            log.warning("Redis pub/sub is not reachable yet; streams answer 503 until it is")

    async def stop(self) -> None:
        self._stopping = True
        self.close_all()
        task, pubsub = self._task, self._pubsub
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done and pubsub is not None:
                # redis-py can swallow the cancellation of a read in progress: end the read by closing.
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.wait({task}, timeout=2)
        await self._redis.aclose()

    def close_all(self) -> None:
        """End every open stream (shutdown, or Redis gone)."""
        for group in self._channels.values():
            for listener in group:
                listener.close()

    async def listen(self, job_id: str, owner: str = "") -> Listener:
        """A listener for `job_id`, returned once its channel's subscription is confirmed."""
        pubsub = self._pubsub
        if pubsub is None or not self.connected:
            raise Unavailable()
        channel = self._keys.channel(job_id).encode()
        listener = Listener(job_id, channel, owner)
        self.streams_by_owner[owner] = self.streams_by_owner.get(owner, 0) + 1
        group = self._channels.setdefault(channel, set())
        group.add(listener)
        STREAMS_OPEN.inc()
        confirms = self._confirms.setdefault(channel, deque())
        try:
            if len(group) == 1:
                confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                confirms.append(confirmed)
                await pubsub.execute_command("SUBSCRIBE", channel)
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
        group = self._channels.get(listener.channel)
        if group is None or listener not in group:
            return
        group.discard(listener)
        STREAMS_OPEN.dec()
        left = self.streams_by_owner.get(listener.owner, 1) - 1
        if left:
            self.streams_by_owner[listener.owner] = left
        else:
            self.streams_by_owner.pop(listener.owner, None)
        if group:
            return
        del self._channels[listener.channel]
        if self._pubsub is not None and self.connected:
            try:
                await self._pubsub.execute_command("UNSUBSCRIBE", listener.channel)
            except (RedisError, OSError):
                pass  # the connection is going; the reader loop deals with it

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
        pubsub = self._redis.pubsub()
        self._pubsub = pubsub
        try:
            await self._serve(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _serve(self, pubsub: PubSub) -> None:
        await pubsub.connect()  # type: ignore[no-untyped-call]
        channels = list(self._channels)
        for channel in channels:
            self._confirms.setdefault(channel, deque()).append(_RESYNC)
        if channels:
            await pubsub.execute_command("SUBSCRIBE", *channels)
        else:
            await pubsub.execute_command("PING")
        self._connected.set()
        log.info("Redis pub/sub connected; %d job channels resubscribed", len(channels))
        # redis-py's own health check would read this socket beside the loop below, so it is
        # off for this connection (connections.py); the loop pings instead when all is quiet.
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False
        while not self._stopping:
            reply = await pubsub.parse_response(block=False, timeout=KEEPALIVE_S)
            now = loop.time()
            if reply is not None:
                heard, pinged = now, False
                self._dispatch(reply)
            elif now - heard >= 2 * KEEPALIVE_S and pinged:
                raise RedisConnectionError(f"Redis did not answer a PING within {KEEPALIVE_S:.0f}s")
            elif now - heard >= KEEPALIVE_S and not pinged:
                await pubsub.execute_command("PING")
                pinged = True

    def _dispatch(self, reply: list[bytes]) -> None:
        kind = reply[0]
        if kind == b"message":
            group = self._channels.get(reply[1])
            if not group:
                return
            seq, name, data = reply[2].split(b" ", 2)
            entry = self._encode(next(iter(group)).job_id, int(seq), name, data)
            for listener in group:
                listener.push(entry)
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
            else:
                for listener in self._channels.get(reply[1], ()):
                    listener.fall_behind()

    def _lost(self, exc: BaseException) -> None:
        self._connected.clear()
        self._pubsub = None
        for confirms in self._confirms.values():
            for marker in confirms:
                if isinstance(marker, asyncio.Future) and not marker.done():
                    marker.set_exception(Unavailable())
                    marker.exception()  # retrieved here, so an abandoned one is not logged
        self._confirms.clear()
        # Whatever was published while we were away is in the logs: catch up once back.
        for group in self._channels.values():
            for listener in group:
                listener.behind = True
                listener.entries.clear()
