"""RQ worker classes that run jobcast jobs.

`Worker` forks a work horse per job (RQ's default, the one for production);
`SimpleWorker` runs jobs in its own process; `ThreadWorker` runs in a thread
(the in-process workers of `jobcast dev`): RQ installs signal handlers and
uses SIGALRM for time limits, which only work in the main thread, so it skips
the first and keeps time with a timer thread instead.

Each class carries a `Runtime` and makes it current while a job runs; one built
by RQ itself (`rq worker -w jobcast.worker.Worker`) reads it from the environment.

`run_worker` is `jobcast worker`: it keeps a worker going through Redis outages
of any length. RQ's own loop quits on a Redis error it meets outside its wait
for jobs (a restart mid-job, a `BusyLoadingError` while Redis loads its data)
and returns as if asked to stop; the mixin notes what made it quit, so that
`run_worker` can tell that apart from a requested stop or a real fault.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import rq
from redis.exceptions import RedisError
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty

from jobcast.settings import Settings
from jobcast.store.connections import REDIS_TROUBLE, RedisFactory
from jobcast.store.trips import DELIVER, RUN_JOB
from jobcast.worker.janitor import Janitor
from jobcast.worker.places import PlaceTeller
from jobcast.worker.runtime import Runtime, running, stopped_by

__all__ = ["SimpleWorker", "ThreadWorker", "Worker", "make_worker", "run_worker"]

log = logging.getLogger("jobcast.worker")

OUTAGE_LOG_EVERY_S = 5.0


class _RuntimeMixin:
    """Makes the worker's `Runtime` current while it works, and runs a janitor and a place teller beside it."""

    runtime: Runtime | None = None
    places: PlaceTeller | None = None
    quit_by: BaseException | None = None
    """The error that made RQ's work loop quit (RQ logs it and returns normally); None for a requested stop."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        if self.runtime is None:
            settings = Settings.from_env()
            self.runtime = Runtime.build(settings, RedisFactory(settings.redis_target))
        # Loaded once here, not in every forked work horse (an import there is paid again for each job,
        # and compiled from source where no bytecode is cached): the functions RQ calls, and the LLM client.
        for function in (RUN_JOB, DELIVER):
            importlib.import_module(function.rpartition(".")[0])
        if self.runtime.settings.model_unavailable() is None:
            import jobcast.llm  # noqa: F401
        janitor = Janitor(self.runtime.store, worker_name=self.name)  # type: ignore[attr-defined]
        janitor.start()
        self.places = PlaceTeller(self.runtime.store)
        self.places.start()
        try:
            with running(self.runtime):
                return super().work(*args, **kwargs)  # type: ignore[misc, no-any-return]
        finally:
            janitor.stop()
            self.places.stop()

    def _noting(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            result = step(*args, **kwargs)
        except StopRequested:
            raise
        except Exception as exc:
            self.quit_by = exc
            raise
        self.quit_by = None  # (an error RQ handled inside a step, then got past)
        return result

    # The steps of RQ's work loop whose errors make it quit.
    def check_for_suspension(self, *args: Any, **kwargs: Any) -> Any:
        return self._noting(super().check_for_suspension, *args, **kwargs)  # type: ignore[misc]

    def run_maintenance_tasks(self, *args: Any, **kwargs: Any) -> Any:
        return self._noting(super().run_maintenance_tasks, *args, **kwargs)  # type: ignore[misc]

    def dequeue_job_and_maintain_ttl(self, *args: Any, **kwargs: Any) -> Any:
        taken = self._noting(super().dequeue_job_and_maintain_ttl, *args, **kwargs)  # type: ignore[misc]
        if taken is not None and self.places is not None:
            self.places.taken(taken[1].name)  # (job, queue): the jobs behind it moved up
        return taken

    def execute_job(self, *args: Any, **kwargs: Any) -> Any:
        return self._noting(super().execute_job, *args, **kwargs)  # type: ignore[misc]

    def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        return self._noting(super().heartbeat, *args, **kwargs)  # type: ignore[misc]

    def handle_job_failure(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> Any:
        # What RQ keeps of the error is shown by rq-dashboard, which renders it unescaped: an exception
        # quoting a payload must not become markup there (look-alike angle brackets instead).
        if isinstance(kwargs.get("exc_string"), str):
            kwargs["exc_string"] = kwargs["exc_string"].replace("<", "\u2039").replace(">", "\u203a")
        return super().handle_job_failure(job, queue, *args, **kwargs)  # type: ignore[misc]

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        in_horse = getattr(self, "is_horse", False)
        with stopped_by(_kill_this_process if in_horse else None):
            return super().perform_job(job, queue, execution)  # type: ignore[misc, no-any-return]


def _kill_this_process() -> None:
    """Stop a forked work horse at once (its job has already been ended); RQ's worker sees it die."""
    os.kill(os.getpid(), signal.SIGKILL)


class Worker(_RuntimeMixin, rq.Worker):
    def fork_work_horse(self, *args: Any, **kwargs: Any) -> None:
        # Everything the worker holds goes to the permanent generation first, so that the work
        # horse's garbage collector never touches (and so copies, page by page) the parent's objects.
        gc.freeze()
        super().fork_work_horse(*args, **kwargs)


class SimpleWorker(_RuntimeMixin, rq.SimpleWorker):
    pass


class ThreadWorker(SimpleWorker):
    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        """Signals can only be handled in the main thread; the dev server stops these workers itself."""


def make_worker(
    runtime: Runtime,
    cls: type[Worker | SimpleWorker] = Worker,
    name: str | None = None,
    queues: list[str] | None = None,
) -> Any:
    """A worker of `cls` on `queues` (default: the configured queue), carrying `runtime`."""
    names = queues or [runtime.settings.queue]
    redis = runtime.store.redis  # (RQ's own calls)
    worker: Any = cls([rq.Queue(q, connection=redis) for q in names], connection=redis, name=name)
    worker.runtime = runtime
    return worker


def run_worker(
    runtime: Runtime,
    cls: type[Worker | SimpleWorker],
    *,
    name: str | None,
    queues: list[str],
    burst: bool,
    logging_level: str,
) -> int:
    """Run a worker until it is asked to stop (0), or a real fault stops it (1), riding out Redis outages.

    After an outage the worker starts again under the same name: its own
    registration from before (which a Redis restored from disk may still hold)
    is marked dead first, or RQ would refuse the name as taken.
    """
    previous: Any = None
    stop = threading.Event()
    while True:
        if previous is not None:
            with contextlib.suppress(RedisError):
                previous.register_death()
        worker: Any = None
        try:
            worker = make_worker(runtime, cls, name=name, queues=queues)
            previous = worker
            log.info("worker %s on queues %s at %s", worker.name, queues,
                     runtime.settings.redis_target)
            # RQ's scheduler (one per Redis, by lock) brings failed webhook deliveries back when due.
            worker.work(burst=burst, logging_level=logging_level, with_scheduler=True)
            quit_by = worker.quit_by
        except REDIS_TROUBLE as exc:  # RQ lets these through while it starts or stops
            quit_by = exc
        if worker is not None and worker._stop_requested:
            return 0
        if quit_by is None:
            return 0  # burst mode, and the queues are empty
        if not isinstance(quit_by, REDIS_TROUBLE):
            log.error("worker stopped by an unexpected error (%s: %s); exiting", type(quit_by).__name__, quit_by)
            return 1
        log.warning("worker stopped: Redis unreachable (%s); starting again once it answers", quit_by)
        if worker is not None and worker.pubsub_thread is not None:
            worker.pubsub_thread.stop()  # RQ's listener for its commands; the next worker has its own
        if not _wait_for_redis(runtime, stop):
            return 0


class _StopPinging(BaseException):
    """Raised by `_wait_for_redis`'s signal handler into a ping still retrying (not an Exception: nothing on the
    way catches it)."""


def _wait_for_redis(runtime: Runtime, stop: threading.Event) -> bool:
    """Wait until Redis answers (True), saying so every few seconds, or until SIGTERM/SIGINT (False).

    A signal ends the wait at once, even in the middle of a ping: redis-py tries a refused connection again
    ten times (about 4 s) before the ping fails.
    """
    pinging = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if pinging:
            raise _StopPinging

    handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        since = last_said = time.monotonic()
        delay = 0.1
        while not stop.is_set():
            try:
                pinging = True
                try:
                    runtime.store.ping()
                finally:
                    pinging = False
                log.info("Redis answers again after %.1f s; the worker starts again", time.monotonic() - since)
                return True
            except _StopPinging:
                return False
            except REDIS_TROUBLE as exc:
                if time.monotonic() - last_said >= OUTAGE_LOG_EVERY_S:
                    last_said = time.monotonic()
                    log.warning("Redis unreachable for %.0f s (%s); the worker waits for it",
                                last_said - since, exc)
            stop.wait(delay)
            delay = min(2.0, delay * 2)
        return False
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
