"""Where Redis connections come from: a URL, or the in-memory server of `jobcast dev`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobcast.errors import ConfigError

__all__ = ["REDIS_TROUBLE", "RedisFactory"]

REDIS_TROUBLE = (RedisConnectionError, RedisTimeoutError)
"""What a Redis restart or outage raises (`BusyLoadingError`, Redis loading its data, is a ConnectionError)."""

ASYNC_POOL_SIZE = 64
"""Redis connections one API process uses at most for its requests (beside the hub's own)."""


@dataclass(frozen=True)
class RedisFactory:
    """Makes sync and asyncio clients for one Redis: a real one at `url`, or a fakeredis server."""

    url: str | None = None
    fake_server: Any = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.fake_server is None):
            raise ConfigError("give Redis either as a URL or as an in-memory server, not both or neither")

    def sync(self) -> Redis:
        """A client speaking bytes (as RQ requires)."""
        if self.url is None:
            import fakeredis

            return fakeredis.FakeRedis(server=self.fake_server)
        try:
            return Redis.from_url(self.url, socket_connect_timeout=5, health_check_interval=30)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL={self.url!r} is not a Redis URL ({exc}); use redis://host:port/db.") from None

    def asyncio(self, *, retries: bool = True) -> AsyncRedis:
        """An asyncio client speaking bytes.

        `retries=False` is for the pub/sub hub: every connection loss raises at
        once (a silent reconnect would lose messages unseen), and redis-py's
        health check is off (it would read the socket beside the hub's reader).
        """
        if self.url is None:
            import fakeredis

            return fakeredis.FakeAsyncRedis(server=self.fake_server)
        options: dict[str, Any] = {"socket_connect_timeout": 2, "health_check_interval": 30}
        if not retries:
            options["retry"] = AsyncRetry(NoBackoff(), 0)
            options["health_check_interval"] = 0
        try:
            # A burst of requests (a thousand streams opening at once) waits for a free
            # connection instead of failing with "Too many connections" past the pool's size.
            pool = BlockingConnectionPool.from_url(self.url, max_connections=ASYNC_POOL_SIZE, timeout=5, **options)
            return AsyncRedis(connection_pool=pool)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL={self.url!r} is not a Redis URL ({exc}); use redis://host:port/db.") from None
