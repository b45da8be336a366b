"""Trivial jobs per second end to end, against raw RQ: the same worker class and count, one Redis.

jobcast: jobs submitted through `POST /jobs` (16 at a time, on bare sockets), timed from the
first submit to the last `completed` (the `finished` counter of /metrics).
Raw RQ: `Queue.enqueue` of a function that does nothing, worked by the same
number of `rq.Worker` processes, timed from the first enqueue to the last job
in RQ's finished registry. Once with RQ's default `Worker` (a fork per job),
once with `SimpleWorker` (jobs in the worker process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry

from bench.common import Figure, RedisServer, Stack, bench_stack, http_post_many, private_redis, wait_for
from tests.e2e.harness import ROOT

WORKERS = 2


def submit_noops(stack: Stack, jobs: int) -> None:
    """Submit `jobs` trivial jobs through `POST /jobs`, 16 at a time (on bare sockets: the load generator
    shares the cores with what it measures)."""
    asyncio.run(http_post_many(stack.port, "/jobs", b'{"type":"bench_noop","payload":{}}', jobs, 16))


def _jobcast(server: RedisServer, jobs: int, simple: bool) -> float:
    with bench_stack(server, workers=WORKERS, JOBCAST_WORKER_SIMPLE="1" if simple else "0") as stack:
        finished = f"{stack.prefix}:stats"
        t0 = time.perf_counter()
        submit_noops(stack, jobs)
        wait_for(lambda: int(server.r.hget(finished, "finished|bench_noop|completed") or 0) >= jobs, 300,
                 "the jobs to complete", interval=0.005)
        return jobs / (time.perf_counter() - t0)


@contextlib.contextmanager
def raw_rq_workers(server: RedisServer, queue_name: str, simple: bool) -> Iterator[redis.Redis]:
    """`WORKERS` plain `rq worker` processes on `queue_name` (`SimpleWorker`s or RQ's forking `Worker`),
    registered; a client of the server. Stopped after."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "-u", server.url, "-q", queue_name,
                                 "-w", "rq.worker.SimpleWorker" if simple else "rq.worker.Worker"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(WORKERS)]
    conn = redis.Redis.from_url(server.url)
    try:
        wait_for(lambda: conn.scard(f"rq:workers:{queue_name}") >= WORKERS, 30, "the raw RQ workers")
        yield conn
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=10)
            except subprocess.TimeoutExpired:  # RQ's warm shutdown can hang on a stray horse: the bench is over
                w.kill()
                w.wait()
        conn.close()


def _raw(server: RedisServer, jobs: int, simple: bool) -> float:
    with raw_rq_workers(server, "bench-raw", simple) as conn:
        queue = Queue("bench-raw", connection=conn)
        registry = FinishedJobRegistry(queue=queue)
        t0 = time.perf_counter()
        for _ in range(jobs):
            queue.enqueue("bench.raw_jobs.noop")
        wait_for(lambda: registry.count >= jobs, 300, "the raw jobs to finish", interval=0.005)
        return jobs / (time.perf_counter() - t0)


def run(quick: bool) -> list[Figure]:
    jobs = 40 if quick else 400
    figures = []
    for simple, kind, target in ((False, "Worker: a fork per job", 0.9), (True, "SimpleWorker", 0.8)):
        with private_redis() as server:
            raw = _raw(server, jobs, simple)
            ours = _jobcast(server, jobs, simple)
        figures.append(Figure(f"trivial jobs/s, {WORKERS} × {kind}", ours, "/s", f"≥ {target}× raw RQ",
                              ours >= target * raw, raw, f"{jobs} jobs"))
    return figures
