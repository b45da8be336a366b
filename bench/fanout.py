"""Events per second one API process delivers to 1,000 clients watching one hot job.

The job sends output items as fast as its worker can; every client counts the
events it gets (cheaply: the `id:` lines in what it reads). The rate is all
events delivered to all clients over the time from the first to the last.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import Figure, bench_stack, open_sse, private_redis


async def _watch(port: int, path: str, clients: int) -> tuple[int, float]:
    connected = 0
    all_in = asyncio.Event()
    counts: list[int] = []
    first: list[float] = []
    last: list[float] = []

    async def client() -> None:
        nonlocal connected
        reader, writer = await open_sse(port, path)
        connected += 1
        if connected == clients:
            all_in.set()
        events, started = 0, 0.0
        try:
            while chunk := await reader.read(65536):
                if not started and b"event: output" in chunk:
                    started = time.monotonic()
                events += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")
                if b"event: completed" in chunk:
                    break
        finally:
            writer.close()
        counts.append(events)
        first.append(started)
        last.append(time.monotonic())

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.wait_for(all_in.wait(), 60)
    await asyncio.gather(*tasks)
    return sum(counts), max(last) - min(f for f in first if f)


def run(quick: bool) -> list[Figure]:
    clients = 200 if quick else 1000
    items = 200 if quick else 2000
    with private_redis() as server, bench_stack(server, workers=1) as stack:
        job = httpx.post(f"{stack.url}/jobs", json={"type": "bench_burst", "payload": {
            "items": items, "wait_s": 3 if quick else 8}}).json()
        events, seconds = asyncio.run(_watch(int(stack.url.rsplit(":", 1)[1]), job["links"]["events"], clients))
    rate = events / seconds
    return [Figure(f"events/s to {clients:,} clients on one hot job", rate, "/s", "≥ 50,000", rate >= 50_000,
                   note=f"{events:,} events in {seconds:.2f}s")]
