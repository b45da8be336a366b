"""100,000 `progress()` calls in a tight loop: how long the loop takes, and how many Redis writes it costs.

The job times its own loop. Its writes are the progress events it appended to
its log (each one emit: one script call); the rate is the writes after the
first over the time from the first to the last (their `ts`). The note adds
every script Redis ran for the job from submit to end (`INFO commandstats`:
create, start, positions, heartbeat, end), nothing else running.
"""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import orjson
import redis

from bench.common import Figure, bench_stack, private_redis, wait_for
from jobcast.store import logged_data


def _script_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def run(quick: bool) -> list[Figure]:
    calls = 100_000
    with private_redis() as server, bench_stack(server, workers=1) as stack:
        with httpx.Client(base_url=stack.url) as c:
            before = _script_calls(server.r)
            t0 = time.perf_counter()
            job = c.post("/jobs", json={"type": "bench_tight_loop", "payload": {"calls": calls}}).json()
            done = wait_for(lambda: (j := c.get(f"/jobs/{job['id']}").json())["status"] == "completed" and j, 60,
                            "the loop", interval=0.01)
            elapsed = time.perf_counter() - t0
            scripts = _script_calls(server.r) - before
            log = server.r.xrange(f"{stack.prefix}:ev:{{{job['id']}}}")
    wall = done["result"]["wall_s"]
    states = [orjson.loads(logged_data(f[b"e"], f[b"d"])) for _, f in log if f[b"e"] == b"state"]
    times = [datetime.fromisoformat(st["ts"]) for st in states if st["status"] == "running"][1:]  # after "Starting"
    # The rate while it writes: writes after the first, over the time from the first to the last.
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else wall
    per_s = (len(times) - 1) / span if len(times) > 1 else 0.0
    return [
        Figure(f"{calls:,} progress() calls in a tight loop", wall, "s", "≤ 2 s", wall <= 2),
        Figure("Redis writes/s for that job", per_s, "/s", "≤ 25/s", per_s <= 25,
               note=f"{len(times)} progress writes for a {wall:.2f}s loop; {scripts} scripts from submit to end "
                    f"in {elapsed:.2f}s"),
    ]
