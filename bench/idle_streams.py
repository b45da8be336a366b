"""Idle event streams one API process holds with heartbeats flowing, and the RSS each one costs.

The streams watch a job that stays queued (no workers), so all they carry is
the `: ping` every JOBCAST_PING_MS (1 s here). A stream counts as held when it
has had a ping after all were open. RSS per stream is the API's growth from
10 open streams to all of them, divided by the difference.
"""

from __future__ import annotations

import asyncio

import httpx

from bench.common import Figure, bench_stack, open_sse, private_redis, rss_kib


async def _hold(port: int, path: str, count: int, api_pid: int) -> tuple[int, float]:
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect() -> None:
        streams.append(await open_sse(port, path))

    for _ in range(10):
        await connect()
    await asyncio.sleep(0.5)
    base = rss_kib(api_pid)
    for start in range(10, count, 250):
        await asyncio.gather(*(connect() for _ in range(min(250, count - start))))
    await asyncio.sleep(2)  # let the server settle (allocations of the last batch) before reading RSS
    grown = rss_kib(api_pid)

    async def pinged(reader: asyncio.StreamReader) -> bool:
        try:
            async with asyncio.timeout(5):
                while True:
                    if (await reader.readline()).startswith(b": ping"):
                        return True
        except (TimeoutError, asyncio.IncompleteReadError):
            return False

    # Whatever was buffered is old: read on until a fresh ping arrives on each.
    alive = sum(await asyncio.gather(*(pinged(r) for r, _ in streams)))
    for _, writer in streams:
        writer.close()
    return alive, (grown - base) / (len(streams) - 10)


def run(quick: bool) -> list[Figure]:
    count = 1000 if quick else 10_000
    with private_redis() as server, bench_stack(server, workers=0) as stack:
        job = httpx.post(f"{stack.url}/jobs", json={"type": "bench_noop", "payload": {}}).json()
        assert stack.api is not None
        alive, per_stream = asyncio.run(_hold(int(stack.url.rsplit(":", 1)[1]), job["links"]["events"], count,
                                              stack.api.pid))
    return [
        Figure("idle SSE streams held by one API process", alive, "", f"≥ {count:,} with pings", alive >= count),
        Figure("RSS per idle stream", per_stream, "KiB", "≤ 30 KiB", per_stream <= 30),
    ]
