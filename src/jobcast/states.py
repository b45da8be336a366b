"""The states a job is in, and what an attempt to change one can come to: one home for the words the
record, the events, the Lua scripts and the contract share. str-valued, so each is its plain string in
JSON, in Redis and in comparisons (`Status.QUEUED == "queued"`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["Outcome", "STATUSES", "Stage", "Status", "TERMINAL"]


class Status(StrEnum):
    """A job's `status` (the contract's five)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


STATUSES: Final = tuple(Status)
"""Every status, in the contract's order."""
TERMINAL: Final = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})
"""The statuses a job ends in (until a retry)."""


class Stage(StrEnum):
    """The stages jobcast itself gives a queued job, or a running batch (job code names its own stages while it
    runs)."""

    QUEUED = "queued"
    """In its RQ queue: "Queued (N ahead)"."""
    WAITING = "waiting"
    """Outside RQ, waiting for one of its owner's slots."""
    RETRY = "retry"
    """Waiting for its next automatic attempt; or a retried batch, running, while its parts that did not
    complete are sent again (`batches.resume`)."""
    PARTS = "parts"
    """A running batch whose parts run as jobs of their own (`batches.py`): no code of its own runs."""
    JOIN = "join"
    """A running batch whose parts have all ended: its join is due (or running) on a worker."""


class Outcome(StrEnum):
    """What a change of a job (`Store.emit`, by one of the scripts in `lua/`) came to."""

    OK = "ok"
    """Written."""
    PARKED = "parked"
    """A start past the owner's running limit: the job waits for a slot instead."""
    SAME = "same"
    """Nothing changed: nothing written."""
    REFUSED = "refused"
    """The job is not in the state (status, attempt, trip) the emit was guarded on."""
    MISSING = "missing"
    """No such job."""
