"""The event stream of one job, as the WHATWG server-sent events format has it.

Written as a bare ASGI response rather than with sse-starlette: an open stream
here costs one coroutine, one small disconnect watcher and one inbox, and each
event is encoded once for all of a job's listeners and written as ready bytes.
That is what lets one process hold 10,000 streams and feed 1,000 watchers of
one job (see `bench/`); sse-starlette spends four tasks a stream and encodes
per client.

The stream: `retry:` first; then the backlog (a `snapshot`, or every event
after `Last-Event-ID`); then live events from the hub, skipping ids already
sent and catching up from the log on any gap; `: ping` while idle; and the end
of the response right after the terminal event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobcast.hub import Entry, Hub, Listener
from jobcast.metrics import EVENTS_DELIVERED
from jobcast.record import TERMINAL
from jobcast.settings import Settings
from jobcast.store import AsyncStore, Snapshot

__all__ = ["EventEncoder", "EventStream", "backlog"]

log = logging.getLogger("jobcast.sse")

_TERMINAL = frozenset(s.encode() for s in TERMINAL)
PING = b": ping\n\n"


class EventEncoder:
    """Turns events into SSE bytes; a job object (snapshot, terminal) gets its `links` added."""

    def __init__(self, links: Callable[[str], dict[str, str]]) -> None:
        self.links = links

    def __call__(self, job_id: str, seq: int, name: bytes, data: bytes) -> Entry:
        terminal = name in _TERMINAL
        if terminal:
            data = data[:-1] + b',"links":' + orjson.dumps(self.links(job_id)) + b"}"
        return seq, b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name, data), terminal

    def job_object(self, snap: Snapshot) -> Entry:
        """The job as one event: `snapshot`, or its terminal event once it has ended."""
        obj: dict[str, Any] = snap.job_object()
        obj["links"] = self.links(snap.record["id"])
        event = snap.status if snap.status in TERMINAL else "snapshot"
        data = orjson.dumps(obj)
        return snap.seq, b"id: %d\nevent: %s\ndata: %s\n\n" % (snap.seq, event.encode(), data), event != "snapshot"


async def backlog(store: AsyncStore, encode: EventEncoder, job_id: str, after: int | None) -> tuple[int, list[Entry]] | None:
    """What a stream sends to get up to date: the events after `after`, or a snapshot.

    Returns the id the entries follow and the entries, or None if the job is
    gone. When the log no longer holds every event after `after` (or `after` is
    no id of this job's), the job's current state comes as one snapshot.
    """
    if after is not None:
        oldest, newest, events = await store.events_after(job_id, after)
        if 0 < oldest <= after + 1 and after <= newest:
            return after, [encode(job_id, e.seq, e.name, e.data) for e in events]
    snap = await store.snapshot(job_id)
    return None if snap is None else (snap.seq - 1, [encode.job_object(snap)])


class EventStream(Response):
    """Streams one job's events to one client; built once the backlog is known."""

    def __init__(
        self,
        hub: Hub,
        store: AsyncStore,
        encode: EventEncoder,
        settings: Settings,
        listener: Listener,
        first: tuple[int, list[Entry]],
    ) -> None:
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
        self.first = first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener = self.listener
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            out = [b"retry: %d\n\n" % self.settings.sse_retry_ms]
            last, done = self._take(self.first[1], self.first[0], out)
            await self._send(send, out)
            EVENTS_DELIVERED.inc(len(out) - 1)
            while not done:
                try:
                    async with asyncio.timeout(self.settings.ping_interval_s):
                        await listener.wake.wait()
                except TimeoutError:
                    await self._send(send, [PING])
                    continue
                if listener.closed:
                    break
                out = []
                if listener.behind:
                    listener.behind = False
                    listener.take()
                    last, done = await self._catch_up(last, out)
                else:
                    entries = listener.take()
                    if entries and entries[-1][0] > last and _has_gap(entries, last):
                        last, done = await self._catch_up(last, out)
                    else:
                        last, done = self._take(entries, last, out)
                if out:
                    await self._send(send, out)
                    EVENTS_DELIVERED.inc(len(out))
        except (TimeoutError, OSError):
            log.info("stream of job %s: client too slow or gone; closing", listener.job_id)
        except RedisError as exc:  # catching up failed: end the stream; the client resumes from its last id
            log.warning("stream of job %s: Redis failed while catching up (%s); closing", listener.job_id, exc)
        finally:
            watcher.cancel()
            await self.hub.unlisten(listener)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def _take(entries: list[Entry], last: int, out: list[bytes]) -> tuple[int, bool]:
        """Append the entries after `last` to `out`; return the new last id and whether the stream is done."""
        for seq, chunk, terminal in entries:
            if seq <= last:
                continue
            out.append(chunk)
            last = seq
            if terminal:
                return last, True
        return last, False

    async def _catch_up(self, last: int, out: list[bytes]) -> tuple[int, bool]:
        caught_up = await backlog(self.store, self.encode, self.listener.job_id, last)
        if caught_up is None:  # deleted while we watched
            return last, True
        return self._take(caught_up[1], caught_up[0], out)

    async def _send(self, send: Send, out: list[bytes]) -> None:
        async with asyncio.timeout(self.settings.send_timeout_s):
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.listener.close()


def _has_gap(entries: list[Entry], last: int) -> bool:
    expected = last + 1
    for seq, _, _ in entries:
        if seq < expected:
            continue
        if seq != expected:
            return True
        expected += 1
    return False
