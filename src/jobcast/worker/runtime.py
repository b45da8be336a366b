"""What a worker process holds (its settings, store and job types), and the one that is
current while it works, for the code it runs (`current_runtime`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jobcast.registry import Registry, load_job_types
from jobcast.settings import Settings
from jobcast.store import Store
from jobcast.store.connections import RedisFactory

__all__ = ["Runtime", "current_runtime", "hard_stop", "running", "stopped_by"]


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    """Every Redis call of the worker's own goes through it; RQ's worker gets its connection."""
    registry: Registry

    @classmethod
    def build(cls, settings: Settings, factory: RedisFactory) -> Runtime:
        # A worker rides out Redis trouble for as long as the janitor would take to call its job lost.
        store = Store(factory.sync(), settings, ride_out_s=settings.heartbeat_deadline_s)
        return cls(settings, store, load_job_types(settings.job_modules))


_current: ContextVar[Runtime | None] = ContextVar("jobcast_runtime", default=None)
_hard_stop: ContextVar[Callable[[], None] | None] = ContextVar("jobcast_hard_stop", default=None)


def current_runtime() -> Runtime:
    """The runtime of the worker running this code; RuntimeError outside a jobcast worker."""
    runtime = _current.get()
    if runtime is None:
        raise RuntimeError(
            "jobcast jobs must run in a jobcast worker: start one with `jobcast worker` or `python worker.py` "
            "(or `rq worker -w jobcast.worker.Worker`)."
        )
    return runtime


@contextmanager
def running(runtime: Runtime) -> Iterator[None]:
    """Make `runtime` current for the code run inside (a worker's work loop)."""
    token = _current.set(runtime)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def stopped_by(kill: Callable[[], None] | None) -> Iterator[None]:
    """How to stop job code run inside that ignores a cancel (kill the forked work horse); None where jobs
    share the worker's process and cannot be killed."""
    token = _hard_stop.set(kill)
    try:
        yield
    finally:
        _hard_stop.reset(token)


def hard_stop() -> Callable[[], None] | None:
    """What `stopped_by` set for this job, if anything."""
    return _hard_stop.get()
