"""Redis memory per finished 20-step demo job, everything it leaves included (events, output, RQ's keys).

`used_memory` before and after N demo jobs of 20 steps have run to the end (and RQ's
own copy of each run, kept for a second, has expired), divided by N; and what each of
one job's keys holds (`MEMORY USAGE`).
"""

from __future__ import annotations

import asyncio

import httpx

from bench.common import Figure, bench_stack, private_redis, wait_for
from jobcast.store.keys import Keys


async def _submit(url: str, jobs: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        sem = asyncio.Semaphore(16)

        async def one() -> str:
            async with sem:
                r = await client.post("/jobs", json={"type": "demo", "payload": {"steps": 20, "interval_ms": 0}})
                return str(r.json()["id"])

        return await asyncio.gather(*(one() for _ in range(jobs)))


def run(quick: bool) -> list[Figure]:
    jobs = 50 if quick else 1000
    with private_redis() as server, bench_stack(server, workers=2) as stack:
        r = server.r
        asyncio.run(_submit(stack.url, 1))  # the first job creates the shared keys (registries, stats)
        wait_for(lambda: int(r.hget(f"{stack.prefix}:stats", "finished|demo|completed") or 0) >= 1, 30, "warm-up")
        before = int(r.info("memory")["used_memory"])
        ids = asyncio.run(_submit(stack.url, jobs))
        wait_for(lambda: int(r.hget(f"{stack.prefix}:stats", "finished|demo|completed") or 0) >= jobs + 1, 300,
                 "the jobs to end", interval=0.02)
        rq_copies = [f"rq:{kind}:{i}" for i in ids for kind in ("job", "results")]
        wait_for(lambda: r.exists(*rq_copies) == 0, 30, "RQ's copies of the runs to expire (RQ_RESULT_TTL_S)",
                 interval=0.1)
        per_job = (int(r.info("memory")["used_memory"]) - before) / jobs
        one = ids[-1].encode()
        parts = {key.decode(): int(r.memory_usage(key) or 0)
                 for key in r.scan_iter(count=1000) if one in key}
        # The owner's feed (every event of its jobs, for streams of many jobs) is shared, and capped at
        # JOBCAST_FEED_KEPT entries per owner: its share of each job, while under the cap.
        feed = int(r.memory_usage(Keys(stack.prefix).feed("anonymous"), samples=0) or 0) / (jobs + 1)
    breakdown = ", ".join(f"{k.replace(ids[-1], '{id}')} {v:,} B" for k, v in sorted(parts.items()))
    breakdown += f", the owner's feed {feed:,.0f} B a job (capped at JOBCAST_FEED_KEPT entries an owner)"
    return [Figure("Redis memory per finished 20-step demo job", per_job / 1024, "KiB", "≤ 4 KiB",
                   per_job <= 4096, note=breakdown)]
