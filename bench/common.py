"""What every benchmark needs: a private stack, raw HTTP/SSE clients, and the figures' shape.

The stack (redis-server, `jobcast serve`, `worker.py` workers) is the one the
end-to-end tests run (`tests/e2e/harness.py`), here with the bench job types.
The clients are written on bare asyncio streams so that the load generator
costs as little as possible of the 2 cores it shares with what it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.e2e.harness import RedisServer, Stack, free_port, running_stack, wait_for

__all__ = [
    "Figure", "RedisServer", "Stack", "bench_stack", "free_port", "http_get_loop", "http_post", "http_post_many",
    "median", "open_sse", "percentile", "private_redis", "rss_kib", "tick_latencies", "wait_for",
]


@dataclass
class Figure:
    """One line of the report: a measured value, its baseline from the same run, and the target."""

    name: str
    value: float
    unit: str
    target: str
    ok: bool
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="jobcast-bench-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.close()


@contextlib.contextmanager
def bench_stack(redis: RedisServer, workers: int = 1, *, sse_starlette: bool = False, api_processes: int = 1,
                **env: str) -> Iterator[Stack]:
    """API + workers with the bench job types, auth off, no stream limit, pings every second; with
    `sse_starlette`, the API is `bench/sse_starlette_variant.py` (a second stream route on sse-starlette); with
    `api_processes` over 1, `jobcast serve --workers N` (N processes on one port)."""
    command = ("-m", "bench.sse_starlette_variant") if sse_starlette else Stack.api_command
    if api_processes > 1:
        command = (*command, "--workers", str(api_processes))
    with tempfile.TemporaryDirectory(prefix="jobcast-bench-stack-") as tmp:
        settings = {"JOBCAST_JOB_MODULES": "bench.jobs", "JOBCAST_MAX_STREAMS_PER_OWNER": "0",
                    "JOBCAST_SUBMIT_RATE": "0", "JOBCAST_MAX_RUNNING_PER_OWNER": "0", "JOBCAST_LOG_LEVEL": "warning",
                    **env}
        with running_stack(redis, Path(tmp), workers, api_command=command, **settings) as stack:
            yield stack


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def open_sse(port: int, path: str,
                   source: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An event stream on a bare socket: the response head read, the body left to the caller. `source`: the
    loopback address to connect from (one address has some 28,000 ports to connect from)."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream {path}: {head[:80]!r}")
    return reader, writer


async def tick_latencies(port: int, path: str, latencies: list[float]) -> None:
    """Follow a `bench_ticks` job's stream to its end, adding each tick's delay (ms) to `latencies`."""
    reader, writer = await open_sse(port, path)
    try:
        async for line in reader:
            now = time.time_ns()
            if line.startswith(b'data: {"status"'):
                data = orjson.loads(line[6:])
                if data["message"].isdigit():
                    latencies.append((now - int(data["message"])) / 1e6)
            elif line.startswith(b"event: completed"):
                return
    finally:
        writer.close()


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response off a keep-alive connection: its head and its body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head, await reader.readexactly(length)


async def http_post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes) -> bytes:
    """POST `body` (JSON) to `path` on a keep-alive connection; the answer's body (raise unless a 2xx)."""
    writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    head, answer = await _response(reader)
    if not head.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(f"POST {path}: {head[:40]!r} {answer[:200]!r}")
    return answer


async def http_post_many(port: int, path: str, body: bytes, count: int, connections: int) -> None:
    """POST `body` (JSON) to `path` `count` times over `connections` keep-alive sockets; raise unless
    every answer is a 2xx."""
    left = [count]

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                await http_post(reader, writer, path, body)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(min(connections, count))))


async def http_get_loop(port: int, path: str, connections: int, seconds: float) -> int:
    """Keep-alive GETs of `path` on `connections` sockets for `seconds`; how many got a 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while loop.time() < deadline:
                writer.write(request)
                head, _ = await _response(reader)
                if head.startswith(b"HTTP/1.1 200"):
                    done += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return done
