"""The one thread of a process that does its running jobs' background work.

While a job's code runs, its `JobContext` has things to do on time: send
coalesced progress once it is due, keep the job's heartbeat, ask whether the
job was canceled, give up on code that ignores a cancel
(`JobContext.background`). One thread per process does that for every job it
runs, started with the first and kept for the life of the process (a forked
work horse starts its own): a job costs no thread of its own, and one that
ends within its first half second never wakes the thread.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

__all__ = ["IDLE_WAKE_S", "Reporter", "reporter"]

IDLE_WAKE_S = 0.5
"""The longest the thread sleeps: no job's first task comes sooner after it starts (`JobContext`'s cancel poll),
so a new job need not wake it."""


class Background(Protocol):
    def background(self) -> float | None:
        """Do what is due; seconds until the next task is due (0: at once), or None when there is none left."""


class Reporter:
    def __init__(self) -> None:
        self._jobs: set[Background] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, job: Background) -> None:
        """Serve `job` from now on (its first task no sooner than `IDLE_WAKE_S` from now, or call `wake`)."""
        with self._lock:
            self._jobs.add(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jobcast-reporter", daemon=True)
                self._thread.start()

    def remove(self, job: Background) -> None:
        with self._lock:
            self._jobs.discard(job)

    def wake(self) -> None:
        """A job has a task due sooner than the thread planned for: look at every job again now."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                jobs = list(self._jobs)
            wait = IDLE_WAKE_S
            for job in jobs:
                next_in = job.background()
                if next_in is None:
                    self.remove(job)
                else:
                    wait = min(wait, next_in)
            if wait > 0:
                self._wake.wait(wait)


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def reporter() -> Reporter:
    """This process's reporter."""
    global _reporter
    with _reporter_lock:
        if _reporter is None:
            _reporter = Reporter()
        return _reporter


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: it makes a reporter of its own when it needs one."""
    global _reporter, _reporter_lock
    _reporter, _reporter_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
