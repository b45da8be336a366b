"""What an emit costs Redis: the time per progress report (`Store.emit`, one script) beside a plain `PUBLISH`
of the same bytes to the same subscriber; and what a set stream (`GET /events`) adds to every change: the
same reports with a stream of many jobs open on the owner's feed, beside only the job's own stream open.

Every change also goes to its owner's feed (an `XADD` and a `PUBLISH` in the same script) whether or not a set
stream listens; a listening one adds the delivery of that message. Both runs make the same reports through
`Store.emit` against one private redis-server, a subscriber on the job's channel in both (and one on the
owner's feed channel in the second), reading the script time from `INFO commandstats`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from redis import Redis
from redis.client import Pipeline

from bench.common import Figure, private_redis
from jobcast.settings import Settings
from jobcast.states import Status
from jobcast.store import Store, logged_data
from jobcast.store.record import now_iso


@contextlib.contextmanager
def running_job(r: Redis, store: Store, feed_listener: bool) -> Iterator[tuple[str, list[str]]]:
    """A running job of owner `bench`, with a subscriber reading its channel (and the owner's feed channel with
    `feed_listener`) as it goes: its id and those channels, the job's first."""
    job_id = f"{int(time.time_ns()):032x}"[-32:]
    record = {"id": job_id, "type": "demo", "owner": "bench", "status": Status.QUEUED, "progress": "0",
              "stage": "queued", "attempt": "1", "max_attempts": "1", "timeout_s": "60", "tags": "{}",
              "payload": "{}", "queue": "default", "created_at": now_iso()}
    with r.pipeline(transaction=True) as pipe:
        pipe.multi()
        store.create(pipe, job_id, "bench", 1_700_000_000_000, now_iso(), record)
        pipe.execute()
    store.emit(job_id, "start", owner="bench", ts=now_iso(), fields={"status": "running", "message": "Starting"})
    pubsub = r.pubsub()
    channels = [store.keys.channel(job_id)] + ([store.keys.feed_channel("bench")] if feed_listener else [])
    pubsub.subscribe(*channels)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            pubsub.get_message(timeout=0.1)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    time.sleep(0.2)
    try:
        yield job_id, channels
    finally:
        stop.set()
        reader.join()
        pubsub.close()


def report(store: Store, job_id: str, i: int, reports: int, pipe: Pipeline | None = None) -> None:
    """The `i`th of `reports` progress reports of a job that `running_job` started (queued in `pipe` if given)."""
    store.emit(job_id, "state", owner="bench", ts=now_iso(), fields={"progress": f"{100 * i / reports:.1f}"},
               guard_status=(Status.RUNNING,), guard_attempt=1, pipe=pipe)


def _redis_us_per_report(r: Redis, store: Store, reports: int, feed_listener: bool) -> tuple[float, float]:
    """Redis's time per report (us), and per plain PUBLISH of the last report's message to the job's channel."""
    with running_job(r, store, feed_listener) as (job_id, channels):
        r.config_resetstat()
        for i in range(reports):
            report(store, job_id, i, reports)
        stats = r.info("commandstats")["cmdstat_evalsha"]
        (entry_id, fields), = r.xrevrange(store.keys.events(job_id), count=1)
        message = entry_id.split(b"-")[1] + b" state " + logged_data(b"state", fields[b"d"])  # (as the script sent it)
        r.config_resetstat()
        for _ in range(reports):
            r.publish(channels[0], message)
        publish = r.info("commandstats")["cmdstat_publish"]
    return float(stats["usec_per_call"]), float(publish["usec_per_call"])


def run(quick: bool) -> list[Figure]:
    reports = 500 if quick else 5000
    with private_redis() as server:
        r = Redis.from_url(server.url)
        store = Store(r, Settings.from_env().with_(prefix="bench"))
        rounds = [(_redis_us_per_report(r, store, reports, False), _redis_us_per_report(r, store, reports, True))
                  for _ in range(1 if quick else 3)]
        r.close()
    alone = min(a for (a, _), _ in rounds)
    publish = min(p for (_, p), _ in rounds)
    with_set = min(b for _, (b, _) in rounds)
    return [Figure("Redis time per emit (a progress report)", alone, "us", "≤ 3× a plain PUBLISH", alone <= 3 * publish,
                   baseline=publish, note=f"PUBLISH of the same bytes to the same subscriber; {reports} of each, "
                                          f"best of {len(rounds)} (INFO commandstats)"),
            Figure("Redis time per report, a set stream open", with_set, "us", "≤ 1.25× job stream only",
                   with_set <= 1.25 * alone, baseline=alone,
                   note=f"{reports} reports, best of {len(rounds)}; the feed's XADD and PUBLISH are in both")]
