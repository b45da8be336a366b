"""From submit to the first progress a client sees, against raw RQ's enqueue to a job's first pub/sub message.

jobcast: the client POSTs a `demo` job of one step (`/jobs`, on a kept-alive
bare socket: the load generator shares the cores), opens its event
stream on a bare socket (a snapshot comes first), and stops the clock at the
first event that shows progress (the step's `state`, or the end if it came
first). Raw RQ: a subscriber already on a channel, `Queue.enqueue` of a job
that publishes to it as soon as it runs, and the clock stops when the message
arrives. Both on two workers of RQ's default class (a fork per job), one job
at a time, on one Redis; the times include the workers picking the job up.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import redis
from rq import Queue

from bench.common import Figure, RedisServer, bench_stack, http_post, open_sse, percentile, private_redis, wait_for
from bench.throughput import WORKERS, raw_rq_workers


async def _jobcast_one(http: tuple[asyncio.StreamReader, asyncio.StreamWriter], port: int) -> float:
    t0 = time.perf_counter()
    job = orjson.loads(await http_post(*http, "/jobs", b'{"type":"demo","payload":{"steps":1,"interval_ms":0}}'))
    reader, writer = await open_sse(port, job["links"]["events"])
    try:
        async for line in reader:
            if line.startswith(b"data: {") and b'"progress":' in line:
                data = orjson.loads(line[6:])
                if data["progress"] > 0:
                    return (time.perf_counter() - t0) * 1000
        raise RuntimeError(f"job {job['id']}: the stream ended before any progress")
    finally:
        writer.close()


async def _jobcast(server: RedisServer, trials: int) -> list[float]:
    with bench_stack(server, workers=WORKERS) as stack:
        http = await asyncio.open_connection("127.0.0.1", stack.port)  # (keep-alive, as a browser's)
        try:
            await _jobcast_one(http, stack.port)  # (warm: the workers' first job loads their code)
            return [await _jobcast_one(http, stack.port) for _ in range(trials)]
        finally:
            http[1].close()


def _raw(server: RedisServer, trials: int) -> list[float]:
    with raw_rq_workers(server, "bench-first", simple=False) as conn:
        queue = Queue("bench-first", connection=conn)
        listener = redis.Redis.from_url(server.url).pubsub()
        listener.subscribe("bench-first")
        wait_for(lambda: listener.get_message(timeout=1), 5, "the subscription")
        times = []
        for _ in range(trials + 1):
            t0 = time.perf_counter()
            queue.enqueue("bench.raw_jobs.publish_started", "bench-first")
            wait_for(lambda: listener.get_message(timeout=1), 30, "the raw job's message", interval=0)
            times.append((time.perf_counter() - t0) * 1000)
        listener.close()
        return times[1:]  # (the first, like jobcast's, warms the workers)


def run(quick: bool) -> list[Figure]:
    trials = 10 if quick else 100
    with private_redis() as server:
        raw = _raw(server, trials)
        ours = asyncio.run(_jobcast(server, trials))
    p50, raw50 = percentile(ours, 50), percentile(raw, 50)
    return [
        Figure("submit over HTTP → first progress at an SSE client, p50", p50, "ms", "≤ 1.5× raw", p50 <= 1.5 * raw50,
               raw50, f"raw: enqueue → the job's first PUBLISH at a subscriber; {trials} one at a time, "
                      f"{WORKERS} forking workers each"),
        Figure("same, p99", percentile(ours, 99), "ms", "-", True, percentile(raw, 99)),
    ]
