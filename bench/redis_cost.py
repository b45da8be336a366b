"""What jobcast costs its Redis: the server's CPU time per submit, per finished job and per progress report,
each beside raw RQ (or a plain PUBLISH) doing the same on the same server in the same run.

The time is the redis-server process's own CPU (`INFO cpu`: user and system,
so the sockets' work counts, not only the commands'), less what the server
spends meanwhile with nothing to do but the clients' idle polls (measured
just before, over as long). `docs/scaling.md` turns these figures into how
many jobs, events and watchers one Redis core carries.

- Submit: `POST /jobs` of a trivial job through the API with no worker
  running, against RQ's `Queue.enqueue` of a function that does nothing.
- A finished job: its whole life (submit, dequeue, start, end) on two
  `SimpleWorker`s, against the same RQ job worked by two RQ `SimpleWorker`s.
- A progress report: `Store.emit` of a `state` change (one script: record,
  log, feed, two PUBLISHes) against a `PUBLISH` of the same bytes, one
  subscriber on the channel in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from redis.client import Pipeline
from rq import Queue
from rq.registry import FinishedJobRegistry

from bench.common import Figure, RedisServer, bench_stack, private_redis, wait_for
from bench.emit_cost import report, running_job
from bench.throughput import WORKERS, raw_rq_workers, submit_noops
from jobcast.settings import Settings
from jobcast.store import Store, logged_data

CORE_US = 1_000_000
"""One core's time in a second (us)."""


def _cpu_us(r: redis.Redis) -> float:
    info = r.info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6


def _cost_us(r: redis.Redis, count: int, work: Callable[[], None]) -> float:
    """The server's CPU time (us) per one of `count` things `work` does, less its idle rate over as long."""
    t0, c0 = time.perf_counter(), _cpu_us(r)
    work()
    t1, c1 = time.perf_counter(), _cpu_us(r)
    time.sleep(min(t1 - t0, 5))  # the same clients, idle: their polls, heartbeats and the server's cron
    idle_rate = (_cpu_us(r) - c1) / (time.perf_counter() - t1)
    return max(0.0, (c1 - c0) - idle_rate * (t1 - t0)) / count


def _jobcast_submit_and_life(server: RedisServer, jobs: int) -> tuple[float, float]:
    r = server.r
    with bench_stack(server, workers=0) as stack:
        submit = _cost_us(r, jobs, lambda: submit_noops(stack, jobs))
    with bench_stack(server, workers=WORKERS, JOBCAST_WORKER_SIMPLE="1") as stack:
        done = f"{stack.prefix}:stats"

        def whole_lives() -> None:
            submit_noops(stack, jobs)
            wait_for(lambda: int(r.hget(done, "finished|bench_noop|completed") or 0) >= jobs, 300,
                     "the jobs to complete", interval=0.01)

        life = _cost_us(r, jobs, whole_lives)
    return submit, life


def _rq_enqueue_and_life(server: RedisServer, jobs: int) -> tuple[float, float]:
    conn = redis.Redis.from_url(server.url)
    queue = Queue("bench-raw-cost", connection=conn)
    enqueue = _cost_us(conn, jobs, lambda: [queue.enqueue("bench.raw_jobs.noop") for _ in range(jobs)])
    queue.empty()
    conn.close()
    with raw_rq_workers(server, queue.name, simple=True) as conn:
        queue = Queue(queue.name, connection=conn)
        registry = FinishedJobRegistry(queue=queue)
        before = registry.count

        def whole_lives() -> None:
            for _ in range(jobs):
                queue.enqueue("bench.raw_jobs.noop")
            wait_for(lambda: registry.count >= before + jobs, 300, "the raw jobs to finish", interval=0.01)

        life = _cost_us(conn, jobs, whole_lives)
    return enqueue, life


BATCH = 50
"""Requests sent together in the batched runs (a busy server reads and answers many requests per wake-up)."""


def _report_and_publish(server: RedisServer, reports: int) -> tuple[float, float, float, float]:
    """Per progress report and per PUBLISH (us): one round trip each, then `BATCH` to a round trip."""
    r = server.r
    store = Store(r, Settings.from_env().with_(prefix="bench-cost"))
    with running_job(r, store, feed_listener=False) as (job_id, channels):
        alone = _cost_us(r, reports, lambda: [report(store, job_id, i, reports) for i in range(reports)])
        (entry_id, fields), = r.xrevrange(store.keys.events(job_id), count=1)
        message = entry_id.split(b"-")[1] + b" state " + logged_data(b"state", fields[b"d"])  # (as the script sent it)
        publish = _cost_us(r, reports, lambda: [r.publish(channels[0], message) for _ in range(reports)])

        def batched(send: Callable[[Pipeline, int], object]) -> None:
            for start in range(0, reports, BATCH):
                with r.pipeline(transaction=False) as pipe:
                    for i in range(start, min(reports, start + BATCH)):
                        send(pipe, i)
                    pipe.execute()

        together = _cost_us(r, reports, lambda: batched(lambda pipe, i: report(store, job_id, i, reports, pipe)))
        publish_together = _cost_us(r, reports, lambda: batched(lambda pipe, i: pipe.publish(channels[0], message)))
    return alone, publish, together, publish_together


def run(quick: bool) -> list[Figure]:
    jobs = 40 if quick else 1000
    reports = 300 if quick else 10_000
    with private_redis() as server:
        rq_enqueue, rq_life = _rq_enqueue_and_life(server, jobs)
        submit, life = _jobcast_submit_and_life(server, jobs)
        alone, publish, together, publish_together = _report_and_publish(server, reports)
    return [
        Figure("Redis CPU per submit (POST /jobs, 16 at a time)", submit, "us", "measured", True, rq_enqueue,
               f"baseline RQ's enqueue, one at a time; {jobs} jobs; one core takes {CORE_US / submit:,.0f} "
               "submits/s"),
        Figure("Redis CPU per finished trivial job", life, "us", "measured", True, rq_life,
               f"baseline the same RQ job on {WORKERS} SimpleWorkers; one core finishes "
               f"{CORE_US / life:,.0f} jobs/s"),
        Figure("Redis CPU per progress report, a round trip each", alone, "us", "measured", True, publish,
               f"baseline a PUBLISH of like bytes to one subscriber; {reports:,} each; one core takes "
               f"{CORE_US / alone:,.0f} reports/s"),
        Figure(f"same, {BATCH} to a round trip", together, "us", "measured", True, publish_together,
               f"as on a busy server; one core takes {CORE_US / together:,.0f} reports/s"),
    ]
