"""`run_worker`'s own wait for Redis: a stop request ends it at once."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

from jobcast.worker.workers import _wait_for_redis


def test_sigterm_while_a_ping_is_still_retrying_ends_the_wait_for_redis_at_once() -> None:
    def ping_retrying_a_refused_connection() -> None:  # (redis-py's retries take seconds; SIGTERM comes mid-way)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    runtime: Any = SimpleNamespace(store=SimpleNamespace(ping=ping_retrying_a_refused_connection))
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert _wait_for_redis(runtime, threading.Event()) is False  # stopped, not "Redis answers again"
    assert time.monotonic() - t0 < 2
    assert signal.getsignal(signal.SIGTERM) is before
