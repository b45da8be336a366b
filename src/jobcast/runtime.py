"""What a worker process holds: its settings, Redis connection, store and job types."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from jobcast.connections import RedisFactory
from jobcast.registry import Registry, load_job_types
from jobcast.settings import Settings
from jobcast.store import Store

__all__ = ["Runtime"]


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: Redis
    store: Store
    registry: Registry

    @classmethod
    def build(cls, settings: Settings, factory: RedisFactory) -> Runtime:
        redis = factory.sync()
        # A worker rides out Redis trouble for as long as the janitor would take to call its job lost.
        store = Store(redis, settings, ride_out_s=settings.heartbeat_deadline_s)
        return cls(settings, redis, store, load_job_types(settings.job_modules))
