"""The janitor: notices lost workers, starts due retries, hands out free slots and tells queued jobs
their places, every few seconds.

Every worker process and every API process runs one in a background thread;
a short Redis lock lets one sweep at a time. It is how a job whose worker was
killed (no heartbeat for `JOBCAST_HEARTBEAT_S`) ends `failed` with
`worker_lost` or is retried within a minute, rather than after RQ's own
ten-minute clean-up; RQ's clean-up, when it comes, finds the job already
handled (and its RQ job gone).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from redis.exceptions import LockError

from jobcast.store import Store
from jobcast.store.record import now_ms
from jobcast.transitions import lose, promote, reconcile, requeue

__all__ = ["Janitor"]

log = logging.getLogger("jobcast.janitor")


class Janitor:
    def __init__(self, store: Store, worker_name: str | None = None) -> None:
        """`worker_name`: in a worker process, the RQ worker whose liveness each round also tells."""
        self.store = store
        self.worker_name = worker_name
        self.interval_s = max(0.5, store.settings.heartbeat_deadline_s / 8)
        self._stop = threading.Event()
        self._last_ok = time.monotonic()

    def sweep(self) -> bool:
        """One round, if no other janitor holds the lock; True if this one swept."""
        keys = self.store.keys
        lock = self.store.janitor_lock(self.interval_s * 4)
        acquired = lock.acquire()
        gap, self._last_ok = time.monotonic() - self._last_ok, time.monotonic()  # Redis answered
        if not acquired:
            return False
        try:
            if gap > 3 * self.interval_s:
                # Redis (or this process) was away: no worker could send a heartbeat meanwhile,
                # so give every running job a full period before judging any of them lost.
                log.info("janitor: first sweep after a gap; extending every running job's heartbeat once")
                self.store.extend_all_heartbeats()
            now = now_ms()
            for job_id in self.store.due(keys.running, now):
                lose(self.store, job_id)
            for job_id in self.store.due(keys.delayed, now):
                requeue(self.store, job_id)
            # Jobs handed to RQ a while ago and not started: does RQ still have them? (`reconcile`)
            for job_id in self.store.due(keys.queued, now - int(self.store.settings.heartbeat_deadline_s * 1000)):
                reconcile(self.store, job_id)
            for owner in self.store.waiting_owners():
                promote(self.store, owner)
            # Places in line, whatever moved them (workers also tell them as they take jobs: worker/places.py).
            self.store.tell_positions(self.store.settings.queue)
        finally:
            with contextlib.suppress(LockError):
                lock.release()
        return True

    def _beat(self) -> None:
        if self.worker_name is not None:
            try:
                self.store.beat(self.worker_name)
            except Exception:
                log.warning("janitor: could not tell that worker %s is alive", self.worker_name, exc_info=True)

    def run(self) -> None:
        self._beat()
        while not self._stop.wait(self.interval_s):
            self._beat()
            try:
                self.sweep()
            except Exception:
                log.warning("janitor sweep failed; trying again in %.1fs", self.interval_s, exc_info=True)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="jobcast-janitor", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
