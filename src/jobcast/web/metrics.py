"""`GET /metrics`: what every jobcast process did, in the Prometheus text format.

Two kinds of figures, so that they add up however many API processes and
workers run, on however many machines:

- Job figures live in Redis, in one hash (`{p}:stats`) that the Lua scripts add
  to in the same atomic step as the change they count (submit, start, end,
  retry, every event) and the webhook delivery adds to after each try; queue
  depths and running jobs are read from Redis when scraped. Every API process
  reports the same cluster-wide values: scrape any one of them, or use `max()`
  (not `sum()`) across instances.
- Figures of the API process itself (open streams, events written to clients)
  are counted in the process by prometheus-client. With several API processes
  on one machine (`jobcast serve --workers N`) they share a directory
  (`PROMETHEUS_MULTIPROC_DIR`, which `serve` creates when it is unset) and each
  process reports the machine's total; with several machines, `sum()` them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import REGISTRY, Collector

from jobcast.store import AsyncStore, ModelInUse

__all__ = ["BUCKETS_S", "EVENTS_DELIVERED", "STREAMS_OPEN", "fresh_multiprocess_dir", "process_exits", "render"]

BUCKETS_S: Final = tuple(4**k / 1000 for k in range(12))
"""Histogram bounds in seconds: 1 ms, 4 ms, 16 ms, ... 70 min (`observe()` in `lua/lib.lua`)."""

STREAMS_OPEN = Gauge("jobcast_sse_streams_open", "Event streams open in this API process (machine total in "
                     "multiprocess mode).", multiprocess_mode="livesum")
EVENTS_DELIVERED = Counter("jobcast_events_delivered", "Events written to SSE clients (snapshot, backlog and live).")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def fresh_multiprocess_dir(path: str) -> None:
    """Make `path` an empty directory for the API processes' figures (before they start)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def process_exits() -> None:
    """In multiprocess mode, drop this process's share of the live gauges (its streams are gone)."""
    if multiprocess_dir():
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _forget_dead_processes(path: str) -> None:
    """Drop the live gauges of API processes that died without `process_exits` (killed, restarted)."""
    for name in os.listdir(path):
        pid = name.rpartition("_")[2].removesuffix(".db")
        if name.startswith("gauge_live") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class _ThisProcess(Collector):
    """The default registry: this process's own counters, plus its CPU, memory and GC figures."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def _text(raw: dict[bytes, bytes]) -> Iterator[tuple[list[str], float]]:
    for field, value in raw.items():
        yield field.decode().split("|"), float(value)


def _histogram(name: str, doc: str, fields: dict[str, dict[int, float]], sums: dict[str, float],
               label: str = "type") -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for jtype in sorted(fields):
        counts, running, buckets = fields[jtype], 0.0, []
        for k, bound in enumerate((*BUCKETS_S, float("inf"))):
            running += counts.get(k, 0.0)
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric([jtype], buckets, sums.get(jtype, 0.0))
    return family


def job_families(stats: dict[bytes, bytes], queues: dict[str, int], delayed: int, running: int,
                 workers: int, in_use: dict[str, ModelInUse] | None = None) -> list[Metric]:
    """The cluster-wide figures from the stats hash and the live counts."""
    submitted = CounterMetricFamily("jobcast_jobs_submitted", "Jobs accepted by POST /jobs.", labels=["type"])
    finished = CounterMetricFamily("jobcast_jobs_finished", "Ends of jobs by terminal status (a job run again "
                                   "by POST /retry ends, and counts, again).", labels=["type", "status"])
    retried = CounterMetricFamily("jobcast_job_retries", "Attempts that failed and were scheduled again.",
                                  labels=["type"])
    events = CounterMetricFamily("jobcast_events_published", "Events appended to job logs and published.")
    webhooks = CounterMetricFamily("jobcast_webhook_deliveries", "Webhook delivery tries by outcome "
                                   "(delivered, retrying, failed = gave up).", labels=["outcome"])
    tokens = CounterMetricFamily("jobcast_model_tokens", "Tokens of model calls (as the server reported them, or "
                                 "estimated), by model, job type and kind (prompt, completion).",
                                 labels=["model", "type", "kind"])
    calls = CounterMetricFamily("jobcast_model_calls", "Model calls that answered, by model and job type.",
                                labels=["model", "type"])
    hist: dict[str, dict[str, dict[int, float]]] = {"run": {}, "wait": {}, "model_wait": {}}
    sums: dict[str, dict[str, float]] = {"run": {}, "wait": {}, "model_wait": {}}
    for parts, value in _text(stats):
        match parts:
            case ["submitted", jtype]:
                submitted.add_metric([jtype], value)
            case ["finished", jtype, status]:
                finished.add_metric([jtype, status], value)
            case ["retried", jtype]:
                retried.add_metric([jtype], value)
            case ["events"]:
                events.add_metric([], value)
            case ["webhook", outcome]:
                webhooks.add_metric([outcome], value)
            case ["model_tokens", model, jtype, kind]:
                tokens.add_metric([model, jtype, kind], value)
            case ["model_calls", model, jtype]:
                calls.add_metric([model, jtype], value)
            case ["run" | "wait" | "model_wait" as name, label, k]:
                hist[name].setdefault(label, {})[int(k)] = value
            case ["run_sum" | "wait_sum" | "model_wait_sum" as name, label]:
                sums[name[:-4]][label] = value
    held = GaugeMetricFamily("jobcast_model_calls_in_flight", "Model calls in flight now, across every worker "
                             "(JOBCAST_MODEL_CONCURRENCY caps them).", labels=["model"])
    minute_requests = GaugeMetricFamily("jobcast_model_minute_requests", "Requests to the model in the last "
                                        "minute, across every worker (JOBCAST_MODEL_RPM caps them; counted with "
                                        "a limit set).", labels=["model"])
    minute_tokens = GaugeMetricFamily("jobcast_model_minute_tokens", "Tokens of those requests, reserved or, once "
                                      "a call is over, used (JOBCAST_MODEL_TPM caps them).", labels=["model"])
    for model, use in sorted((in_use or {}).items()):
        held.add_metric([model], use.calls)
        minute_requests.add_metric([model], use.requests)
        minute_tokens.add_metric([model], use.tokens)
    depth = GaugeMetricFamily("jobcast_queue_depth", "Jobs waiting in an RQ queue.", labels=["queue"])
    for queue, n in sorted(queues.items()):
        depth.add_metric([queue], n)
    return [
        submitted, finished, retried, events, webhooks, tokens, calls,
        _histogram("jobcast_job_run_seconds", "Run time of each attempt, start to end.", hist["run"], sums["run"]),
        _histogram("jobcast_job_queue_wait_seconds", "From submit (or a retry's due time) to the start.",
                   hist["wait"], sums["wait"]),
        _histogram("jobcast_model_capacity_wait_seconds", "How long model calls waited for the model's shared "
                   "capacity (calls at once, requests or tokens per minute, a 429's Retry-After).",
                   hist["model_wait"], sums["model_wait"], label="model"),
        held, minute_requests, minute_tokens,
        depth,
        GaugeMetricFamily("jobcast_jobs_delayed", "Jobs waiting out a retry's back-off (or just given a slot).",
                          value=delayed),
        GaugeMetricFamily("jobcast_jobs_running", "Jobs running now.", value=running),
        GaugeMetricFamily("jobcast_workers", "RQ workers on the job queue that are alive (beating within "
                          "JOBCAST_HEARTBEAT_S).", value=workers),
    ]


async def render(store: AsyncStore, job_queue: str, queues: list[str], models: list[str]) -> bytes:
    """The whole exposition: cluster-wide job figures from Redis, then this process's (or machine's) own.

    `queues` are the RQ queues whose depth is shown; workers are counted on `job_queue`; `models` are the
    models whose calls in flight are shown.
    """
    stats, depths, delayed, running = await store.figures(queues)
    workers = await store.workers_alive(job_queue)
    in_use = {model: await store.model_in_use(model) for model in models}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(job_families(stats, dict(zip(queues, depths, strict=True)), delayed, running, workers,
                                          in_use)))
    path = multiprocess_dir()
    if path:
        _forget_dead_processes(path)
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    return generate_latest(registry)
