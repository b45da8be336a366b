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
        return cls(settings, redis, Store(redis, settings), load_job_types(settings.job_modules))
