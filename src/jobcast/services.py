"""What the API process holds while it runs: its Redis clients, store, hub and job types."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from jobcast.auth import Auth
from jobcast.connections import RedisFactory
from jobcast.hub import Hub
from jobcast.janitor import Janitor
from jobcast.keys import Keys
from jobcast.registry import Registry
from jobcast.settings import Settings
from jobcast.sse import EventEncoder
from jobcast.store import AsyncStore, Store

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    registry: Registry
    redis: AsyncRedis
    sync_redis: Redis
    store: AsyncStore
    sync_store: Store
    hub: Hub
    encode: EventEncoder
    janitor: Janitor
    auth: Auth

    @classmethod
    def build(cls, settings: Settings, factory: RedisFactory, registry: Registry) -> Services:
        redis = factory.asyncio()
        sync_redis = factory.sync()
        auth = Auth.from_settings(settings)
        encode = EventEncoder(auth.links)
        store = AsyncStore(redis, settings)
        hub = Hub(factory.asyncio(retries=False), Keys(settings.prefix), encode, store)
        sync_store = Store(sync_redis, settings)
        return cls(settings, registry, redis, sync_redis, store, sync_store, hub, encode, Janitor(sync_store), auth)

    async def start(self) -> None:
        await self.hub.start()
        self.janitor.start()

    async def stop(self) -> None:
        self.janitor.stop()
        await self.hub.stop()
        await self.redis.aclose()
        self.sync_redis.close()
