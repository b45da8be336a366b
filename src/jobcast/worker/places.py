"""Telling the jobs waiting in a queue their new places, from a thread of the worker process.

Each job a worker takes moves every job behind it one place up. The worker's
loop notes the queue (`taken`) and goes on with the job; this thread tells the
front of that queue its places (`Store.tell_positions`) at most every
`EVERY_MS` across all workers, and once more after the last take of a burst, so
the places a client sees are never more than that late. It is off the job's
path: its Redis round trips cost the job nothing, and Redis trouble here only
delays a place (the janitor's sweep tells them too).
"""

from __future__ import annotations

import logging
import threading

from jobcast.store import Store
from jobcast.store.connections import REDIS_TROUBLE

__all__ = ["EVERY_MS", "PlaceTeller"]

log = logging.getLogger("jobcast.places")

EVERY_MS = 200
"""How often a queue's front is told its places at most (by any worker: a shared Redis key)."""


class PlaceTeller:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._due: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def taken(self, queue: str) -> None:
        """The worker took a job from `queue`: its front is told its new places soon."""
        with self._lock:
            self._due.add(queue)
        self._wake.set()

    def tell_due(self) -> bool:
        """Tell each queue taken from since the last call its places; True if one must wait its turn (told
        less than `EVERY_MS` ago, or Redis failed) and is still due."""
        with self._lock:
            due, self._due = self._due, set()
        later = set()
        for queue in due:
            try:
                if self.store.tell_positions(queue, at_most_every_ms=EVERY_MS) is None:
                    later.add(queue)
            except Exception as exc:  # (Redis trouble above all: the thread must go on either way)
                log.warning("could not tell queue %s its places (%s); trying again", queue, exc,
                            exc_info=not isinstance(exc, REDIS_TROUBLE))
                later.add(queue)
        with self._lock:
            self._due |= later
        return bool(later)

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self.tell_due():
                self._stop.wait(EVERY_MS / 1000)
                self._wake.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="jobcast-places", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
