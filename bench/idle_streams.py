"""Idle event streams one API process holds with heartbeats flowing, and the RSS each one costs.

The streams watch a job that stays queued (no workers), so all they carry is
the `: ping` every JOBCAST_PING_MS (1 s here; 5 s for 50,000 streams, which
would otherwise be 50,000 writes a second). A stream counts as held when it
has had a ping after all were open. RSS per stream is the API's growth from
10 open streams to all of them, divided by the difference.

50,000 streams take more than one loopback address has ports for (the
kernel's ephemeral range, some 28,000), so the client connects from
127.0.0.1, 127.0.0.2, ...; and both processes need more file descriptors than
the usual limit: the bench raises its own (as root, its hard limit too), and
the API inherits it. The comparison with sse-starlette runs both at 10,000.
"""

from __future__ import annotations

import asyncio
import resource

import httpx

from bench.common import Figure, bench_stack, open_sse, private_redis, rss_kib

OPENING = 100
"""Streams opened at once (each opening reads Redis: 250 at once outran the API's pool on a slow machine)."""

PER_SOURCE = 20_000
"""Streams connected from one loopback address, well inside its ephemeral ports."""


def _raise_fd_limit(count: int) -> int:
    """Raise this process's open-file limit (inherited by the stack it starts) to hold `count` streams;
    returns the limit it has."""
    want = count + 5_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):  # not root: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _hold(port: int, path: str, count: int, api_pid: int, ping_s: float) -> tuple[int, float]:
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect(n: int) -> None:
        streams.append(await open_sse(port, path, source=f"127.0.0.{1 + n // PER_SOURCE}"))

    for n in range(10):
        await connect(n)
    await asyncio.sleep(0.5)
    base = rss_kib(api_pid)
    for start in range(10, count, OPENING):
        await asyncio.gather(*(connect(n) for n in range(start, min(start + OPENING, count))))
    await asyncio.sleep(2)  # let the server settle (allocations of the last batch) before reading RSS
    grown = rss_kib(api_pid)

    async def pinged(reader: asyncio.StreamReader) -> bool:
        try:
            async with asyncio.timeout(ping_s + 5):
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
    ping_ms = 1000 if count <= 10_000 else 5000
    with private_redis() as server, \
            bench_stack(server, workers=0, sse_starlette=sse_starlette, JOBCAST_PING_MS=str(ping_ms)) as stack:
        job = httpx.post(f"{stack.url}/jobs", json={"type": "bench_noop", "payload": {}}).json()
        path = f"/sse-starlette/jobs/{job['id']}/events" if sse_starlette else job["links"]["events"]
        assert stack.api is not None
        return asyncio.run(_hold(int(stack.url.rsplit(":", 1)[1]), path, count, stack.api.pid, ping_ms / 1000))


def run(quick: bool) -> list[Figure]:
    goal, compared = (1000, 1000) if quick else (50_000, 10_000)
    limit = _raise_fd_limit(goal)
    count = min(goal, limit - 1_000)  # (a limit this process could not raise: what it allows)
    alive, per_stream = _measure(count, sse_starlette=False)
    figures = [
        Figure("idle SSE streams held by one API process", alive, "", f"≥ {goal:,} with pings",
               alive >= goal, note=f"of {count:,} opened; open-file limit {limit:,}" + (
                   "" if count == goal else " (the hard limit: raising it takes CAP_SYS_RESOURCE)")),
        Figure("RSS per idle stream", per_stream, "KiB", "≤ 12 KiB", per_stream <= 12),
    ]
    ours = (alive, per_stream) if compared == count else _measure(compared, sse_starlette=False)
    theirs_alive, theirs = _measure(compared, sse_starlette=True)
    return [*figures,
            Figure(f"RSS per idle stream, ours ({compared:,} streams)", ours[1], "KiB", "-", True,
                   note=f"{ours[0]:,} of {compared:,} held with pings"),
            Figure(f"RSS per idle stream, sse-starlette's EventSourceResponse ({compared:,} streams; same hub, "
                   "same bytes)", theirs, "KiB", "switch to it if ≤ 1.1× ours", theirs <= 1.1 * ours[1], ours[1],
                   note=f"{theirs_alive:,} of {compared:,} held with pings")]
