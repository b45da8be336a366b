"""The event stream of one job, as the WHATWG server-sent events format has it.

Written as a bare ASGI response rather than with sse-starlette: an open stream
here costs one coroutine, one small disconnect watcher and a place in the
hub's ring, and each event is encoded once for all of a job's listeners and
written as ready bytes. Measured beside sse-starlette 3.7's
`EventSourceResponse` fed the same bytes from the same hub
(`bench/sse_starlette_variant.py`, 2026-12-08, one `make bench`): 18.8 KiB per
idle stream against 45.4 KiB (10,000 streams; it runs four tasks a stream),
and 846,000 events/s to 1,000 watchers of one job against 874,000 (1.03x).
The rule was to switch if it came within 10 % on both; it does not
(docs/benchmarks.md).

The stream: `retry:` first; then the backlog (a `snapshot`, or every event
after `Last-Event-ID`, read from the log in pages); then live events from the
hub's ring, skipping ids already sent, and a `snapshot` when the stream has
fallen further behind than the ring reaches; `: ping` while idle; and the end
of the response right after the terminal event.

A stalled or too slow client is closed, not buffered for: a stream socket's
kernel send buffer is kept small (`SEND_BUFFER`, where the server lets us at
the socket), a write the client does not take within `JOBCAST_STREAM_MAX_LAG_S`
gives up, and so does a stream whose next event is older than that. The
connection is then aborted at once (uvicorn would otherwise wait for a peer
whose window stays shut to drain the last write), and the client resumes from
its last id when it reads again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobcast.settings import Settings
from jobcast.states import TERMINAL
from jobcast.store import AsyncStore, Snapshot
from jobcast.web.hub import TAKE, Entry, Hub, Listener
from jobcast.web.metrics import EVENTS_DELIVERED

__all__ = ["EventEncoder", "EventStream", "StreamTransport", "TRANSPORT", "backlog", "rebase", "size_send_buffer"]

log = logging.getLogger("jobcast.sse")

_TERMINAL = frozenset(s.encode() for s in TERMINAL)
PING = b": ping\n\n"


class EventEncoder:
    """Turns events into SSE bytes; a job object (snapshot, terminal) gets its `links` added.

    One entry is sent to every stream of its job, so its links are paths; each stream puts the base URL
    its client came to in front of them as it sends the entry (`rebase`).
    """

    def __init__(self, links: Callable[[str, str], dict[str, str]]) -> None:
        """`links(job_id, base)`: the job's links under `base` (`Auth.links`)."""
        self.links = links

    def __call__(self, job_id: str, seq: int, name: bytes, data: bytes) -> Entry:
        if name not in _TERMINAL:
            return Entry(seq, b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name, data), False, time.monotonic())
        return self._with_links(seq, name, data[:-1], job_id, True)

    def job_object(self, snap: Snapshot) -> Entry:
        """The job as one `snapshot` event (events never carry the webhook's URL: token holders read them)."""
        event = snap.status if snap.status in TERMINAL else "snapshot"
        data = orjson.dumps(snap.job_object(webhook_url=False))
        return self._with_links(snap.seq, event.encode(), data[:-1], snap.record["id"], event != "snapshot")

    def _with_links(self, seq: int, name: bytes, open_object: bytes, job_id: str, terminal: bool) -> Entry:
        head = b"id: %d\nevent: %s\ndata: %s,\"links\":" % (seq, name, open_object)
        chunk = head + orjson.dumps(self.links(job_id, "")) + b"}\n\n"
        return Entry(seq, chunk, terminal, time.monotonic(), links_at=len(head))

    # -- streams of many jobs: each event says whose it is, and its id is a place in the owner's feed --------

    def feed_entry(self, n: int, job_id: str, seq: int, name: bytes, data: bytes) -> Entry:
        """Event `seq` of job `job_id` at place `n` of its owner's feed: the single stream's data with `job_id`
        and `seq` in front, and the cursor `c{n}` for its id."""
        return self._feed(n, job_id, seq, name, data, name in _TERMINAL)

    def feed_job(self, n: int | None, job: dict[str, Any], seq: int, terminal: bool) -> Entry:
        """A job object as a set's `snapshot` (or terminal) event; `n` None: no id line (a snapshot whose
        place in the feed comes with a later event)."""
        name = job["status"].encode() if terminal else b"snapshot"
        return self._feed(n, job["id"], seq, name, orjson.dumps(job), terminal)

    def _feed(self, n: int | None, job_id: str, seq: int, name: bytes, data: bytes, terminal: bool) -> Entry:
        cursor = b"" if n is None else b"id: c%d\n" % n
        head = b'%sevent: %s\ndata: {"job_id":"%s","seq":%d,' % (cursor, name, job_id.encode(), seq)
        if name not in _TERMINAL and name != b"snapshot":
            return Entry(n or 0, head + data[1:] + b"\n\n", False, time.monotonic(), job_id=job_id, job_seq=seq)
        head += data[1:-1] + b',"links":'
        chunk = head + orjson.dumps(self.links(job_id, "")) + b"}\n\n"
        return Entry(n or 0, chunk, terminal, time.monotonic(), links_at=len(head), job_id=job_id, job_seq=seq)


def rebase(entry: Entry, base: bytes) -> bytes:
    """The entry's bytes with `base` (JSON-escaped, no trailing slash) in front of its links' paths."""
    if entry.links_at < 0 or not base:
        return entry.chunk
    at = entry.links_at
    return entry.chunk[:at] + entry.chunk[at:].replace(b'":"/jobs/', b'":"' + base + b"/jobs/")


LOG_PAGE = 256
"""Events a stream reads from the log per request while it resumes after `Last-Event-ID`."""

Backlog = tuple[int, list[Entry], bool]
"""What a stream sends to get up to date: the id its entries follow, the entries, and whether the log
has more for it (it goes on reading pages)."""


async def backlog(store: AsyncStore, encode: EventEncoder, job_id: str, after: int | None) -> Backlog | None:
    """The events after `after` (a page of them), or a snapshot; None if the job is gone.

    When the log no longer holds every event after `after` (or `after` is no
    id of this job's), the job's current state comes as one snapshot. An id past
    the log may be one a Redis handed out before a failover or a restart lost
    it: the job is carried over first (`AsyncStore.carry`), so the snapshot's
    id is new.
    """
    if after is not None:
        oldest, newest, events = await store.events_after(job_id, after, LOG_PAGE)
        if 0 < oldest <= after + 1 and after <= newest:
            return after, [encode(job_id, e.seq, e.name, e.data) for e in events], len(events) == LOG_PAGE
        if after > newest:
            await store.carry([job_id])
    snap = await store.snapshot(job_id)
    return None if snap is None else (snap.seq - 1, [await _job_entry(store, encode, snap)], False)


async def _job_entry(store: AsyncStore, encode: EventEncoder, snap: Snapshot) -> Entry:
    """The job as one event: `snapshot`, or, once it has ended, its terminal event as the log has it (the
    same bytes whichever way a client gets it: the record may have changed since, a webhook's state)."""
    if snap.status in TERMINAL:
        last = await store.last_event(snap.record["id"])
        if last is not None and last.seq == snap.seq and last.name in _TERMINAL:
            return encode(snap.record["id"], last.seq, last.name, last.data)
    return encode.job_object(snap)


SEND_BUFFER = 32 * 1024
"""The kernel send buffer of a stream socket (Linux doubles it): a stalled client is noticed after this
much, not after the megabytes loopback and fast links autotune to."""

WRITE_BYTES = 64 * 1024
"""What one write to a stream takes at most (one event more if it is larger): a stream that stalls holds
no more than that beyond its socket's buffer."""

TRANSPORT = "jobcast.transport"
"""Where `StreamTransport` puts the connection's asyncio transport in the scope."""


class StreamTransport(Starlette):
    """The app, with the server's transport of each request at hand for the event streams.

    ASGI gives an app no way to close its connection, nor to size its socket's
    buffer. uvicorn's `send` is a method of the connection's request cycle,
    which holds the transport; seen here, before any middleware wraps `send`,
    it is put in the scope. Where it is not there (another server, an app
    mounted in another), streams still work, only stalled clients are noticed
    later and their connection is left to the server to close.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            # (uvloop's transports are no subclass of asyncio.Transport, but have the same methods)
            if hasattr(transport, "abort") and hasattr(transport, "get_extra_info"):
                scope[TRANSPORT] = transport
        await super().__call__(scope, receive, send)


async def abort(transport: asyncio.Transport) -> None:
    """Drop the connection, unsent bytes and all: a reset (SO_LINGER 0), so that the kernel does not keep
    the socket's buffer either, trying to deliver it to a peer that does not read. The server learns of it
    (`connection_lost`) on the next turn of the loop, before the app returns, so it does not take the
    unfinished response for an error."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)


def size_send_buffer(transport: asyncio.Transport | None) -> None:
    """Keep a stream socket's kernel send buffer small (`SEND_BUFFER`), where the server lets us at it."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


class EventStream(Response):
    """Streams one job's events to one client; built once the backlog is known."""

    def __init__(
        self,
        hub: Hub,
        store: AsyncStore,
        encode: EventEncoder,
        settings: Settings,
        listener: Listener,
        first: Backlog,
        *,
        base_url: str = "",
        ends_at: float | None = None,
    ) -> None:
        """`base_url`: what the links in its events start with (the API's URL as its client reaches it);
        `ends_at`: when the stream ends by itself (Unix seconds: its token's expiry)."""
        # No Response.__init__: it would add a Content-Length.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.hub, self.store, self.encode, self.settings = hub, store, encode, settings
        self.listener = listener
        self.first: Backlog | None = first
        self.ends_at = ends_at
        self.base = orjson.dumps(base_url)[1:-1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener = self.listener
        transport: asyncio.Transport | None = scope.get(TRANSPORT)
        size_send_buffer(transport)
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        gave_up = False
        try:
            follows, entries, resuming = await self._open(send)
            out = [b"retry: %d\n\n" % self.settings.sse_retry_ms]
            last, done = self._take(entries, follows, out)
            await self._send(send, out)
            EVENTS_DELIVERED.inc(len(out) - 1)
            del out, entries  # (an idle stream holds no bytes it has sent: its snapshot was 1.3 KiB of 24)
            while not done and not listener.closed:
                listener.last = last
                if not resuming and not await self._wait(send):
                    break
                ring = None if resuming else self.hub.after(listener, last)
                if ring:  # the usual case: what came since the last write, from the hub's ring
                    entries = ring
                elif ring is None:  # resuming from the log, or fell further behind than the ring reaches
                    got = await self._catch_up(last, resuming)
                    if got is None:  # deleted while we watched
                        break
                    entries, resuming = got
                else:
                    continue
                if entries and time.monotonic() - entries[0].at > self.settings.stream_max_lag_s:
                    raise TimeoutError(f"{time.monotonic() - entries[0].at:.0f} s behind")
                out = []
                last, done = self._take(entries, last, out)
                if out:
                    await self._send(send, out)
                    EVENTS_DELIVERED.inc(len(out))
                if not done and (len(entries) >= TAKE or (entries and entries[-1].seq > last)):
                    listener.wake()  # there is more than one write took
        except (TimeoutError, OSError) as exc:
            gave_up = True
            log.info("stream of job %s: client too slow or gone (%s); closing", listener.job_id,
                     str(exc) or f"a write not taken within {self.settings.stream_max_lag_s:g} s")
        except RedisError as exc:  # catching up failed: end the stream; the client resumes from its last id
            log.warning("stream of job %s: Redis failed while catching up (%s); closing", listener.job_id, exc)
        finally:
            watcher.cancel()
            await self.hub.unlisten(listener)
        await self._end(send, transport, gave_up)

    async def _open(self, send: Send) -> Backlog:
        """Start the response; what to send first, which the stream lets go of once it is sent."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        first, self.first = self.first, None
        if first is None:
            raise RuntimeError("an event stream is one response: it was sent already")
        return first

    async def _wait(self, send: Send) -> bool:
        """Wait until the hub wakes the listener, sending `: ping` while nothing comes; False when the stream
        must end instead (closed, or its token has expired)."""
        listener = self.listener
        while True:
            wait = self.settings.ping_interval_s
            if self.ends_at is not None:
                wait = min(wait, self.ends_at - time.time())
                if wait <= 0:
                    return False
            if not await listener.wait(wait):
                if self.ends_at is None or time.time() < self.ends_at:
                    await self._send(send, [PING])
                continue
            return not listener.closed

    async def _end(self, send: Send, transport: asyncio.Transport | None, gave_up: bool) -> None:
        """End the response; a stream that gave up on its client drops the connection instead."""
        if gave_up and transport is not None:
            await abort(transport)  # now: the last write would wait for a peer that does not read
            return
        # A stream that ended (its terminal event, its token's expiry) waits as long as any write may take,
        # so that a client still reading the last events gets them and the end (with 1 s, a busy client of a
        # hot job got a reset instead, and lost the terminal event); one the hub closed (shutdown, Redis
        # lost) does not hold the server up: its client resumes from its last id.
        wait = 1.0 if self.listener.closed else self.settings.stream_max_lag_s
        try:
            async with asyncio.timeout(wait):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.info("stream of job %s: the client did not take the end within %g s; closing",
                     self.listener.job_id, wait)
            if transport is not None:
                await abort(transport)

    async def _catch_up(self, last: int, resuming: bool) -> tuple[list[Entry], bool] | None:
        """The entries after `last` when the ring cannot give them: the next page of the log while the
        stream resumes (and whether there is more), else the job's state now as one snapshot (a shared
        read), to go on from; None if the job is gone."""
        listener = self.listener
        if resuming:
            page = await backlog(self.store, self.encode, listener.job_id, last)
            return None if page is None else (page[1], page[2])
        snap = await self.hub.snapshot(listener)
        if snap is not None and snap.seq <= last:
            snap = await self.store.snapshot(listener.job_id)  # (a read begun before this stream fell behind)
        return None if snap is None else ([await _job_entry(self.store, self.encode, snap)], False)

    def _take(self, entries: list[Entry], last: int, out: list[bytes]) -> tuple[int, bool]:
        """Append the entries after `last` to `out`, about `WRITE_BYTES` at most; return the new last id and
        whether the stream is done."""
        size = 0
        for entry in entries:
            if entry.seq <= last:
                continue
            if size >= WRITE_BYTES:
                break
            chunk = entry.chunk if entry.links_at < 0 else rebase(entry, self.base)
            out.append(chunk)
            size += len(chunk)
            last = entry.seq
            if entry.terminal:
                return last, True
        return last, False

    async def _send(self, send: Send, out: list[bytes]) -> None:
        async with asyncio.timeout(self.settings.stream_max_lag_s):
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.listener.close()
