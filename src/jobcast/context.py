"""What job code calls: progress, nested stages, parallel trackers, output, cancel.

A job function gets a `JobContext`. Everything it reports goes to Redis through
the atomic emit (`Store.emit`: `lua/report.lua` and `lua/output.lua`), but not one call at a time: pure progress
changes (and a model call's usage) are coalesced to at most one write per `JOBCAST_PROGRESS_INTERVAL_MS`
(50 ms) with the latest value always sent, and text deltas are merged the same
way; a change of message or stage, and every output item, is sent at once.
A tight loop of 100,000 `progress()` calls therefore costs about 20 writes a
second. The methods are thread-safe, and async job functions may call them
too (each write is one short Redis round trip). What is due later (coalesced
progress, heartbeats, cancel polls) is done by the process's one reporter
thread (`reporter.py`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import orjson
from pydantic import BaseModel

from jobcast.reporter import IDLE_WAKE_S, reporter
from jobcast.states import Outcome, Status
from jobcast.store import EmitResult, Store
from jobcast.store.record import format_progress, now_iso, part_of

__all__ = ["JobCanceled", "JobContext", "JobFailed", "PartsStarted", "Scope", "Tracker"]

log = logging.getLogger("jobcast.context")


class JobCanceled(Exception):
    """Raised by `check()` and `sleep()` once the job has been canceled; let it propagate."""


class JobFailed(Exception):
    """Raise it to end the job `failed` with your own error code and message."""

    def __init__(self, message: str, code: str = "job_error", *, retryable: bool = True, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        """False when another attempt cannot help (bad configuration, a refused request): the job fails now."""
        self.details = details
        """What the error object's `details` carry (JSON), if anything."""


class PartsStarted(BaseException):
    """Raised by `ctx.parts()` once the parts exist: the attempt gives its worker back (the runner catches it;
    a BaseException, so that job code's `except Exception` lets it through)."""


def _to_json(obj: Any) -> bytes:
    if isinstance(obj, BaseModel):
        return obj.model_dump_json().encode()
    return orjson.dumps(obj)


class Scope:
    """A slice `[start, end]` of the job's 0..100 progress: its own 0..100 maps onto it.

    The job's context is the outermost scope; `stage()` and `tracker()` make
    inner ones, which nest as deep as the work does.
    """

    def __init__(self, root: JobContext, start: float, end: float, stage: str | None) -> None:
        if not 0 <= start <= end <= 100:
            raise ValueError(f"a stage range must satisfy 0 <= start <= end <= 100, got {start}..{end}")
        self._root = root
        self._start = start
        self._span = end - start
        self._stage = stage

    def _global(self, pct: float) -> float:
        if not 0 <= pct <= 100:
            raise ValueError(f"progress must be from 0 to 100, got {pct!r}")
        return self._start + self._span * pct / 100

    def progress(self, pct: float, message: str | None = None, *, stage: str | None = None) -> None:
        """Report `pct` (0..100 of this scope); `message` and `stage` replace the current ones when given."""
        self._root._report(self._global(pct), message, stage or self._stage)

    def stage(self, name: str, start: float, end: float, message: str | None = None) -> Scope:
        """The sub-range `start..end` of this scope as a named phase.

        Entering it (as a context manager or not) reports the stage name at once;
        leaving a `with` block without an error reports the end of the range.
        """
        scope = Scope(self._root, self._global(start), self._global(end), name)
        self._root._report(scope._start, message, name)
        return scope

    def tracker(self, items: int, steps: int = 1, message: str | None = None) -> Tracker:
        """Progress over `items` pieces of work done in parallel, each of `steps` steps."""
        return Tracker(self, items, steps, message)

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if exc_type is None:
            self._root._report(self._start + self._span, None, self._stage)


class Tracker:
    """Aggregates `items × steps` units of work into one progress value of its scope."""

    def __init__(self, scope: Scope, items: int, steps: int, message: str | None) -> None:
        if items < 1 or steps < 1:
            raise ValueError(f"a tracker needs at least one item and one step, got items={items}, steps={steps}")
        self._scope = scope
        self._total = items * steps
        self._steps = steps
        self._done = [0] * items
        self._lock = threading.Lock()
        if message is not None:
            scope.progress(0, message)

    @property
    def done(self) -> int:
        """Steps finished so far, over all items."""
        return sum(self._done)

    def advance(self, item: int, steps: int = 1, message: str | None = None) -> None:
        """Mark `steps` more steps of item `item` (0-based) finished."""
        with self._lock:
            self._done[item] = min(self._steps, self._done[item] + steps)
            pct = 100 * sum(self._done) / self._total
        self._scope.progress(pct, message)

    def finish(self, item: int, message: str | None = None) -> None:
        """Mark every step of item `item` finished."""
        self.advance(item, self._steps, message)


CANCEL_POLL_S = IDLE_WAKE_S
"""How often the reporter thread asks whether the job was canceled."""


class JobContext(Scope):
    """The job's handle on jobcast: report progress and output, and notice a cancel.

    The process's reporter thread sends coalesced progress, keeps the job's
    heartbeat alive (a job whose heartbeat stops is declared lost by the
    janitor), and watches for a cancel: job code that has not stopped `JOBCAST_CANCEL_GRACE_MS`
    after one is given up on through `on_overdue`.
    """

    def __init__(
        self,
        store: Store,
        record: dict[str, str],
        on_overdue: Callable[[], None] | None = None,
        canceled: bool = False,
        on_split: Callable[[str, list[Any], Sequence[float] | None, Any], None] | None = None,
    ) -> None:
        super().__init__(self, 0, 100, None)
        self.id = record["id"]
        self.owner = record.get("owner") or ""
        """Whose job it is (its API key's owner; `anonymous` with auth off)."""
        self.type = record["type"]
        self.attempt = int(record["attempt"])
        self.max_attempts = int(record["max_attempts"])
        self.store = store
        """Where the job's changes go (jobcast's own helpers use it: the LLM client's share of the model)."""
        self._interval = store.settings.progress_interval_s
        self._cond = threading.Condition(threading.RLock())
        self._sent_progress = float(record["progress"])
        self._progress = self._sent_progress
        self._message = record["message"]
        self._stage: str | None = record.get("stage") or None
        self._state_pending = False
        self._text: list[str] = []
        self._pending_text: list[str] = []
        self._items: deque[bytes] = deque(maxlen=store.settings.items_kept)
        # The runner's start event was the last write: the first progress comes a full interval after it.
        self._last_flush = self._started = time.monotonic()
        # `canceled`: the start event found a cancel already asked for (its next poll is a while off).
        self._canceled = canceled
        self._canceled_at: float | None = time.monotonic() if canceled else None
        self._on_overdue = on_overdue
        self._on_split = on_split
        self._record = record
        self._part = part_of(record)
        self._on_cancel: list[Callable[[], None]] = []
        self._on_cancel_lock = threading.Lock()
        self.settings = store.settings
        """The process's settings (the model to use, for instance)."""
        self._stopped = False
        # The start event told whether a cancel was already asked for (`canceled`): next poll in a while.
        self._last_cancel_poll = time.monotonic()
        self._beat_every = self.settings.heartbeat_deadline_s / 4
        self._next_beat = time.monotonic() + self._beat_every
        self._reporter = reporter()
        self._reporter.add(self)
        if canceled:  # (its grace period may end before the reporter's next look)
            self._reporter.wake()

    # -- what job code reads ------------------------------------------------

    @property
    def canceled(self) -> bool:
        """True once a cancel was requested; code that can stop early should do so."""
        return self._canceled

    def check(self) -> None:
        """Raise JobCanceled if the job has been canceled (asks Redis at most 4 times a second)."""
        now = time.monotonic()
        if not self._canceled and now - self._last_cancel_poll >= 0.25:
            self._last_cancel_poll = now
            if self.store.cancel_requested(self.id):
                self._mark_canceled()
        if self._canceled:
            raise JobCanceled(f"job {self.id} was canceled")

    def _mark_canceled(self) -> None:
        if not self._canceled:
            with self._on_cancel_lock:
                self._canceled = True
                self._canceled_at = time.monotonic()
                callbacks = list(self._on_cancel)
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.warning("job %s: a cancel callback failed", self.id, exc_info=True)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on another thread) as soon as a cancel is seen, e.g. to close a model stream.

        Returns a function that unregisters it. Called at once if the job is already canceled.
        """
        with self._on_cancel_lock:
            self._on_cancel.append(callback)
            already = self._canceled
        if already:
            callback()

        def unregister() -> None:
            with self._on_cancel_lock:
                if callback in self._on_cancel:
                    self._on_cancel.remove(callback)

        return unregister

    def sleep(self, seconds: float) -> None:
        """Sleep like `time.sleep`, but wake up and raise JobCanceled when the job is canceled."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.25))

    # -- output ---------------------------------------------------------------

    def item(self, obj: Any) -> None:
        """Send one finished piece of output (a dict, list or pydantic model) as an `output` item."""
        raw = _to_json(obj)
        with self._cond:
            self._flush_text()
            self._items.append(raw)
            self._send("item", data=b'{"kind":"item","item":' + raw + b"}", raw=raw)

    def delta(self, text: str) -> None:
        """Append streamed text; deltas are merged and sent at most every 50 ms, never lost."""
        if not text:
            return
        with self._cond:
            self._text.append(text)
            self._pending_text.append(text)
            if time.monotonic() - self._last_flush >= self._interval:
                self._flush_text()
            else:
                self._reporter.wake()

    @property
    def output_items(self) -> list[bytes]:
        """The items sent in this attempt (the latest `JOBCAST_ITEMS_KEPT`), as JSON."""
        return list(self._items)

    @property
    def output_text(self) -> str:
        return "".join(self._text)

    # -- reporting ----------------------------------------------------------

    @property
    def current(self) -> tuple[float, str, str | None]:
        """The progress, message and stage last sent."""
        return self._sent_progress, self._message, self._stage

    def _report(self, pct: float, message: str | None, stage: str | None) -> None:
        message = message or None
        with self._cond:
            if pct > self._progress:
                self._progress = pct
            changed = (message is not None and message != self._message) or (stage is not None and stage != self._stage)
            if changed:
                if message is not None:
                    self._message = message
                if stage is not None:
                    self._stage = stage
                self._flush_state()
            elif format_progress(self._progress) != format_progress(self._sent_progress):
                if time.monotonic() - self._last_flush >= self._interval:
                    self._flush_state()
                else:
                    self._state_pending = True
                    self._reporter.wake()

    def _eta(self) -> str:
        elapsed = time.monotonic() - self._started
        pct = self._progress
        if pct < 1 or elapsed < 1 or pct >= 100:
            return ""
        return str(round(elapsed * (100 - pct) / pct))

    def _flush_state(self) -> None:
        progress = self._progress
        fields = {
            "progress": format_progress(progress),
            "message": self._message,
            "stage": self._stage or "",
            "eta_s": self._eta(),
        }
        self._send("state", ts=now_iso(), fields=fields)
        self._state_pending = False
        self._sent_progress = progress

    def _flush_text(self) -> None:
        if self._pending_text:
            text = "".join(self._pending_text)
            self._send("delta", data=b'{"kind":"delta","text":' + orjson.dumps(text) + b"}", raw=text)
            self._pending_text.clear()

    def _send(self, kind: Any, **kw: Any) -> None:
        if self._stopped:
            return
        self._last_flush = time.monotonic()
        result: EmitResult = self.store.emit(
            self.id, kind, owner=self.owner, event="output" if kind in ("item", "delta") else "state",
            guard_status=(Status.RUNNING,), guard_attempt=self.attempt, part=self._part, **kw,
        )
        if result.cancel:
            self._mark_canceled()
        if result.outcome in (Outcome.REFUSED, Outcome.MISSING):
            # The job ended or moved on without us (canceled, retried elsewhere, deleted):
            # write nothing more, and let check() stop the code.
            self._stopped = True
            self._mark_canceled()

    @contextlib.contextmanager
    def waiting(self, message: str) -> Iterator[Callable[[str], None]]:
        """Say `message` while the block waits for something, its progress untouched; yields `say(message)`,
        to say what it waits for as that changes. The message from before comes back when the block ends
        (unless it fails, or job code said something else meanwhile)."""
        said = [message]
        before = self._message

        def say(text: str) -> None:
            said[0] = text
            self._report(self._progress, text, None)

        say(message)
        yield say
        if self._message == said[0]:
            self._report(self._progress, before, None)

    def check_budget(self, tokens: int) -> None:
        """Before a model call that may take `tokens`: JobFailed (`budget_exceeded`, not retried) if that would
        pass what is left of the job's `max_tokens_total` (a part's: its batch's)."""
        left = self.store.tokens_left(self.id, self._part)
        if left is not None and tokens > left:
            whose = "its batch's" if self._part else "its"
            raise JobFailed(f"the next model call (about {tokens} tokens) would pass {whose} budget: {max(left, 0)} "
                            "tokens of max_tokens_total are left", code="budget_exceeded", retryable=False)

    def add_usage(self, model: str, prompt_tokens: int, completion_tokens: int, *, estimated: bool = False) -> None:
        """Count a model call's tokens in the job's `usage` (and its batch's), priced by `JOBCAST_MODEL_PRICES`;
        `estimated` when the server reported none. The LLM client calls this for every call it makes."""
        now = self.store.add_usage(self.id, self.attempt, self._part, model, prompt_tokens, completion_tokens,
                                    estimated)
        if now is not None:
            self._record.update(now)  # (the runner's record: the job object its end sends carries the usage)
            with self._cond:  # the next `state` event carries it, at the coalesced rate of progress
                self._state_pending = True
                self._reporter.wake()

    def parts(self, job_type: str, payloads: Sequence[Any], weights: Sequence[float] | None = None, *,
              state: Any = None) -> NoReturn:
        """Do the rest of this job as parts: one job of type `job_type` per payload (a dict or the type's
        model), run by any free worker. Never returns: the worker is given back, and once every part has
        ended, the join of this job's type (`job_type(..., join=...)`) makes the job's result from theirs.
        `weights`: how much each part counts in what is left of this job's progress (default: all the
        same); `state` (JSON): what the join needs of the work done before the split. See `batches.py`."""
        if self._on_split is None:
            raise RuntimeError("ctx.parts() splits a job run by a worker; this context belongs to none")
        with self._cond:
            self.flush()
            self._stopped = True  # nothing of this attempt's own is written after the split
        self._on_split(job_type, list(payloads), weights, state)
        raise PartsStarted()

    def flush(self) -> None:
        """Send whatever is pending now (the runner calls this before the job ends)."""
        with self._cond:
            self._flush_text()
            if self._state_pending:
                self._flush_state()

    def background(self) -> float | None:
        """The reporter's call: do what is due; seconds until the next task, None once the context is closed."""
        with self._cond:
            if self._stopped:
                return None
            try:
                return self._background_round()
            except Exception:  # a Redis hiccup: what is pending stays pending and is tried again
                log.warning("job %s: background write failed; retrying", self.id, exc_info=True)
                return 1.0

    def _background_round(self) -> float:
        """Do what is due; return how long to wait before the next round."""
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self._beat_every
            if not self.store.heartbeat(self.id, self.attempt):
                # This attempt is over without us (canceled, lost and retried): stop writing.
                self._stopped = True
                self._mark_canceled()
                return 0
        if not self._canceled and now - self._last_cancel_poll >= CANCEL_POLL_S:
            self._last_cancel_poll = now
            if self.store.cancel_requested(self.id):
                self._mark_canceled()
        waits = [self._next_beat - now, CANCEL_POLL_S]
        if self._canceled_at is not None and self._on_overdue is not None:
            overdue_in = self._canceled_at + self.store.settings.cancel_grace_s - now
            if overdue_in <= 0:
                on_overdue, self._on_overdue = self._on_overdue, None
                log.warning("job %s: did not stop within the cancel grace period; stopping it", self.id)
                on_overdue()
                return 0
            waits.append(overdue_in)
        if self._state_pending or self._pending_text:
            due = self._last_flush + self._interval - now
            if due <= 0:
                self.flush()
                return 0
            waits.append(due)
        return min(waits)

    def close(self) -> None:
        """Flush, and leave the reporter; nothing is sent after this (the reporter writes only under the lock
        taken here, and finds `_stopped` should it look once more)."""
        with self._cond:
            try:
                if not self._stopped:
                    self.flush()
            finally:  # even when Redis fails the last flush: nothing of the attempt's may outlive it
                self._stopped = True
        self._reporter.remove(self)

