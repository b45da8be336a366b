"""A model's capacity in Redis, shared by every worker: calls at once, requests and tokens per minute, the pause
a 429 asks for, and the turns that keep owners fair (`lua/capacity.lua`, `lua/tokens_used.lua`).

Why not the `limits` package for the minute (read in its source, 5.8): its exact window (moving window) keeps
one list entry per unit of cost, so a minute of 2,000,000 tokens is a list of 2,000,000 timestamps; its cheap
one (sliding window counter) is an estimate that can let more than the limit through in a real 60 s; neither
takes back or adds to a hit once made (the correction after a call), and a hit is a script of its own, so
"a turn in line, a call at once, a request and its tokens" could not be taken together or not at all. Here the
window holds one entry per call, with its tokens, in the same script as the line, on Redis's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis import Redis

from jobcast.settings import Settings
from jobcast.store.keys import Keys
from jobcast.store.record import now_ms
from jobcast.store.scripts import CAPACITY_LUA, PAUSE_LUA, TOKENS_USED_LUA

__all__ = ["Grant", "ModelCapacity", "ModelInUse", "STALE_WAIT_MS", "WINDOW_MS"]

STALE_WAIT_MS = 10_000
"""A call waiting for model capacity that has not asked again for this long is dropped from the line."""

WINDOW_MS = 61_000
"""The minute of `JOBCAST_MODEL_RPM` and `JOBCAST_MODEL_TPM`: a second over 60, for the time between a call's
leaving the line and its request's reaching the provider (which counts any 60 s)."""


@dataclass(frozen=True, slots=True)
class Grant:
    held: bool
    """True: the call may go now (it holds a lease until `give_back`)."""
    waits_for: str
    """What it waits for, when not held: `pause` (a 429's), `calls`, `requests` or `tokens`."""
    never: bool = False
    """The call alone needs more tokens than `JOBCAST_MODEL_TPM` allows in a minute: it can never go."""


@dataclass(frozen=True, slots=True)
class ModelInUse:
    """A model's capacity in use now, across every worker (`/metrics`)."""

    calls: int
    """Calls in flight."""
    requests: int
    """Requests of the last minute."""
    tokens: int
    """Their tokens (reserved, or used once a call is over)."""


class ModelCapacity:
    """What one process asks of every model's shared capacity (`Store.capacity`)."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self._take = redis.register_script(CAPACITY_LUA)
        self._used = redis.register_script(TOKENS_USED_LUA)
        self._pause = redis.register_script(PAUSE_LUA)

    def take(self, model: str, lease: str, owner: str, tokens: int) -> Grant:
        """Ask for the model as `lease`, in the owner's turn, for a call that may take `tokens`; not held: ask
        again (every `STALE_WAIT_MS` at the latest, or the call leaves the line)."""
        k, s = self.keys, self.settings
        keys = [k.model_leases(model), k.model_waiting(model), k.model_turns(model), k.model_window(model),
                k.model_tokens(model), k.model_pause(model)]
        args: list[str | int] = [lease, owner, s.model_concurrency, int(s.model_lease_s * 1000), STALE_WAIT_MS,
                                 s.model_rpm, s.model_tpm, tokens, WINDOW_MS]
        held, waits_for = cast(list[int | bytes], self._take(keys=keys, args=args))
        return Grant(held == 1, waits_for.decode() if isinstance(waits_for, bytes) else str(waits_for), held == -1)

    def renew(self, model: str, lease: str) -> None:
        """Hold the lease for another `JOBCAST_MODEL_LEASE_MS` (a call still streaming)."""
        self.redis.zadd(self.keys.model_leases(model), {lease: now_ms() + int(self.settings.model_lease_s * 1000)},
                        xx=True)

    def used(self, model: str, lease: str, tokens: int) -> None:
        """The call let through as `lease` used `tokens` in all: its reservation in the minute becomes that."""
        self._used(keys=[self.keys.model_tokens(model)], args=[lease, tokens])

    def give_back(self, model: str, lease: str) -> None:
        """The call is over: its place goes to the next waiting one (or, if it was waiting still, it waits no more)."""
        k = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(k.model_leases(model), lease)
            pipe.zrem(k.model_waiting(model), lease)
            pipe.hdel(k.model_turns(model), f"seen:{lease}", f"est:{lease}")
            pipe.execute()

    def pause(self, model: str, seconds: float) -> None:
        """Every call to the model waits `seconds` from now (unless a longer wait holds already)."""
        self._pause(keys=[self.keys.model_pause(model)], args=[now_ms() + int(seconds * 1000)])

    def observe_wait(self, model: str, seconds: float) -> None:
        """A model call's wait for capacity, into the histogram of `/metrics` (the buckets of `lua/lib.lua`'s
        `observe`: at most 4^k ms)."""
        ms = seconds * 1000
        k = next((k for k in range(12) if ms <= 4 ** k), 12)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.stats, f"model_wait|{model}|{k}", 1)
            pipe.hincrbyfloat(self.keys.stats, f"model_wait_sum|{model}", seconds)
            pipe.execute()
