"""A job's share of the model: each call waits for its way through the capacity every worker shares
(`store.capacity`: calls at once, requests and tokens per minute, a 429's pause, owners' turns), its job's
message saying what it waits for meanwhile, and a cancel ending the wait."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

from jobcast.context import JobContext, JobFailed
from jobcast.store import Grant

__all__ = ["Call", "Capacity", "WAITING"]

WAITING = {
    "pause": "Waiting for model capacity (the model server asked to slow down)",
    "calls": "Waiting for model capacity (calls at once)",
    "requests": "Waiting for model capacity (requests per minute)",
    "tokens": "Waiting for model capacity (tokens per minute)",
}
"""A job's message while a call of its waits, by what it waits for (the contract's wording)."""
POLL_S = 0.1
"""How often a waiting call asks again."""


class Call:
    """One call let through to the model, for as long as it runs."""

    def __init__(self, capacity: Capacity, lease: str) -> None:
        self._capacity = capacity
        self._lease = lease
        self._renewed = time.monotonic()

    def renew(self) -> None:
        """Still streaming: keep the call's hold (at most every third of `JOBCAST_MODEL_LEASE_MS`)."""
        if time.monotonic() - self._renewed >= self._capacity.renew_every_s:
            self._renewed = time.monotonic()
            self._capacity.shared.renew(self._capacity.model, self._lease)

    def used(self, tokens: int) -> None:
        """What the call used in all, as the server reported it: the minute's count of tokens is corrected (the
        minute is kept with `JOBCAST_MODEL_RPM` or `JOBCAST_MODEL_TPM` set; without either, nothing to do)."""
        settings = self._capacity.ctx.settings
        if settings.model_rpm or settings.model_tpm:
            self._capacity.shared.used(self._capacity.model, self._lease, tokens)


class Capacity:
    """The model as one job's calls share it with every other worker's."""

    def __init__(self, ctx: JobContext, model: str) -> None:
        self.ctx = ctx
        self.model = model
        self.shared = ctx.store.capacity
        self.renew_every_s = ctx.settings.model_lease_s / 3

    @contextlib.contextmanager
    def hold(self, tokens: int) -> Iterator[Call]:
        """Wait for the model's capacity for a call that may take `tokens` (its prompt and `max_tokens`), then
        hold it for the block. Raises JobCanceled when the job is canceled while it waits, and JobFailed when
        the call alone needs more tokens than a minute allows."""
        lease, asked = uuid.uuid4().hex, time.monotonic()
        try:
            grant = self._take(lease, tokens)
            if not grant.held:
                with self.ctx.waiting(WAITING[grant.waits_for]) as say:
                    while not grant.held:
                        self.ctx.sleep(POLL_S)
                        grant = self._take(lease, tokens)
                        if not grant.held and self.ctx.current[1] != WAITING[grant.waits_for]:
                            say(WAITING[grant.waits_for])
            self.shared.observe_wait(self.model, time.monotonic() - asked)
            yield Call(self, lease)
        finally:
            self.shared.give_back(self.model, lease)

    def _take(self, lease: str, tokens: int) -> Grant:
        grant = self.shared.take(self.model, lease, self.ctx.owner, tokens)
        if grant.never:
            tpm = self.ctx.settings.model_tpm
            raise JobFailed(f"a call of about {tokens} tokens (prompt and max_tokens) is more than "
                            f"JOBCAST_MODEL_TPM={tpm} allows in a minute: raise JOBCAST_MODEL_TPM, or ask for "
                            "fewer tokens", code="model_unavailable", retryable=False)
        return grant

    def slow_down(self, seconds: float) -> None:
        """The model server asked to wait `seconds` (a 429's `Retry-After`): every worker's next call to the
        model waits until then."""
        self.shared.pause(self.model, seconds)
