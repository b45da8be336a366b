"""RQ worker classes that run jobcast jobs.

`Worker` forks a work horse per job (RQ's default, the one for production);
`SimpleWorker` runs jobs in its own process; `ThreadWorker` runs in a thread
(the in-process workers of `jobcast dev`): RQ installs signal handlers and
uses SIGALRM for time limits, which only work in the main thread, so it skips
the first and keeps time with a timer thread instead.

Each class carries a `Runtime` and makes it current while a job runs; one built
by RQ itself (`rq worker -w jobcast.worker.Worker`) reads it from the environment.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any

import rq
from rq.timeouts import TimerDeathPenalty

from jobcast.connections import RedisFactory
from jobcast.janitor import Janitor
from jobcast.runner import _hard_stop, _runtime
from jobcast.runtime import Runtime
from jobcast.settings import Settings

__all__ = ["SimpleWorker", "ThreadWorker", "Worker", "make_worker"]


class _RuntimeMixin:
    """Makes the worker's `Runtime` current while it works, and runs a janitor beside it."""

    runtime: Runtime | None = None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        if self.runtime is None:
            settings = Settings.from_env()
            self.runtime = Runtime.build(settings, RedisFactory(settings.redis_url or "redis://127.0.0.1:6379/0"))
        if self.runtime.settings.model_unavailable() is None:
            import jobcast.llm  # noqa: F401 (loaded once here, not in every forked work horse)
        janitor = Janitor(self.runtime.store)
        janitor.start()
        token = _runtime.set(self.runtime)
        try:
            return super().work(*args, **kwargs)  # type: ignore[misc, no-any-return]
        finally:
            _runtime.reset(token)
            janitor.stop()

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        in_horse = getattr(self, "is_horse", False)
        token = _hard_stop.set(_kill_this_process if in_horse else None)
        try:
            return super().perform_job(job, queue, execution)  # type: ignore[misc, no-any-return]
        finally:
            _hard_stop.reset(token)


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
    worker: Any = cls([rq.Queue(q, connection=runtime.redis) for q in names], connection=runtime.redis, name=name)
    worker.runtime = runtime
    return worker
