"""Streams of many jobs (`GET /events`): a set of one owner's jobs over one connection.

The set is a list of ids (`job=`, fixed), or every job of the owner that carries
the given tags (`tag=`), or all of its jobs; `type=` narrows it. Every event of
an owner's jobs also goes, in the script that writes it, to the owner's feed
(`{p}:feed:{owner}`, entries `0-N`, N one more each time) and to the feed's
channel; a set stream is the hub's listener of that channel, and sends the events
of its set's jobs. Its SSE id is `c{N}`: the place in the feed up to which the
client has everything of every job in the set. So any API process can resume any
cursor, and a cursor is a few bytes whatever the set's size.

Without a cursor: subscribe, note the feed's place P0, read the snapshots of the
set's jobs, note the place P1, and send what the feed holds in (P0, P1] that the
snapshots do not cover; only then is `c{P1}` true for every job, so only the last
event of that first burst carries an id. A job that joins later (its first event,
`seq` 1, comes through the feed) is sent as a snapshot of the job as of that
event, so the cursor stays exact. With a cursor: the events after it, from the
feed and the jobs' logs, in pages, then live; an event a job's log no longer
holds comes as a snapshot of the job now; a cursor the feed no longer reaches
back to starts afresh, as an unknown one does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobcast.settings import Settings
from jobcast.states import TERMINAL
from jobcast.store import AsyncStore, FeedEvent, Snapshot
from jobcast.submission import invalid
from jobcast.web.api import base_url, check_stream_limits, owner_of
from jobcast.web.hub import TAKE, Entry, Hub, Listener
from jobcast.web.jobfacts import JobFacts
from jobcast.web.jobsets import JobSet
from jobcast.web.metrics import EVENTS_DELIVERED
from jobcast.web.services import Services
from jobcast.web.sse import TRANSPORT, EventEncoder, EventStream, rebase, size_send_buffer

__all__ = ["CURSOR", "Follower", "SetStream", "ended_before", "open_set", "set_events"]

log = logging.getLogger("jobcast.sse")

CURSOR = re.compile(r"^c([0-9]{1,18})$")
"""A set stream's cursor: `c` and a place in the owner's feed."""

PAGE = 256
"""Feed entries a set stream reads per request while it resumes or catches up."""

SNAPSHOT_PAGE = 100
"""Jobs whose snapshots one request reads when a stream opens."""


def _at_cursor(entry: Entry, n: int) -> Entry:
    """`entry` with `id: c{n}` for its id."""
    chunk = entry.chunk.split(b"\n", 1)[1] if entry.chunk.startswith(b"id: ") else entry.chunk
    cursor = b"id: c%d\n" % n
    links_at = entry.links_at - (len(entry.chunk) - len(chunk)) + len(cursor) if entry.links_at >= 0 else -1
    return Entry(n, cursor + chunk, entry.terminal, entry.at, links_at, entry.job_id, entry.job_seq)


class Follower:
    """What a set stream knows of its jobs: which are in the set, the last event of each it has sent, and
    which have ended; it turns the feed's entries into what to send."""

    def __init__(self, jobs: JobSet, facts: JobFacts) -> None:
        self.jobs, self.facts, self.store, self.encode = jobs, facts, facts.store, facts.encode
        self.members: dict[str, bool] = {}
        self.sent: dict[str, int] = {}
        self.ended: dict[str, bool] = {}

    def _took(self, job_id: str, seq: int, terminal: bool) -> None:
        self.sent[job_id] = seq
        self.ended[job_id] = terminal

    @property
    def done(self) -> bool:
        """A fixed list whose every job (of those that exist) has sent its terminal event."""
        return self.jobs.ids is not None and bool(self.ended) and all(self.ended.values())

    async def _resolve(self, job_ids: set[str]) -> None:
        unknown = [j for j in job_ids if j not in self.members]
        if unknown:
            for job_id, facts in zip(unknown, await self.facts.admissions(unknown), strict=True):
                self.members[job_id] = facts is not None and self.jobs.admits(job_id, *facts)

    def snapshot(self, snap: Snapshot, n: int | None) -> Entry:
        """The job as it is now, as a `snapshot` (or its terminal event), at place `n` (None: no id)."""
        terminal = snap.status in TERMINAL
        self._took(snap.record["id"], snap.seq, terminal)
        return self.encode.feed_job(n, snap.job_object(webhook_url=False), snap.seq, terminal)

    async def follow(self, entries: list[Entry]) -> list[Entry]:
        """Of feed entries (in order), what to send: the set's events not sent yet; a job that joins, as a
        snapshot of it as of its first event; a job whose ids skip ahead, as a snapshot of it now.

        Every set stream runs this on every event of its owner's jobs, so the usual case (a known job's next
        event) is kept to a few dictionary look-ups."""
        members, sent, ended = self.members, self.sent, self.ended
        out = []
        for i, e in enumerate(entries):
            job_id, seq = e.job_id, e.job_seq
            member = members.get(job_id)
            if member is None:
                await self._resolve({f.job_id for f in entries[i:]})
                member = members[job_id]
            if not member:
                continue
            last = sent.get(job_id)
            if last is not None and seq == last + 1:  # the usual case
                sent[job_id], ended[job_id] = seq, e.terminal
                out.append(e)
            elif last is not None and seq <= last:
                continue  # (a snapshot covered it)
            elif last is not None:
                # The job's ids skipped ahead: a failover or a restart carried it over (`SEQ_JUMP` in
                # lua/lib.lua), and what the client has may include events lost on the way. It goes on from
                # the job now.
                snap = await self.store.snapshot(job_id)
                if snap is not None:
                    out.append(self.snapshot(snap, e.seq))
            elif seq == 1:
                first = await self.facts.joined(job_id, e.seq)
                if first is not None:  # (else gone already)
                    self._took(job_id, 1, False)
                    out.append(first)
            else:
                self._took(job_id, seq, e.terminal)
                out.append(e)
        return out

    async def page(self, after: int, until: int | None = None) -> tuple[list[Entry], int, bool] | None:
        """What to send of the feed's next page after `after` (up to place `until`), the place read up to,
        and whether the feed holds more; None when the feed no longer reaches back to `after`."""
        _, events = await self.store.feed_after(self.jobs.owner, after, PAGE)
        if events and events[0].n != after + 1:
            return None
        more = len(events) == PAGE
        if until is not None:
            more = more and events[-1].n < until
            events = [e for e in events if e.n <= until]
        entries = [entry for event in events if (entry := await self._entry(event)) is not None]
        return await self.follow(entries), (events[-1].n if events else after), more

    async def _entry(self, event: FeedEvent) -> Entry | None:
        if event.name is not None:
            return self.encode.feed_entry(event.n, event.job_id, event.seq, event.name, event.data)
        await self._resolve({event.job_id})
        if not self.members.get(event.job_id) or self.sent.get(event.job_id, 0) >= event.seq:
            return None
        snap = await self.store.snapshot(event.job_id)  # its job's log no longer holds the event
        if snap is None:
            return None
        # (`follow` takes it as the job's next event: it covers everything up to the job's seq now)
        return self.encode.feed_job(event.n, snap.job_object(webhook_url=False), snap.seq, snap.status in TERMINAL)


Opened = tuple[Follower, list[Entry], int, bool]
"""A set stream's start: its follower, the entries it sends first, the feed place they bring the client to,
and whether it goes on reading the feed (a resume) before it takes live events."""


async def _readable(store: AsyncStore, owner: str, cursor: int) -> bool:
    """Whether the owner's feed can resume from `cursor`: it holds the next entry, or the cursor is its end."""
    position = await store.feed_position(owner)
    if cursor > position:
        return False  # (a cursor of another Redis, or made up)
    if cursor == position:
        return True
    _, events = await store.feed_after(owner, cursor, 1)
    return bool(events) and events[0].n == cursor + 1


async def open_set(facts: JobFacts, jobs: JobSet, cursor: int | None) -> Opened:
    """What a set stream sends first (see the module's notes); a cursor the feed cannot resume from starts
    afresh."""
    follower = Follower(jobs, facts)
    store = facts.store
    if cursor is not None and await _readable(store, jobs.owner, cursor):
        if jobs.ids is not None:  # where the list's jobs stand: a stream ends once all have ended, caught up
            for job_id, summary in zip(jobs.ids, await store.summaries(list(jobs.ids)), strict=True):
                if summary is not None and jobs.admits(job_id, summary[1], summary[2]):
                    follower.ended[job_id] = summary[0] in TERMINAL
        return follower, [], cursor, True
    p0 = await store.feed_position(jobs.owner)
    ids = list(jobs.ids) if jobs.ids is not None else await store.owner_jobs(jobs.owner)
    if cursor is not None:  # (a cursor this feed cannot resume: the client may hold ids a failover lost)
        await store.carry(ids, jobs.owner)
    first: list[Entry] = []
    for i in range(0, len(ids), SNAPSHOT_PAGE):
        for snap in await store.snapshots(ids[i:i + SNAPSHOT_PAGE]):
            if snap is None or snap.owner != jobs.owner:
                continue  # (unknown and foreign ids are left out without a word)
            job_id = snap.record["id"]
            follower.members[job_id] = jobs.admits(job_id, snap.record["type"], snap.record.get("tags"))
            if follower.members[job_id]:
                first.append(follower.snapshot(snap, None))
    p1 = await store.feed_position(jobs.owner)
    at, more = p0, p0 < p1
    while more:
        got = await follower.page(at, until=p1)
        if got is None:
            break  # (trimmed meanwhile: the snapshots are what there is)
        entries, at, more = got
        first += entries
    if first:
        first[-1] = _at_cursor(first[-1], p1)
    return follower, first, p1, False


async def ended_before(opened: Opened) -> bool:
    """Whether a fixed list resumed from a cursor has nothing more to send: every job of it that exists has
    ended, and the feed holds none of their events after the cursor (looked for in 16 pages at most: past
    that, the stream is served, and ends once it has caught up)."""
    follower, _, at, resuming = opened
    jobs = follower.jobs
    if jobs.ids is None or not resuming:
        return False
    if not all(follower.ended.values()):  # (where the list's jobs stand: `open_set` read it)
        return False
    if not follower.ended:
        return True  # (none of them exists any more)
    scout = Follower(jobs, follower.facts)  # (reading ahead must not mark anything sent)
    for _ in range(16):
        got = await scout.page(at)
        if got is None:
            return False
        entries, at, more = got
        if entries:
            return False
        if not more:
            return True
    return False


class SetStream(EventStream):
    """Streams the events of a set of one owner's jobs to one client."""

    def __init__(self, hub: Hub, store: AsyncStore, encode: EventEncoder, settings: Settings,
                 listener: Listener, opened: Opened, *, base_url: str = "", ends_at: float | None = None) -> None:
        follower, first, at, resuming = opened
        super().__init__(hub, store, encode, settings, listener, (at, first, resuming), base_url=base_url,
                         ends_at=ends_at)
        self.follower = follower

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener, follower = self.listener, self.follower
        transport = scope.get(TRANSPORT)
        size_send_buffer(transport)
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        gave_up = False
        try:
            at, entries, resuming = await self._open(send)
            await self._send(send, [b"retry: %d\n\n" % self.settings.sse_retry_ms, *map(self._chunk, entries)])
            EVENTS_DELIVERED.inc(len(entries))
            del entries  # (as `EventStream`: an idle stream holds no bytes it has sent)
            while not listener.closed and not (follower.done and not resuming):
                listener.last = at
                if not resuming and not await self._wait(send):
                    break
                ring = None if resuming else self.hub.after(listener, at)
                if ring:  # the usual case: what came since, from the hub's ring
                    entries, at = await follower.follow(ring), ring[-1].seq
                    if len(ring) >= TAKE:
                        listener.wake()  # the ring may hold more than one take: the next one reads it too
                elif ring is None:  # resuming from the feed, or further behind than the ring reaches
                    got = await follower.page(at)
                    if got is None:
                        log.info("set stream of %s: the feed no longer reaches back to c%d; closing (the client "
                                 "comes back and starts afresh)", follower.jobs.owner, at)
                        break
                    entries, at, resuming = got
                else:
                    continue
                if entries and time.monotonic() - entries[0].at > self.settings.stream_max_lag_s:
                    raise TimeoutError(f"{time.monotonic() - entries[0].at:.0f} s behind")
                if entries:
                    await self._send(send, list(map(self._chunk, entries)))
                    EVENTS_DELIVERED.inc(len(entries))
                if resuming:
                    listener.wake()
        except (TimeoutError, OSError) as exc:
            gave_up = True
            log.info("set stream of %s: client too slow or gone (%s); closing", follower.jobs.owner,
                     str(exc) or f"a write not taken within {self.settings.stream_max_lag_s:g} s")
        except RedisError as exc:  # catching up failed: end the stream; the client resumes from its cursor
            log.warning("set stream of %s: Redis failed while catching up (%s); closing", follower.jobs.owner, exc)
        finally:
            watcher.cancel()
            await self.hub.unlisten(listener)
        await self._end(send, transport, gave_up)

    def _chunk(self, entry: Entry) -> bytes:
        return entry.chunk if entry.links_at < 0 else rebase(entry, self.base)


# -- the endpoint ----------------------------------------------------------------------------------------

PARAMETERS = ("job", "last_event_id", "tag", "token", "type")


def _cursor(request: Request) -> int | None:
    """The cursor to resume after: the header (as EventSource sends it), else the parameter."""
    for name, raw in (("Last-Event-ID", request.headers.get("last-event-id")),
                      ("last_event_id", request.query_params.get("last_event_id"))):
        if raw is not None and (raw.strip() != "" or name == "last_event_id"):
            match = CURSOR.match(raw.strip())
            if match is None:
                raise invalid(name, f"{raw[:40]!r} is not a cursor of GET /events (those look like c1234); "
                                    "resume with the id of the last event you got")
            return int(match.group(1))
    return None


async def set_events(request: Request) -> Response:
    """`GET /events`: a set of the owner's jobs, over one stream."""
    svc: Services = request.app.state.services
    token = request.query_params.get("token") if svc.auth.enabled else None
    owner = owner_of(request) if token is None else svc.auth.set_token_owner(token)
    params = request.query_params
    for name in params:
        if name not in PARAMETERS:
            raise invalid(name, f"unknown query parameter; use {', '.join(PARAMETERS)}")
    jobs = JobSet.from_query(owner, params)
    if token is not None:
        svc.auth.check_set_token(token, jobs.scope())  # 401 unless made for this very set, unexpired
    cursor = _cursor(request)
    check_stream_limits(svc, owner, token, "GET /jobs")
    listener = await svc.hub.listen_feed(owner, token or "")
    try:
        opened = await open_set(svc.facts, jobs, cursor)
        # A fixed list with nothing (more) to send: 204, which tells EventSource not to come back.
        if jobs.ids is not None and ((not opened[1] and not opened[3]) or await ended_before(opened)):
            await svc.hub.unlisten(listener)
            return Response(status_code=204)
    except BaseException:
        await svc.hub.unlisten(listener)
        raise
    ends_at = svc.auth.token_expiry(token) if token is not None else None
    return SetStream(svc.hub, svc.store, svc.encode, svc.settings, listener, opened, base_url=base_url(request),
                     ends_at=ends_at)
