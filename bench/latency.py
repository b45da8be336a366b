"""Worker `progress()` → 100 SSE clients receive it, against raw Redis PUBLISH → 100 SUBSCRIBE connections.

Both sides send the time of sending (ns) and both have 100 receivers in one
asyncio process, so the ratio is what jobcast's path (emit script, the API's
one subscription, the SSE encoding and fan-out over HTTP) adds to the bare
pub/sub hop. Each send is 100 ms after the last, past the 50 ms coalescing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import redis.asyncio

from bench.common import Figure, RedisServer, bench_stack, median, percentile, private_redis, tick_latencies

CLIENTS = 100

PUBLISHER = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
time.sleep(float(sys.argv[4]))
for _ in range(int(sys.argv[2])):
    r.publish("bench-latency", str(time.time_ns()))
    time.sleep(float(sys.argv[3]))
r.publish("bench-latency", "end")
"""


async def _jobcast(server: RedisServer, ticks: int) -> list[float]:
    with bench_stack(server, workers=1) as stack:
        job = httpx.post(f"{stack.url}/jobs", json={"type": "bench_ticks", "payload": {
            "ticks": ticks, "interval_ms": 100, "wait_s": 2}}).json()
        port = int(stack.url.rsplit(":", 1)[1])
        latencies: list[float] = []
        await asyncio.gather(*(tick_latencies(port, job["links"]["events"], latencies) for _ in range(CLIENTS)))
        return latencies


async def _raw(server: RedisServer, ticks: int) -> list[float]:
    latencies: list[float] = []
    subscribers = [redis.asyncio.Redis.from_url(server.url) for _ in range(CLIENTS)]
    pubsubs = [r.pubsub() for r in subscribers]
    for ps in pubsubs:
        await ps.subscribe("bench-latency")

    async def client(ps: redis.asyncio.client.PubSub) -> None:
        async for message in ps.listen():
            now = time.time_ns()
            if message["type"] != "message":
                continue
            if message["data"] == b"end":
                return
            latencies.append((now - int(message["data"])) / 1e6)

    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, server.url, str(ticks), "0.1", "0.5"])
    await asyncio.gather(*(client(ps) for ps in pubsubs))
    publisher.wait()
    for ps, r in zip(pubsubs, subscribers, strict=True):
        await ps.aclose()
        await r.aclose()
    return latencies


def run(quick: bool) -> list[Figure]:
    ticks = 20 if quick else 200
    with private_redis() as server:
        raw = asyncio.run(_raw(server, ticks))
        ours = asyncio.run(_jobcast(server, ticks))
    raw_p50, raw_p99 = median(raw), percentile(raw, 99)
    p50, p99 = median(ours), percentile(ours, 99)
    return [
        Figure("progress → 100 SSE clients, p50", p50, "ms", "≤ 1.15× raw p50", p50 <= 1.15 * raw_p50, raw_p50,
               f"{len(ours)} deliveries"),
        Figure("progress → 100 SSE clients, p99", p99, "ms", "≤ 1.15× raw p99", p99 <= 1.15 * raw_p99, raw_p99),
    ]
