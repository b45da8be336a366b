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

OPENING = 100
"""Streams opened at once (each opening reads Redis: 250 at once outran the API's pool on a slow machine)."""


async def _hold(port: int, path: str, count: int, api_pid: int) -> tuple[int, float]:
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect() -> None:
        streams.append(await open_sse(port, path))

    for _ in range(10):
        await connect()
    await asyncio.sleep(0.5)
    base = rss_kib(api_pid)
    for start in range(10, count, OPENING):
        await asyncio.gather(*(connect() for _ in range(min(OPENING, count - start))))
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


def _measure(count: int, sse_starlette: bool) -> tuple[int, float]:
    with private_redis() as server, bench_stack(server, workers=0, sse_starlette=sse_starlette) as stack:
        job = httpx.post(f"{stack.url}/jobs", json={"type": "bench_noop", "payload": {}}).json()
        path = f"/sse-starlette/jobs/{job['id']}/events" if sse_starlette else job["links"]["events"]
        assert stack.api is not None
        return asyncio.run(_hold(int(stack.url.rsplit(":", 1)[1]), path, count, stack.api.pid))


def run(quick: bool) -> list[Figure]:
    count = 1000 if quick else 10_000
    alive, per_stream = _measure(count, sse_starlette=False)
    figures = [
        Figure("idle SSE streams held by one API process", alive, "", f"≥ {count:,} with pings", alive >= count),
        Figure("RSS per idle stream", per_stream, "KiB", "≤ 30 KiB", per_stream <= 30),
    ]
    theirs_alive, theirs = _measure(count, sse_starlette=True)
    return [*figures, Figure("RSS per idle stream, sse-starlette's EventSourceResponse (same hub, same bytes)",
                             theirs, "KiB", "switch to it if ≤ 1.1× ours", theirs <= 1.1 * per_stream, per_stream,
                             note=f"{theirs_alive:,} of {count:,} held with pings")]
