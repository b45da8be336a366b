"""Events per second one API process delivers to 1,000 clients watching one hot job.

The job sends output items at a steady pace (300 a second: 300,000 events a
second to deliver); every client counts the events it gets (the `id:` lines of
the whole events it reads) and checks their ids run without a gap. The rate is all events delivered to all clients over
the time from the first item to the last client's terminal event; the note says
whether every client got every event.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from bench.common import Figure, bench_stack, open_sse, private_redis


async def _watch(port: int, path: str, clients: int) -> tuple[int, float, int]:
    """All events received, the seconds they took, and how many clients missed one (ids not consecutive)."""
    connected = 0
    all_in = asyncio.Event()
    counts: list[int] = []
    gaps = 0
    began: list[float] = []
    ended: list[float] = []

    async def client() -> None:
        nonlocal connected, gaps
        reader, writer = await open_sse(port, path)
        connected += 1
        if connected == clients:
            all_in.set()
        events, started, first, last, carry = 0, 0.0, 0, 0, b""
        try:
            while chunk := await reader.read(65536):
                # Whole events only (a read may end mid-event): what follows the last blank line waits.
                data = carry + chunk
                cut = data.rfind(b"\n\n") + 2
                done, carry = data[:cut], data[cut:]
                if not done:
                    continue
                if not started and b"event: output" in done:
                    started = time.monotonic()
                ids = re.findall(rb"(?:^|\n)id: (\d+)", done)
                events += len(ids)
                if ids and not first:
                    first = int(ids[0])
                if b"\nevent: completed" in done:
                    last = int(ids[-1])
                    break
        finally:
            writer.close()
        if events != last - first + 1:
            gaps += 1
        counts.append(events)
        began.append(started)
        ended.append(time.monotonic())

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.wait_for(all_in.wait(), 60)
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    return sum(counts), max(ended) - min(b for b in began if b), gaps


PER_S = 300


def run(quick: bool) -> list[Figure]:
    clients = 200 if quick else 1000
    items = 200 if quick else 1000
    with private_redis() as server, bench_stack(server, workers=1) as stack:
        job = httpx.post(f"{stack.url}/jobs", json={"type": "bench_burst", "payload": {
            "items": items, "per_s": PER_S, "wait_s": 3 if quick else 8}}).json()
        events, seconds, gaps = asyncio.run(_watch(int(stack.url.rsplit(":", 1)[1]), job["links"]["events"],
                                                   clients))
    rate = events / seconds
    whole = "every client got every event" if not gaps else f"{gaps} clients missed events"
    return [Figure(f"events/s to {clients:,} clients on one hot job", rate, "/s", "≥ 50,000",
                   rate >= 50_000 and not gaps,
                   note=f"{events:,} events in {seconds:.2f}s ({items} items at {PER_S}/s); {whole}")]
