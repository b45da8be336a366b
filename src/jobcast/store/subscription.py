"""The API's live half of Redis: pub/sub connections to job channels, for the hub (`web/hub.py`).

A `Subscription` is one connection, read by one loop: redis-py's own health
check would read its socket beside that loop, so it is off for this client
(`connections.RedisFactory`), and the hub pings when all is quiet instead.
The client must not retry on its own either: a silent reconnect would lose
messages unseen, where a failure makes the hub read them from the logs.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import PubSub

__all__ = ["Subscription", "Subscriptions"]


class Subscription:
    """One pub/sub connection: subscribe to channels, and read what comes, as redis-py parses it."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def connect(self) -> None:
        await self._pubsub.connect()  # type: ignore[no-untyped-call]

    async def subscribe(self, *channels: bytes) -> None:
        """Ask for `channels` (each confirmed by a `subscribe` reply that `read` returns)."""
        await self._pubsub.execute_command("SUBSCRIBE", *channels)

    async def unsubscribe(self, channel: bytes) -> None:
        await self._pubsub.execute_command("UNSUBSCRIBE", channel)

    async def ping(self) -> None:
        """Ask for a `pong` reply (which `read` returns), to learn that the connection still works."""
        await self._pubsub.execute_command("PING")

    async def read(self, timeout: float) -> list[bytes] | None:
        """The next reply (`[b"message", channel, data]`, `[b"subscribe", channel, n]`, ...), or None after
        `timeout` s of silence."""
        return cast(list[bytes] | None, await self._pubsub.parse_response(block=False, timeout=timeout))

    async def close(self) -> None:
        await self._pubsub.aclose()


class Subscriptions:
    """Makes `Subscription`s over one client (see the module's note on how it must be configured)."""

    def __init__(self, redis: AsyncRedis) -> None:
        self._redis = redis

    def open(self) -> Subscription:
        """A new connection, not yet connected (`Subscription.connect`)."""
        return Subscription(self._redis.pubsub())

    async def aclose(self) -> None:
        await self._redis.aclose()
