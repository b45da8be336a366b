from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from redis import Redis

from jobcast.settings import Settings
from jobcast.states import Status
from jobcast.store import Store
from jobcast.store.record import now_iso


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> Iterator[Redis]:
    r = fakeredis.FakeRedis(server=server)
    yield r
    r.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(prefix="t", max_running_per_owner=0)


@pytest.fixture
def store(redis: Redis, settings: Settings) -> Store:
    return Store(redis, settings)


@pytest.fixture
def new_job(store: Store) -> Callable[..., dict[str, str]]:
    """Create a queued job record (as the API does) and return it; `running=True` also starts it."""
    count = [0]

    def make(running: bool = True, **fields: Any) -> dict[str, str]:
        count[0] += 1
        job_id = f"{count[0]:032x}"
        record = {
            "id": job_id, "type": "demo", "owner": "anonymous", "status": Status.QUEUED, "progress": "0",
            "stage": "queued", "attempt": "1", "max_attempts": "1", "timeout_s": "60", "tags": "{}",
            "payload": "{}", "queue": "default", "created_at": now_iso(), **fields,
        }
        with store.redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            store.create(pipe, job_id, "anonymous", 1_700_000_000_000 + count[0], now_iso(), record)
            pipe.execute()
        if running:
            start = {"status": "running", "progress": "0", "message": "Starting", "stage": "", "queue_position": ""}
            assert store.emit(job_id, "start", ts=now_iso(), fields=start).outcome == "ok"
        loaded = store.load(job_id)
        assert loaded is not None
        return loaded

    return make


def events(store: Store, job_id: str) -> list[tuple[int, str, Any]]:
    """The job's event log as (id, name, decoded data), state events as clients get them."""
    import orjson

    from jobcast.store import logged_data

    out = []
    for eid, fields in store.redis.xrange(store.keys.events(job_id)):
        data = logged_data(fields[b"e"], fields[b"d"])
        out.append((int(eid.split(b"-")[1]), fields[b"e"].decode(), orjson.loads(data)))
    return out
