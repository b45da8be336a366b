"""Writes `tests/e2e/upgrade/jobcast-<rev>.rdb`: the Redis data of a system running an earlier version of
jobcast, for `test_upgrade.py` to start the current one on.

    git worktree add /tmp/old <rev> && .venv/bin/python -m tests.e2e.upgrade_dump /tmp/old <rev>

The old version's API and worker (its `src` first on PYTHONPATH) leave three jobs: `done` completed,
`cut` running when its worker was SIGKILLed (2 attempts allowed), and `waiting` queued in RQ with no
worker to take it. Job data is kept a year (`JOBCAST_JOB_TTL`), so the dump stays loadable that long.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from tests.e2e.harness import RedisServer, Stack, wait_for

HERE = Path(__file__).parent / "upgrade"
ENV = {"JOBCAST_PREFIX": "up", "JOBCAST_QUEUE": "up-q", "JOBCAST_JOB_TTL": str(365 * 86400)}
JOBS = {
    "done": {"steps": 2, "interval_ms": 0, "emit_output": True},
    "cut": {"steps": 30, "interval_ms": 200, "emit_output": True},
    "waiting": {"steps": 3, "interval_ms": 0},
}


def main(old_checkout: str, rev: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        st = Stack(redis, Path(tmp), {**ENV, "PYTHONPATH": str(Path(old_checkout) / "src")})
        try:
            st.start_api()
            st.start_worker()
            st.wait_workers(1)
            ids = {"done": st.submit(JOBS["done"])["id"]}
            with st.client() as c:
                wait_for(lambda: c.get(f"/jobs/{ids['done']}").json()["status"] == "completed", 20, "done")
                ids["cut"] = st.submit(JOBS["cut"], max_attempts=2)["id"]
                wait_for(lambda: c.get(f"/jobs/{ids['cut']}").json()["progress"] > 20, 20, "cut to be under way")
                horse = redis.r.hget(f"up:job:{{{ids['cut']}}}", "worker").decode().rsplit(":", 1)[1]
                os.killpg(os.getpgid(int(horse)), signal.SIGKILL)  # the work horse (a session of its own)
                os.killpg(st.workers[0].pid, signal.SIGKILL)  # and the worker
                st.workers[0].wait()
                ids["waiting"] = st.submit(JOBS["waiting"])["id"]
            st.stop_api()
            redis.r.save()
            HERE.mkdir(exist_ok=True)
            shutil.copy(Path(tmp) / "dump.rdb", HERE / f"jobcast-{rev}.rdb")
            (HERE / f"jobcast-{rev}.json").write_text(json.dumps({"env": ENV, "ids": ids, "jobs": JOBS}, indent=2))
        finally:
            st.stop()
            redis.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
