"""The worker's place teller: a queue a job was taken from is told its places, at most every 200 ms, and a
burst's last take is told too, whatever Redis does meanwhile."""

from __future__ import annotations

import fakeredis

from jobcast.store import Store
from jobcast.worker.places import PlaceTeller
from tests.unit.conftest import events


def _place(store: Store, job_id: str) -> int:
    *_, (_, _, data) = events(store, job_id)
    return int(data["queue_position"])


def test_every_take_of_a_burst_is_told_once_its_turn_comes(store: Store, new_job) -> None:
    queue = "rq:queue:default"
    jobs = [new_job(running=False) for _ in range(4)]
    store.redis.rpush(queue, *[j["id"] for j in jobs])
    teller = PlaceTeller(store)

    store.redis.lpop(queue)  # a worker takes the first: the others move up
    teller.taken("default")
    assert not teller.tell_due()
    assert [_place(store, j["id"]) for j in jobs[1:]] == [0, 1, 2]

    store.redis.lpop(queue)  # another take within 200 ms: its turn comes later, it is not dropped
    teller.taken("default")
    assert teller.tell_due()
    assert _place(store, jobs[3]["id"]) == 2
    store.redis.delete(store.keys.told("default"))  # (the 200 ms are over)
    assert not teller.tell_due()
    assert [_place(store, j["id"]) for j in jobs[2:]] == [0, 1]


def test_a_queue_is_told_after_redis_comes_back(server: fakeredis.FakeServer, store: Store, new_job) -> None:
    jobs = [new_job(running=False) for _ in range(3)]
    store.redis.rpush("rq:queue:default", *[j["id"] for j in jobs[1:]])
    teller = PlaceTeller(store)
    teller.taken("default")
    server.connected = False
    assert teller.tell_due()  # still due
    server.connected = True
    assert not teller.tell_due()
    assert _place(store, jobs[2]["id"]) == 1
