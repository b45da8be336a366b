"""Every Redis key jobcast writes, in one place, so the data layout reads in one screen.

| key                        | type   | holds                                                      |
|----------------------------|--------|------------------------------------------------------------|
| `{p}:job:{id}`             | hash   | the job record: the job object's fields, `seq`, `cancel`,  |
|                            |        | `primary` (the Redis that last wrote it: `SEQ_JUMP`)       |
| `{p}:ev:{id}`              | stream | the job's events, entry id `0-{seq}`, about 1,000 kept     |
| `{p}:out:{id}`             | list   | the current attempt's output items (raw JSON), 1,000 kept  |
| `{p}:ch:{id}`              | pubsub | the same events, live: `"{seq} {event} {data}"`            |
| `{p}:owner:{owner}`        | zset   | the owner's jobs: `{created_ms:015d}:{id}` at score 0      |
| `{p}:active:{owner}`       | set    | the owner's jobs holding one of its slots (started, or on  |
|                            |        | their way to RQ with a slot; kept between auto retries)    |
| `{p}:waiting:{owner}`      | list   | the owner's jobs waiting for a slot, in order              |
| `{p}:waiting-owners`       | set    | owners with jobs waiting for a slot                        |
| `{p}:running`              | zset   | running job ids, scored by heartbeat deadline (ms)         |
| `{p}:delayed`              | zset   | job ids waiting to retry, scored by when (ms)              |
| `{p}:idem:{owner}:{key}`   | string | `{job id} {body hash}` for an Idempotency-Key, 24 h        |
| `{p}:janitor`              | string | the lock one janitor holds while it sweeps                 |
| `{p}:rate:{owner}:{min}`   | string | the owner's submissions in that minute (expires after 2)   |
| `{p}:feed:{owner}`         | stream | every event of the owner's jobs in order, entry `0-{n}`:   |
|                            |        | `j` job id, `s` its event id (`JOBCAST_FEED_KEPT` kept)     |
| `{p}:feed:{owner}:primary` | string | the Redis that last wrote the feed (`SEQ_JUMP`)            |
| `{p}:fch:{owner}`          | pubsub | the same, live: `"{n} {job id} {seq} {event} {data}"`      |
| `{p}:stats`                | hash   | the counters and histograms of `/metrics` (`web/metrics.py`)   |
| `{p}:told:{queue}`         | string | set for 200 ms when a worker told the queue's front its places |
| `{p}:alive:{worker}`       | string | set by a worker's janitor every few seconds, gone          |
|                            |        | `JOBCAST_HEARTBEAT_S` after its last beat                  |
| `{p}:queued`               | zset   | jobs handed to RQ and not started yet, scored by when they |
|                            |        | were last checked (ms)                                     |

The braces are literal: Redis Cluster hash tags, so that one job's keys would live
on one shard. jobcast does not run on Redis Cluster today: its scripts also touch
global keys (`{p}:running`, `{p}:stats`, an owner's keys, RQ's queue). The per-job keys get the
job TTL (`JOBCAST_JOB_TTL`) when the job ends; an owner's index loses ids lazily
when a listing finds their record gone.

RQ's own keys (`rq:job:{id}`, `rq:queue:{name}`, ...) keep RQ's layout. A job's
first trip through RQ is the RQ job with the jobcast id; each later trip (a retry,
a start after waiting for a slot) gets `{id}-{run}` (`trips.rq_job_id`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rq.job import Job
from rq.queue import Queue
from rq.worker import Worker
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    prefix: str = "jc"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:ev:{{{job_id}}}"

    def items(self, job_id: str) -> str:
        return f"{self.prefix}:out:{{{job_id}}}"

    def channel(self, job_id: str) -> str:
        return f"{self.prefix}:ch:{{{job_id}}}"

    def owner(self, owner: str) -> str:
        return f"{self.prefix}:owner:{{{owner}}}"

    def feed(self, owner: str) -> str:
        return f"{self.prefix}:feed:{{{owner}}}"

    def feed_primary(self, owner: str) -> str:
        """The Redis that last wrote the owner's feed (`SEQ_JUMP` in `lua/lib.lua`)."""
        return f"{self.feed(owner)}:primary"

    def feed_channel(self, owner: str) -> str:
        return f"{self.prefix}:fch:{{{owner}}}"

    def active(self, owner: str) -> str:
        return f"{self.prefix}:active:{{{owner}}}"

    def waiting(self, owner: str) -> str:
        return f"{self.prefix}:waiting:{{{owner}}}"

    @property
    def waiting_owners(self) -> str:
        return f"{self.prefix}:waiting-owners"

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    def idempotency(self, owner: str, key: str) -> str:
        return f"{self.prefix}:idem:{{{owner}}}:{key}"

    def submit_rate(self, owner: str, minute: int) -> str:
        return f"{self.prefix}:rate:{{{owner}}}:{minute}"

    @property
    def janitor(self) -> str:
        return f"{self.prefix}:janitor"

    def alive(self, worker_name: str) -> str:
        """Exists while the RQ worker `worker_name` beats (RQ's own worker key outlives a killed worker by minutes)."""
        return f"{self.prefix}:alive:{worker_name}"

    @property
    def queued(self) -> str:
        return f"{self.prefix}:queued"

    def told(self, queue: str) -> str:
        return f"{self.prefix}:told:{queue}"

    def model_leases(self, model: str) -> str:
        """A model's calls in flight, across every worker: lease ids by the time each lease expires (zset)."""
        return f"{self.prefix}:model:{{{model}}}:leases"

    def model_waiting(self, model: str) -> str:
        """Calls waiting for a lease of the model, by their turn (zset; `lua/capacity.lua`)."""
        return f"{self.prefix}:model:{{{model}}}:waiting"

    def model_pause(self, model: str) -> str:
        """Until when (ms) every call to the model waits: the model server answered 429 with a time to wait."""
        return f"{self.prefix}:model:{{{model}}}:pause"

    def model_turns(self, model: str) -> str:
        """Per owner, its next turn for the model; `_served`, the turn of the last call let through (hash), and
        `seen:<lease>`, when each waiting call last asked, and `est:<lease>`, the tokens it may take."""
        return f"{self.prefix}:model:{{{model}}}:turns"

    def model_window(self, model: str) -> str:
        """The model's calls of the last minute (`JOBCAST_MODEL_RPM`, `JOBCAST_MODEL_TPM`): lease ids by when each
        was let through (zset; `lua/capacity.lua`)."""
        return f"{self.prefix}:model:{{{model}}}:window"

    def model_tokens(self, model: str) -> str:
        """The tokens of each call in the model's minute, and `_sum`, their total (hash)."""
        return f"{self.prefix}:model:{{{model}}}:tokens"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @staticmethod
    def rq_queue(name: str) -> str:
        return f"{Queue.redis_queue_namespace_prefix}{name}"

    @staticmethod
    def rq_job(rq_job_id: str) -> str:
        return f"{Job.redis_job_namespace_prefix}{rq_job_id}"

    @staticmethod
    def rq_worker_name(worker_key: bytes) -> str:
        """The name of the RQ worker whose key (as RQ's worker sets list them) is `worker_key`."""
        return worker_key.decode().removeprefix(Worker.redis_worker_namespace_prefix)

    @staticmethod
    def rq_workers(queue: str) -> str:
        """RQ's set of the workers that listen on `queue`."""
        return str(WORKERS_BY_QUEUE_KEY % queue)
