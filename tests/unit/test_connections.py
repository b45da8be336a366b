"""REDIS_URL in its two forms: a plain Redis, or Sentinel nodes and the primary's name (as rq-dashboard reads it)."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import SentinelConnectionPool

from jobcast.errors import ConfigError
from jobcast.store.connections import ASYNC_POOL_SIZE, RedisFactory

NODES = "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"


def test_a_sentinel_url_gives_clients_of_the_primary_it_names() -> None:
    factory = RedisFactory(f"redis+sentinel://:secret@{NODES}/jobcast/2")
    sync, aio = factory.sync(), factory.asyncio()
    for pool in (sync.connection_pool, aio.connection_pool):
        assert isinstance(pool, (SentinelConnectionPool, AsyncSentinelPool))
        assert pool.service_name == "jobcast" and pool.is_master
        assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "secret"
    assert [(n.connection_pool.connection_kwargs["host"], n.connection_pool.connection_kwargs["port"])
            for n in sync.connection_pool.sentinel_manager.sentinels] == [
        ("127.0.0.1", 26379), ("127.0.0.1", 26380), ("127.0.0.1", 26381)]
    assert aio.connection_pool.max_connections == ASYNC_POOL_SIZE


@pytest.mark.parametrize(("url", "message"), [
    (f"redis+sentinel://{NODES}", "names no primary"),
    (f"redis+sentinel://{NODES}/", "names no primary"),
    (f"redis+sentinel://{NODES}/jobcast/0?client_type=slave", "needs the primary"),
    ("redis+sentinel://127.0.0.1:not-a-port/jobcast", "is not a Sentinel URL"),
    ("redis+sentinel://127.0.0.1:26379/jobcast/zero", "is not a Sentinel URL"),
    ("http://127.0.0.1:6379/0", "is not a Redis URL"),
    (f"redis+sentinel://{NODES}/jobcast/0?sentinel_password=pw", "query parameters sentinel_password"),
    (f"redis+sentinel://ops:pw@{NODES}/jobcast/0", "a user name"),
])
def test_a_bad_redis_url_says_what_to_write_before_anything_connects(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        RedisFactory(url).sync()
    assert "redis+sentinel://" in str(caught.value) or "sentinel monitor" in str(caught.value)
