"""Changing job records in Redis, through the Lua scripts in `lua/`: `Store`.

`Store` is synchronous (workers, and the API's commands and submit, which shares
a MULTI with RQ's enqueue); `reader.AsyncStore` serves the API's reads. Both
speak bytes to Redis, as RQ requires, and decode only what they must.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import orjson
from redis import Redis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from redis.lock import Lock

from jobcast.settings import Settings
from jobcast.states import TERMINAL, Outcome, Stage
from jobcast.store.capacity import ModelCapacity
from jobcast.store.connections import REDIS_TROUBLE
from jobcast.store.keys import Keys
from jobcast.store.record import QUEUED_MESSAGE, WAITING_MESSAGE, Part, decode, now_iso, now_ms
from jobcast.store.scripts import (
    CHANGE_LUA,
    CREATE_LUA,
    DELETE_LUA,
    HEARTBEAT_LUA,
    POSITIONS_LUA,
    PROMOTE_LUA,
    USAGE_LUA,
)

__all__ = ["EmitKind", "EmitResult", "QUEUED_IN_PIPE", "Store", "USAGE_FIELDS", "count_submission", "owner_entry"]

log = logging.getLogger("jobcast.store")

T = TypeVar("T")


LIVE_POSITIONS = 20
"""The jobs at the front of a queue that get a `state` event whenever their place in line changes.

Further back, a job's place shows in its snapshot and `GET`, and as events once it nears the front.
"""

PROMOTE_ROUNDS = 5
"""How often `Store.promote` reads an owner's waiting list again when it changed under it (the janitor's next
sweep promotes whatever is left)."""

EmitKind = Literal["start", "state", "item", "delta", "again", "end"]
"""A change of a running system's job: an attempt starts, its state is reported, its output grows by an item or
a delta, the job goes back to `queued` for its next attempt, or it ends."""


@dataclass(frozen=True, slots=True)
class EmitResult:
    seq: int
    """The job's last event id after the call."""
    cancel: bool
    """Whether a cancel has been requested for the job."""
    outcome: Outcome
    """`ok`, `same` (nothing visible changed, no event), `refused` (a guard failed) or `missing`."""
    waiting: int = 0
    """After an end: how many of the owner's jobs wait for a slot (0: none to promote)."""


USAGE_FIELDS = tuple(f"usage_{scope}{name}" for scope in ("", "a_")
                     for name in ("calls", "prompt", "completion", "cost", "estimated"))
"""A job's usage on its record: in all its attempts (`usage_*`) and in this one (`usage_a_*`)."""

QUEUED_IN_PIPE = EmitResult(0, False, Outcome.OK)
"""What `Store.emit` returns for a change it queued in a MULTI."""


def owner_entry(created_ms: int, job_id: str) -> str:
    """A job's entry in its owner's index (see `AsyncStore.owner_page`)."""
    return f"{created_ms:015d}:{job_id}"


class Store:
    """Synchronous access: what workers emit, and the record a submit creates.

    With `ride_out_s` (the workers' store), an emit or a cancel check that meets
    a Redis restart or outage tries again for up to that long, with back-off,
    rather than failing the job's code: every emit carries an id of its own, so
    one that Redis applied before its reply was lost is not applied twice.
    """

    def __init__(self, redis: Redis, settings: Settings, ride_out_s: float = 0.0) -> None:
        self.redis = redis
        self.settings = settings
        self.ride_out_s = ride_out_s
        self.keys = Keys(settings.prefix)
        self.waiting_message = WAITING_MESSAGE.replace("{limit}", str(settings.max_running_per_owner))
        """The message of a job waiting for one of its owner's slots, `{n}` for how many are ahead."""
        self._emit_settings = {
            "events_kept": str(settings.events_kept), "items_kept": str(settings.items_kept),
            "ttl": str(settings.job_ttl_s), "limit": str(settings.max_running_per_owner),
            "waiting_message": self.waiting_message, "feed_kept": str(settings.feed_kept),
        }
        """The options of every emit that come from the settings (made once, not per emit)."""
        scripts = {lua: redis.register_script(lua) for lua in set(CHANGE_LUA.values())}
        self._change = {kind: scripts[lua] for kind, lua in CHANGE_LUA.items()}
        self._create = redis.register_script(CREATE_LUA)
        self._positions = redis.register_script(POSITIONS_LUA)
        self._delete = redis.register_script(DELETE_LUA)
        self._promote = redis.register_script(PROMOTE_LUA)
        self._heartbeat = redis.register_script(HEARTBEAT_LUA)
        self._usage = redis.register_script(USAGE_LUA)
        self.capacity = ModelCapacity(redis, self.keys, settings)
        """The models' capacity, shared by every worker."""

    def create(self, pipe: Pipeline, job_id: str, owner: str, created_ms: int, ts: str,
               fields: Mapping[str, str]) -> None:
        """Queue the creation of a record in `pipe` (a MULTI that RQ's enqueue joins next)."""
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.owner(owner), k.rq_queue(fields["queue"]), k.stats,
                k.feed(owner), k.feed_primary(owner)]
        args: list[str | int] = [job_id, owner_entry(created_ms, job_id), ts, QUEUED_MESSAGE, k.feed_channel(owner),
                                 self.settings.feed_kept]
        for name, value in fields.items():
            args += [name, value]
        self._create(keys=keys, args=args, client=pipe)

    def tell_positions(self, queue: str, at_most_every_ms: int = 0) -> int | None:
        """Send the jobs at the front of RQ's `queue` their new place in line; return how many changed.

        With `at_most_every_ms`, skip it (None) if any process did it that recently: a queue emptied
        at hundreds of jobs a second would tell its front 20 jobs as often (`worker/places.py`).
        """
        if at_most_every_ms and not self.redis.set(self.keys.told(queue), 1, px=at_most_every_ms, nx=True):
            return None
        return self._tell(self.keys.rq_queue(queue), QUEUED_MESSAGE, Stage.QUEUED)

    def tell_waiting(self, owner: str) -> int:
        """Send the jobs at the front of `owner`'s waiting list their new place in it."""
        return self._tell(self.keys.waiting(owner), self.waiting_message, Stage.WAITING)

    def _tell(self, line: str, message: str, stage: str) -> int:
        k = self.keys
        ids = [i.decode() for i in cast(list[bytes], self.redis.lrange(line, 0, LIVE_POSITIONS - 1))]
        if not ids:
            return 0
        job_ids = [line_id.split("-", 1)[0] for line_id in ids]  # an RQ job id is the jobcast id, or `{id}-{run}`
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(k.job(job_id), "owner")
            owners = [(o or b"").decode() for o in pipe.execute()]
        keys = [line, k.stats]
        args: list[str | int] = [now_iso(), message, self.settings.events_kept, stage, self.settings.feed_kept]
        for line_id, job_id, owner in zip(ids, job_ids, owners, strict=True):
            keys += [k.job(job_id), k.events(job_id), k.feed(owner), k.feed_primary(owner)]
            args += [line_id, job_id, k.channel(job_id), k.feed_channel(owner)]
        told: int = self._positions(keys=keys, args=args)
        return told

    def promote(self, owner: str) -> list[str]:
        """Give the owner's free slots to its waiting jobs, in order; the ids promoted (to enqueue in RQ)."""
        k = self.keys
        limit = self.settings.max_running_per_owner
        promoted: list[str] = []
        for _ in range(PROMOTE_ROUNDS if limit > 0 else 0):
            front = [i.decode() for i in cast(list[bytes], self.redis.lrange(k.waiting(owner), 0, limit - 1))]
            keys = [k.active(owner), k.waiting(owner), k.waiting_owners, k.delayed, k.stats, k.feed(owner),
                    k.feed_primary(owner)]
            args: list[str | int] = [limit, owner, now_iso(), self.settings.events_kept, now_ms(),
                                     k.feed_channel(owner), self.settings.feed_kept]
            for job_id in front:
                keys += [k.job(job_id), k.events(job_id)]
                args += [job_id, k.channel(job_id)]
            ids, settled = self._promote(keys=keys, args=args)
            promoted += [i.decode() for i in cast(list[bytes], ids)]
            if settled:
                break
        return promoted

    def waiting_owners(self) -> list[str]:
        return [o.decode() for o in cast(list[bytes], self.redis.smembers(self.keys.waiting_owners))]

    def load(self, job_id: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return decode(raw) if raw else None

    def delete(self, job_id: str, owner: str) -> str:
        """Forget a finished job; `ok`, `missing`, or the status that keeps it (see `lua/delete.lua`)."""
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.items(job_id), k.owner(owner), k.running, k.delayed]
        idem_key = cast(bytes | None, self.redis.hget(k.job(job_id), "idem_key"))  # set once, at submit
        if idem_key:
            keys.append(idem_key.decode())
        outcome: bytes = self._delete(keys=keys, args=[job_id, "," + ",".join(sorted(TERMINAL)) + ","])
        return outcome.decode()

    def due(self, zset: str, now_ms: int, limit: int = 100) -> list[str]:
        """Up to `limit` job ids in the sorted set `zset` whose time has come."""
        rows = self.redis.zrangebyscore(zset, "-inf", now_ms, start=0, num=limit)
        return [r.decode() for r in cast(list[bytes], rows)]

    def output_items(self, job_id: str) -> list[bytes]:
        return cast(list[bytes], self.redis.lrange(self.keys.items(job_id), 0, -1))

    def add_usage(self, job_id: str, attempt: int, part: Part | None, model: str, prompt: int, completion: int,
                  estimated: bool) -> dict[str, str] | None:
        """Add a model call's tokens (and their cost, when the model has a price) to the job's usage, in all and
        in this attempt, and to its batch's (`lua/usage.lua`); the job's usage fields now, or None when the
        attempt is over."""
        price = self.settings.model_prices.get(model)
        cost = "" if price is None else repr((prompt * price[0] + completion * price[1]) / 1_000_000)
        keys = [self.keys.job(job_id), self.keys.stats] + ([self.keys.job(part.parent)] if part else [])
        args: list[str | int] = [attempt, prompt, completion, cost, "1" if estimated else "", model, *USAGE_FIELDS]
        got = self._ride_out(lambda: self._usage(keys=keys, args=args), job_id)
        if not got:
            return None
        return {name: (value or b"").decode() for name, value in zip(USAGE_FIELDS, got, strict=True)}

    def tokens_left(self, job_id: str, part: Part | None) -> int | None:
        """What is left of the job's token budget (`max_tokens_total`; a part's is its batch's), or None: no
        budget."""
        key = self.keys.job(part.parent if part else job_id)
        budget, prompt, completion = cast(list[bytes | None], self.redis.hmget(
            key, ["max_tokens_total", "usage_prompt", "usage_completion"]))
        if not budget:
            return None
        return int(budget) - int(prompt or 0) - int(completion or 0)

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        """Push a running attempt's deadline out by `JOBCAST_HEARTBEAT_S`; False if that attempt is over."""
        deadline = now_ms() + int(self.settings.heartbeat_deadline_s * 1000)
        return bool(self._heartbeat(keys=[self.keys.job(job_id), self.keys.running], args=[job_id, attempt, deadline]))

    def extend_all_heartbeats(self) -> None:
        """Give every running job a full heartbeat period from now (after an outage nobody could beat through)."""
        deadline = now_ms() + int(self.settings.heartbeat_deadline_s * 1000)
        ids = cast(list[bytes], self.redis.zrange(self.keys.running, 0, -1))
        if ids:
            self.redis.zadd(self.keys.running, dict.fromkeys(ids, deadline), xx=True)

    def beat(self, worker_name: str) -> None:
        """Say that the worker `worker_name` is alive, for the next `JOBCAST_HEARTBEAT_S`."""
        self.redis.set(self.keys.alive(worker_name), os.getpid(), px=int(self.settings.heartbeat_deadline_s * 1000))

    def worker_alive(self, worker_name: str) -> bool:
        return bool(self.redis.exists(self.keys.alive(worker_name)))

    def janitor_lock(self, timeout_s: float) -> Lock:
        """The lock one janitor holds while it sweeps (`Keys.janitor`); `acquire()` does not wait for it."""
        return cast(Lock, self.redis.lock(self.keys.janitor, timeout=timeout_s, blocking=False))

    def ping(self) -> None:
        """Raises unless Redis answers."""
        self.redis.ping()

    def close(self) -> None:
        self.redis.close()

    def cancel_requested(self, job_id: str) -> bool:
        return self._ride_out(lambda: self.redis.hget(self.keys.job(job_id), "cancel"), job_id) == b"1"

    def _ride_out(self, call: Callable[[], T], job_id: str) -> T:
        """`call()`, tried again through Redis trouble for up to `ride_out_s` (1 s apart at most)."""
        deadline: float | None = None
        delay = 0.05
        while True:
            try:
                return call()
            except REDIS_TROUBLE as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.ride_out_s
                    if self.ride_out_s > 0:
                        log.warning("job %s: Redis unreachable (%s); trying again for up to %.0f s",
                                    job_id, exc, self.ride_out_s)
                if now >= deadline:
                    raise
                time.sleep(min(delay, deadline - now))
                delay = min(1.0, delay * 2)

    def set_webhook(self, job_id: str, attempt: str, hook: str) -> None:
        """Set a job's `webhook` field, unless the job has moved on to another attempt (and delivery)."""
        key = self.keys.job(job_id)

        def write(pipe: Pipeline) -> None:
            if pipe.hget(key, "attempt") == attempt.encode():
                pipe.multi()
                pipe.hset(key, "webhook", hook)

        self.redis.transaction(write, key)

    def count(self, counter: str) -> None:
        """Add one to a counter of `/metrics` (the stats hash)."""
        self.redis.hincrby(self.keys.stats, counter, 1)

    def heartbeat_deadline(self, job_id: str) -> float | None:
        """When a running job's worker must next be heard from (ms), or None if it is not in the running set."""
        return self.redis.zscore(self.keys.running, job_id)

    def joining(self, job_id: str) -> None:
        """A batch's join has started: in the running set until its heartbeat stops, no longer waiting for RQ."""
        deadline = now_ms() + int(self.settings.heartbeat_deadline_s * 1000)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.running, {job_id: deadline})
            pipe.zrem(self.keys.queued, job_id)
            pipe.execute()

    def set_aside(self, owner: str, job_id: str, pipe: Pipeline | None = None) -> None:
        """A batch that runs its parts: out of the running set (no code of its runs, so no heartbeat comes)
        and without one of its owner's slots (its parts take them); in `pipe` (a MULTI), if given."""
        if pipe is None:
            with self.multi() as own:
                self.set_aside(owner, job_id, own)
                own.execute()
            return
        pipe.zrem(self.keys.running, job_id)
        if self.settings.max_running_per_owner > 0:
            pipe.srem(self.keys.active(owner), job_id)

    def append_items(self, job_id: str, items: list[bytes]) -> None:
        """Append `items` (JSON) to a job's output items, the newest `JOBCAST_ITEMS_KEPT` kept: a retried
        batch's output starts again with what it had made itself and its completed parts' items."""
        if items:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self.keys.items(job_id), *items)
                pipe.ltrim(self.keys.items(job_id), -self.settings.items_kept, -1)
                pipe.execute()

    def multi(self) -> Pipeline:
        """A MULTI to queue changes in (`emit(pipe=)`, `set_aside(pipe=)`); `execute()` applies them together."""
        return self.redis.pipeline(transaction=True)

    def due_now(self, job_id: str) -> None:
        """Put a job in the delayed set, due now (the way back into RQ: `transitions.requeue`)."""
        self.redis.zadd(self.keys.delayed, {job_id: now_ms()})

    def forget_running(self, job_id: str) -> None:
        """Take a job that is no longer running out of the running set."""
        self.redis.zrem(self.keys.running, job_id)

    def emit(
        self,
        job_id: str,
        kind: EmitKind,
        *,
        owner: str | None = None,
        event: str = "state",
        data: str | bytes = "",
        raw: str | bytes = "",
        ts: str = "",
        fields: Mapping[str, str] | None = None,
        guard_status: Iterable[str] = (),
        guard_attempt: int | None = None,
        guard_run: int | None = None,
        heartbeat_ms: int | None = None,
        retry_at_ms: int | None = None,
        op: str | None = None,
        part: Part | None = None,
        pipe: Pipeline | None = None,
    ) -> EmitResult:
        """Apply one change of `kind` to job `job_id` of `owner` atomically, by its script in `lua/`
        (`CHANGE_LUA`: each says what it does and what it takes).

        The record, the job's log and its live channel change together, or not at all when a guard fails:
        `guard_status` (the statuses the job must be in), `guard_attempt` and `guard_run` (the attempt and the
        trip through RQ the writer belongs to). `fields` are set on the record; `data` is the event's JSON
        (for `end`, the job object's without its opening brace) and `raw` the output item or delta;
        `heartbeat_ms` is a `start`'s first heartbeat deadline, `retry_at_ms` when an `again`'s next attempt
        is due. `owner` (whose feed every change goes to, and whose slots a start or an end touches) is read
        from the record when not given: one round trip more. `op` names the write (default: a fresh random id),
        so that sending it again is harmless. `part`: the job is a part of a batch (`record.part_of`), whose
        parent the same script changes too (its counts, progress and items: `to_parent` in `lua/lib.lua`).
        With `pipe` (a MULTI), the change is queued there, and its outcome comes with the MULTI's answers
        (`QUEUED_IN_PIPE` is returned).
        """
        k = self.keys
        fields = fields or {}
        if kind == "state" and ("status" in fields or "attempt" in fields):
            raise ValueError("a `state` change moves a job nowhere: a new status or attempt is a `start`, an "
                             "`again` or an `end`")
        if kind == "again" and retry_at_ms is None:
            raise ValueError("an `again` needs `retry_at_ms`: when the next attempt is due")
        if owner is None:
            owner = (cast(bytes | None, self.redis.hget(k.job(job_id), "owner")) or b"").decode()
        statuses = "".join(f",{st}" for st in guard_status)
        options = {
            **self._emit_settings,
            "kind": kind, "event": event, "channel": k.channel(job_id), "id": job_id, "ts": ts,
            "feed_channel": k.feed_channel(owner),
            "statuses": statuses + "," if statuses else "",
            "attempt": _text(guard_attempt), "run": _text(guard_run),
            "heartbeat_ms": _text(heartbeat_ms), "retry_at_ms": _text(retry_at_ms),
            "op": op or os.urandom(8).hex(),
        }
        keys = self._change_keys(kind, job_id, owner)
        if part is not None:
            options.update(parent=part.parent, part=str(part.index), weight=str(part.weight),
                           parent_channel=k.channel(part.parent), ts=ts or now_iso())
            keys += [k.job(part.parent), k.events(part.parent), k.items(part.parent), k.delayed]
        args: list[str | bytes] = [orjson.dumps(options), data, raw]
        for name, value in fields.items():
            args += [name, value]
        script = self._change[kind]
        if pipe is not None:
            script(keys=keys, args=args, client=pipe)
            return QUEUED_IN_PIPE
        seq, cancel, outcome, *waiting = self._ride_out(lambda: script(keys=keys, args=args), job_id)
        return EmitResult(int(seq), bool(cancel), Outcome(outcome.decode()), int(waiting[0]) if waiting else 0)

    def _change_keys(self, kind: EmitKind, job_id: str, owner: str) -> list[str]:
        """The keys the script of `kind` touches, in the order its `KEYS` lists them."""
        k = self.keys
        job, events, items = k.job(job_id), k.events(job_id), k.items(job_id)
        feed = k.feed(owner), k.feed_primary(owner)
        if kind == "state":
            return [job, events, k.stats, *feed]
        if kind in ("item", "delta"):
            return [job, events, items, k.stats, *feed]
        if kind == "start":
            return [job, events, items, k.running, k.queued, k.stats, k.active(owner), k.waiting(owner),
                    k.waiting_owners, *feed]
        if kind == "again":
            return [job, events, items, k.running, k.delayed, k.queued, k.stats, *feed]
        return [job, events, items, k.running, k.delayed, k.queued, k.stats, k.active(owner), k.waiting(owner),
                *feed]


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def count_submission(pipe: Pipeline | AsyncPipeline, rate_key: str) -> None:
    """Queue, in `pipe`, one more accepted submission in the owner's minute (`Keys.submit_rate`)."""
    pipe.incr(rate_key)
    pipe.expire(rate_key, 120)  # the minute, and the next one that may still ask about it
