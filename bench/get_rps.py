"""`GET /jobs/{id}` requests per second, against a bare Starlette endpoint doing the same HGETALL + JSON.

Both servers are one uvicorn process with the same settings, on the same
Redis, loaded by the same keep-alive client (64 connections) for the same
time, one after the other.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx

from bench.common import Figure, bench_stack, free_port, http_get_loop, private_redis, wait_for
from tests.e2e.harness import ROOT

CONNECTIONS = 64


def run(quick: bool) -> list[Figure]:
    seconds = 1.5 if quick else 8.0
    with private_redis() as server, bench_stack(server, workers=1) as stack:
        with httpx.Client(base_url=stack.url) as c:
            job = c.post("/jobs", json={"type": "bench_ticks", "payload": {"ticks": 20, "interval_ms": 0}}).json()
            wait_for(lambda: c.get(f"/jobs/{job['id']}").json()["status"] == "completed", 30, "the job")
        ours = asyncio.run(http_get_loop(int(stack.url.rsplit(":", 1)[1]), f"/jobs/{job['id']}", CONNECTIONS,
                                         seconds)) / seconds

        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": server.url,
               "BARE_KEY": f"{stack.prefix}:job:{{{job['id']}}}"}
        bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
                                 "--log-level", "warning"], cwd=ROOT, env=env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                wait_for(lambda: c.get(f"/jobs/{job['id']}").status_code == 200, 20, "the bare server")
            raw = asyncio.run(http_get_loop(port, f"/jobs/{job['id']}", CONNECTIONS, seconds)) / seconds
        finally:
            bare.terminate()
            bare.wait(timeout=10)
    return [Figure("GET /jobs/{id} req/s", ours, "/s", "≥ 0.9× bare endpoint", ours >= 0.9 * raw, raw)]
