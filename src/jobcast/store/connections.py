"""Where Redis connections come from: a URL, or the in-memory server of `jobcast dev`.

A URL is a plain Redis (`redis://`, `rediss://`, `unix://`), or Sentinel nodes and
the name of the primary they watch, in the form rq-dashboard reads too (its
parser, `redis_sentinel_url`, reads ours, so the dashboard follows the same
primary):

    redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]

(the password is the primary's and its replicas'; Sentinels that need one of
their own, and ACL user names, are not supported: that parser drops them).

Every client made from such a URL asks the Sentinels where the primary is when
it connects, and again when a connection fails or finds the old primary demoted
to a replica (redis-py's `SentinelManagedConnection`): after a failover the next
command reaches the new primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel
from redis_sentinel_url import SentinelUrlParseResult, parse_sentinel_url

from jobcast.errors import ConfigError

__all__ = ["REDIS_TROUBLE", "RedisFactory"]

REDIS_TROUBLE = (RedisConnectionError, RedisTimeoutError)
"""What a Redis restart or outage raises (`BusyLoadingError`, Redis loading its data, is a ConnectionError)."""

ASYNC_POOL_SIZE = 64
"""Redis connections one API process uses at most for its requests (beside the hub's own)."""

SENTINEL_SCHEME = "redis+sentinel"

_URL_FORMS = ("redis://[:password@]host:port/db, or Sentinel nodes and the primary's name: "
              "redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]")


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the primary the Sentinels name, waited for when all are in use (as the plain URL's
    `BlockingConnectionPool`), instead of failing with "Too many connections"."""


_SENTINEL_OPTIONS = {"db", "service", "client_type", "min_other_sentinels", "socket_timeout", "socket_connect_timeout",
                     "sentinel_socket_timeout", "sentinel_socket_connect_timeout"}
"""The query parameters of a Sentinel URL that its parser reads; it passes over any other without a word."""


def _sentinel(url: str) -> SentinelUrlParseResult:
    """The Sentinel nodes, options and primary's name of a `redis+sentinel://` URL."""
    try:
        parts = urlsplit(url)
        ignored = sorted(set(parse_qs(parts.query)) - _SENTINEL_OPTIONS)
        parsed = parse_sentinel_url(url)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL={url!r} is not a Sentinel URL ({exc}); use {_URL_FORMS}.") from None
    if parts.username or ignored:
        what = f"query parameters {', '.join(ignored)}" if ignored else "a user name"
        raise ConfigError(f"REDIS_URL={url!r} has {what}, which the Sentinel form does not take (rq-dashboard's "
                          f"parser would pass over them): use {_URL_FORMS}, the password being the primary's.")
    if not parsed.default_client.service:
        raise ConfigError(f"REDIS_URL={url!r} names no primary: put the name the Sentinels know it by (their "
                          f"`sentinel monitor NAME ...`) after the nodes, as in "
                          f"redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0.")
    if parsed.default_client.type != "master":
        raise ConfigError(f"REDIS_URL={url!r} asks for a replica (client_type=slave): jobcast writes, so it needs "
                          "the primary; leave client_type out.")
    return parsed


def _primary(url: str, sentinel_class: type, redis_class: type, **options: Any) -> Any:
    """A client of `redis_class` for the primary the Sentinels of `url` name, found again after a failover.
    A Sentinel that does not answer within 2 s is passed over for the next."""
    s = _sentinel(url)
    nodes = sentinel_class(s.hosts, sentinel_kwargs={"socket_connect_timeout": 2, "socket_timeout": 2,
                                                     **s.sentinel_options}, **s.client_options)
    return nodes.master_for(s.default_client.service, redis_class=redis_class, **options)


@dataclass(frozen=True)
class RedisFactory:
    """Makes sync and asyncio clients for one Redis: a real one at `url`, or a fakeredis server."""

    url: str | None = None
    fake_server: Any = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.fake_server is None):
            raise ConfigError("give Redis either as a URL or as an in-memory server, not both or neither")
        if self.sentinels is not None:
            _sentinel(self.sentinels)  # a bad URL fails at start-up, not at the first connection

    @property
    def sentinels(self) -> str | None:
        """The URL when it names Sentinel nodes (`redis+sentinel://`), else None."""
        return self.url if self.url is not None and urlsplit(self.url).scheme == SENTINEL_SCHEME else None

    def sync(self) -> Redis:
        """A client speaking bytes (as RQ requires)."""
        if self.url is None:
            import fakeredis

            return fakeredis.FakeRedis(server=self.fake_server)
        options: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 30}
        if self.sentinels is not None:
            client: Redis = _primary(self.sentinels, Sentinel, Redis, **options)
            return client
        try:
            return Redis.from_url(self.url, **options)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL={self.url!r} is not a Redis URL ({exc}); use {_URL_FORMS}.") from None

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
        pool_size = {"max_connections": ASYNC_POOL_SIZE, "timeout": 5}
        if self.sentinels is not None:
            client: AsyncRedis = _primary(self.sentinels, AsyncSentinel, AsyncRedis,
                                          connection_pool_class=_BlockingSentinelPool, **pool_size, **options)
            return client
        try:
            # A burst of requests (a thousand streams opening at once) waits for a free
            # connection instead of failing with "Too many connections" past the pool's size.
            pool = BlockingConnectionPool.from_url(self.url, **pool_size, **options)
            return AsyncRedis(connection_pool=pool)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL={self.url!r} is not a Redis URL ({exc}); use {_URL_FORMS}.") from None
