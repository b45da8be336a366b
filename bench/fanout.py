"""Events per second one API process delivers to 1,000 clients: all watching one hot job, and each following
a set of 20 jobs (`GET /events?tag=...`) that together send as much.

The single job sends output items at a steady pace, 1,000 a second: a
million events a second to deliver, more than one process carries, so the
rate measured is what the API sustains, not what the job offers (at 300 a
second, the pace of round one, every figure was capped near 300,000). The set
is 20 jobs with as many items in all, run at once by 20 workers from one
common start, 50 a second each (1,000 a second over the set). Each item carries the time it was sent; every client reads
whole events, takes the delay of the first item of each read (the oldest in
it: the worst), and counts the `output` events it got, which must be every
item once. The rate is all events delivered to all clients (output, state,
snapshots and ends) over the time from the first item to the last client's
last end; p99 is over every client's delays.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass

import httpx

from bench.common import Figure, bench_stack, open_sse, percentile, private_redis

STAMP = re.compile(rb'"t":(\d+)')


@dataclass
class Delivery:
    events: int
    seconds: float
    short: int
    """Clients that did not get every item once."""
    delays_ms: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def _watch(port: int, path: str, clients: int, items: int, ends: int, start: asyncio.Event) -> Delivery:
    """Open `clients` streams of `path`, set `start` once all are in, and read each until `ends` jobs ended."""
    connected = 0
    all_in = asyncio.Event()
    counts: list[int] = []
    short = 0
    began: list[float] = []
    ended: list[float] = []
    delays: list[float] = []

    async def client() -> None:
        nonlocal connected, short
        reader, writer = await open_sse(port, path)
        connected += 1
        if connected == clients:
            all_in.set()
        events, outputs, finished, started, carry = 0, 0, 0, 0.0, b""
        try:
            while chunk := await reader.read(65536):
                # Whole events only (a read may end mid-event): what follows the last blank line waits.
                data = carry + chunk
                cut = data.rfind(b"\n\n") + 2
                done, carry = data[:cut], data[cut:]
                if not done:
                    continue
                if stamp := STAMP.search(done):
                    delays.append((time.time_ns() - int(stamp[1])) / 1e6)
                    if not started:
                        started = time.monotonic()
                events += done.count(b"event: ")
                outputs += done.count(b"event: output")
                finished += done.count(b"event: completed")
                if finished >= ends:
                    break
        finally:
            writer.close()
        if outputs != items:
            short += 1
        counts.append(events)
        began.append(started)
        ended.append(time.monotonic())

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.wait_for(all_in.wait(), 60)
    start.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    return Delivery(sum(counts), max(ended) - min(b for b in began if b), short, delays)


PER_S = 1000


async def _single(url: str, clients: int, items: int, sse_starlette: bool = False) -> Delivery:
    async with httpx.AsyncClient(base_url=url) as http:
        job = (await http.post("/jobs", json={"type": "bench_burst", "payload": {
            "items": items, "per_s": PER_S, "wait_s": 3 if clients < 1000 else 8, "stamp": True}})).json()
    path = f"/sse-starlette/jobs/{job['id']}/events" if sse_starlette else job["links"]["events"]
    return await _watch(int(url.rsplit(":", 1)[1]), path, clients, items, 1, asyncio.Event())


async def _set(url: str, clients: int, items: int, jobs: int) -> Delivery:
    tag = uuid.uuid4().hex[:8]
    start = asyncio.Event()
    watching = asyncio.create_task(_watch(int(url.rsplit(":", 1)[1]), f"/events?tag=set:{tag}", clients, items,
                                          jobs, start))
    await start.wait()  # every client follows the (empty) set: the jobs join it as they are created
    payload = {"items": items // jobs, "per_s": PER_S // jobs, "stamp": True, "start_at": time.time() + 3}
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(jobs):
            (await http.post("/jobs", json={"type": "bench_burst", "tags": {"set": tag}, "payload": payload}))\
                .raise_for_status()
    return await watching


def run(quick: bool) -> list[Figure]:
    clients = 200 if quick else 1000
    items = 200 if quick else 2000
    jobs = 4 if quick else 20
    with private_redis() as server, bench_stack(server, workers=jobs) as stack:
        one = asyncio.run(_single(stack.url, clients, items))
        many = asyncio.run(_set(stack.url, clients, items, jobs))

    def whole(d: Delivery) -> str:
        return "every client got every item once" if not d.short else f"{d.short} clients missed items"

    # The design card's package, on the same hub and bytes (bench/sse_starlette_variant.py).
    with private_redis() as server, bench_stack(server, workers=1, sse_starlette=True) as stack:
        theirs = asyncio.run(_single(stack.url, clients, items, sse_starlette=True))
    # Two API processes on one port (`jobcast serve --workers 2`): the clients spread over both.
    with private_redis() as server, bench_stack(server, workers=1, api_processes=2) as stack:
        two = asyncio.run(_single(stack.url, clients, items))
    scaled = Figure(f"events/s to {clients:,} clients on one hot job, 2 API processes", two.rate, "/s", "measured",
                    not two.short, one.rate, note=f"p99 {percentile(two.delays_ms, 99):.0f} ms; {whole(two)}; "
                                                  "the clients share the same 2 cores")
    variant = [Figure(f"events/s to {clients:,} clients on one hot job, sse-starlette's EventSourceResponse",
                      theirs.rate, "/s", "switch to it if ≥ 0.9× ours", theirs.rate >= 0.9 * one.rate
                      and not theirs.short, one.rate, note=f"p99 {percentile(theirs.delays_ms, 99):.0f} ms; "
                                                           f"{whole(theirs)}")]
    return [
        Figure(f"events/s to {clients:,} clients on one hot job", one.rate, "/s", "≥ 400,000",
               one.rate >= 400_000 and not one.short,
               note=f"{one.events:,} events in {one.seconds:.2f}s ({items} items at {PER_S}/s); {whole(one)}"),
        Figure("same, delay of an item, p99", percentile(one.delays_ms, 99), "ms", "-", True,
               note=f"p50 {percentile(one.delays_ms, 50):.1f} ms"),
        Figure(f"events/s to {clients:,} clients, each on a set of {jobs} jobs", many.rate, "/s",
               "≥ 0.8× one hot job", many.rate >= 0.8 * one.rate and not many.short, one.rate,
               note=f"{many.events:,} events in {many.seconds:.2f}s ({items} items over {jobs} jobs at "
                    f"once); {whole(many)}"),
        Figure("same, delay of an item, p99", percentile(many.delays_ms, 99), "ms", "≤ 1.25× one hot job",
               percentile(many.delays_ms, 99) <= 1.25 * percentile(one.delays_ms, 99),
               percentile(one.delays_ms, 99)),
        *variant,
        scaled,
    ]
