"""Healthy watchers' delay while 700 others have stopped reading, against the same watchers without them.

Ten clients follow a job that reports the time of sending (ns) ten times a
second (the latency benchmark's job) while a second job sends 1 KiB items at
100 a second. In the baseline phase nobody else is connected; in the stalled
phase 500 clients watch the busy job and never read a byte, and 200 read its
first events and then stop, their sockets left open. A server that buffers
for stalled clients spends its CPU filling their kernel buffers (and its
memory holding them); jobcast keeps their socket buffers small and closes a
stream that falls `JOBCAST_STREAM_MAX_LAG_S` behind (the default, 10 s).
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from bench.common import Figure, Stack, bench_stack, percentile, private_redis, rss_kib, tick_latencies

HEALTHY = 10
NEVER_READ = 500
STOP_READING = 200
PER_S = 100
"""Items a second the busy job sends (1 KiB each)."""


def _stalled(port: int, path: str, read_bytes: int) -> socket.socket:
    """A client that asks for the stream, reads `read_bytes` of it (0: nothing), and never reads again;
    its socket stays open until the phase ends (or the server closes it)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    got = 0
    while got < read_bytes:
        got += len(sock.recv(read_bytes - got))
    return sock


async def _phase(stack: Stack, ticks: int, stalled: tuple[int, int]) -> tuple[list[float], int]:
    """Latencies of the healthy clients, and the API's peak RSS (KiB), with `stalled` (never, stop) clients."""
    port = int(stack.url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=stack.url) as c:
        busy = (await c.post("/jobs", json={"type": "bench_burst", "payload": {
            "items": PER_S * (ticks // 10 + 6), "per_s": PER_S, "wait_s": 0, "pad": 1024}})).json()
        ticking = (await c.post("/jobs", json={"type": "bench_ticks", "payload": {
            "ticks": ticks, "interval_ms": 100, "wait_s": 4}})).json()
    never, stop = stalled
    opened = [_stalled(port, busy["links"]["events"], 0) for _ in range(never)]
    opened += [_stalled(port, busy["links"]["events"], 16384) for _ in range(stop)]
    latencies: list[float] = []
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(stack.api.pid))  # type: ignore[union-attr]
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(tick_latencies(port, ticking["links"]["events"], latencies) for _ in range(HEALTHY)))
    finally:
        sampler.cancel()
        for sock in opened:
            sock.close()
    return latencies, peak


def run(quick: bool) -> list[Figure]:
    ticks = 30 if quick else 200
    stalled = (NEVER_READ // 5, STOP_READING // 5) if quick else (NEVER_READ, STOP_READING)
    with private_redis() as server, bench_stack(server, workers=2) as stack:
        base, base_rss = asyncio.run(_phase(stack, ticks, (0, 0)))
        ours, rss = asyncio.run(_phase(stack, ticks, stalled))
    b99, p99 = percentile(base, 99), percentile(ours, 99)
    n = sum(stalled)
    return [
        Figure(f"healthy watchers' p99 beside {n} stalled ones", p99, "ms", "≤ 2× without them", p99 <= 2 * b99, b99,
               f"p50 {percentile(ours, 50):.2f} ms (without: {percentile(base, 50):.2f}); API peak RSS "
               f"{rss // 1024} MB (without: {base_rss // 1024} MB)"),
    ]
