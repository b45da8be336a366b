"""What the API process holds while it runs: its Redis clients, store, hub and job types."""

from __future__ import annotations

from dataclasses import dataclass

from jobcast.registry import Registry
from jobcast.settings import Settings
from jobcast.store import AsyncStore, Store
from jobcast.store.connections import RedisFactory
from jobcast.store.keys import Keys
from jobcast.store.subscription import Subscriptions
from jobcast.web.auth import Auth
from jobcast.web.hub import Hub
from jobcast.web.jobfacts import JobFacts
from jobcast.web.sse import EventEncoder
from jobcast.worker.janitor import Janitor

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    registry: Registry
    store: AsyncStore
    """The API's reads (and its Idempotency-Key claims and submit counts)."""
    sync_store: Store
    """Its changes: submits (in one MULTI with RQ's enqueue), cancel, retry, delete, and the janitor's."""
    hub: Hub
    encode: EventEncoder
    janitor: Janitor
    auth: Auth
    facts: JobFacts
    """What the set streams read of a job once for all of them."""

    @classmethod
    def build(cls, settings: Settings, factory: RedisFactory, registry: Registry) -> Services:
        auth = Auth.from_settings(settings)
        encode = EventEncoder(auth.links)
        store = AsyncStore(factory.asyncio(), settings)
        hub = Hub(Subscriptions(factory.asyncio(retries=False)), Keys(settings.prefix), encode, store)
        sync_store = Store(factory.sync(), settings)
        return cls(settings, registry, store, sync_store, hub, encode, Janitor(sync_store), auth,
                   JobFacts(store, encode))

    async def start(self) -> None:
        await self.hub.start()
        self.janitor.start()

    async def stop(self) -> None:
        self.janitor.stop()
        await self.hub.stop()
        await self.store.aclose()
        self.sync_store.close()
