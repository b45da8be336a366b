"""A model's shared capacity as the store keeps it (`lua/capacity.lua`): calls at once, requests and tokens per
minute with the correction after a call, a 429's pause, and the owners' turns."""

from __future__ import annotations

from redis import Redis

from jobcast.settings import Settings
from jobcast.store.capacity import ModelCapacity
from jobcast.store.keys import Keys

M = "stand-in"


def _capacity(redis: Redis, **limits: int) -> ModelCapacity:
    return ModelCapacity(redis, Keys("t"), Settings(prefix="t", **limits))  # type: ignore[arg-type]


def test_calls_at_once_wait_for_a_call_to_end(redis: Redis) -> None:
    cap = _capacity(redis, model_concurrency=2)
    assert cap.take(M, "a", "o", 10).held and cap.take(M, "b", "o", 10).held
    third = cap.take(M, "c", "o", 10)
    assert not third.held and third.waits_for == "calls"
    cap.give_back(M, "a")
    assert cap.take(M, "c", "o", 10).held


def test_requests_per_minute_count_calls_that_already_ended(redis: Redis) -> None:
    cap = _capacity(redis, model_rpm=3)
    for lease in "abc":
        assert cap.take(M, lease, "o", 10).held
        cap.give_back(M, lease)
    fourth = cap.take(M, "d", "o", 10)
    assert not fourth.held and fourth.waits_for == "requests"


def test_tokens_per_minute_are_reserved_then_corrected_to_what_the_call_used(redis: Redis) -> None:
    cap = _capacity(redis, model_tpm=100)
    assert cap.take(M, "a", "o", 60).held  # (a prompt and max_tokens of 60)
    second = cap.take(M, "b", "o", 50)
    assert not second.held and second.waits_for == "tokens"
    cap.used(M, "a", 30)  # it used 30 in the end
    cap.give_back(M, "a")
    assert cap.take(M, "b", "o", 50).held
    cap.used(M, "b", 65)  # more than it reserved: the minute counts what it used
    assert cap.take(M, "c", "o", 5).held and not cap.take(M, "d", "o", 1).held


def test_a_call_bigger_than_a_minutes_tokens_can_never_go(redis: Redis) -> None:
    cap = _capacity(redis, model_tpm=100)
    grant = cap.take(M, "a", "o", 101)
    assert grant.never and not grant.held
    assert not redis.zcard("t:model:{stand-in}:waiting"), "it stays in line, holding up everyone behind it"


def test_a_429s_pause_holds_every_call_with_no_limit_set(redis: Redis) -> None:
    cap = _capacity(redis)
    assert cap.take(M, "a", "o", 10).held
    cap.pause(M, 30)
    paused = cap.take(M, "b", "o", 10)
    assert not paused.held and paused.waits_for == "pause"


def test_calls_in_line_go_by_owners_turns_and_a_later_owner_waits_behind_one_call_of_each(redis: Redis) -> None:
    cap = _capacity(redis, model_concurrency=1)
    assert cap.take(M, "busy", "x", 1).held
    for n in range(5):
        assert not cap.take(M, f"alice-{n}", "alice", 1).held
    assert not cap.take(M, "bob-0", "bob", 1).held
    served = []
    cap.give_back(M, "busy")
    while len(served) < 6:
        for lease in [*(f"alice-{n}" for n in range(5)), "bob-0"]:
            if lease not in served and cap.take(M, lease, lease.split("-")[0], 1).held:
                served.append(lease)
                cap.give_back(M, lease)
                break
    assert served[:2] == ["alice-0", "bob-0"], served


def test_the_first_in_line_holds_back_those_behind_it_for_tokens(redis: Redis) -> None:
    cap = _capacity(redis, model_tpm=100)
    assert cap.take(M, "a", "o", 50).held
    assert not cap.take(M, "big", "o", 80).held  # first in line: waits for tokens
    small = cap.take(M, "small", "o", 10)  # would fit alone, but not before the one ahead of it
    assert not small.held and small.waits_for == "tokens"
