"""`jobcast dev` runs the whole system from nothing: a private Redis (or an in-memory one), API and workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ROOT, free_port, read_stream, wait_for


@pytest.mark.parametrize("redis", ["redis-server", "in-memory"])
def test_dev_runs_a_job_end_to_end(tmp_path: Path, redis: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_"))}
    env["JOBCAST_PORT"] = str(port)
    if redis == "in-memory":
        env["PATH"] = str(tmp_path)  # no redis-server to be found
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jobcast", "dev"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=5) as c:
            wait_for(lambda: c.get("/readyz").status_code == 200, 30, "jobcast dev to be ready")
            assert c.get("/readyz").json()["workers"] == 2
            job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 4, "interval_ms": 20}}).json()
        s = read_stream(url, job["links"]["events"])
        assert s.events[-1].event == "completed" and s.events[-1].data["result"] == {"steps": 4}
        text = log.read_text()
        assert f"jobcast is running at http://127.0.0.1:{port}/" in text
        assert ("in-memory Redis" in text) == (redis == "in-memory")
        if redis == "redis-server":  # the dashboard is never open without credentials: dev makes up a pair
            found = re.search(r"rq-dashboard: \S+ \(user '([^']+)', password '([^']+)'\)", text)
            assert found, text
            with httpx.Client(base_url=url, timeout=5) as c:
                assert c.get("/dashboard/").status_code == 401
                assert c.get("/dashboard/", auth=(found[1], found[2])).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, log.read_text()
