"""`python -m bench --quick`: every benchmark starts its stack, measures its baseline and reports (CI's check)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from bench.__main__ import BENCHMARKS
from tests.e2e.harness import ROOT

FIGURES = [
    "progress → 100 SSE clients, p50", "progress → 100 SSE clients, p99", "idle SSE streams held by one API process",
    "RSS per idle stream", "events/s to 200 clients on one hot job", "healthy watchers' p99 beside 140 stalled ones",
    "trivial jobs/s, 2 × Worker: a fork per job",
    "trivial jobs/s, 2 × SimpleWorker", "100,000 progress() calls in a tight loop", "Redis writes/s for that job",
    "GET /jobs/{id} req/s", "Redis memory per finished 20-step demo job", "Redis time per emit (a progress report)",
    "RSS per idle stream, ours (1,000 streams)", "RSS per idle stream, sse-starlette's EventSourceResponse",
    "events/s to 200 clients on one hot job, sse-starlette's",
    "events/s to 200 clients on one hot job, 2 API processes",
    "Redis CPU per submit (POST /jobs, 16 at a time)", "Redis CPU per finished trivial job",
    "Redis CPU per progress report, a round trip each", "submit over HTTP → first progress at an SSE client, p50",
]


@pytest.mark.timeout(420)  # (about a minute here: twelve benchmarks, each with stacks of its own, two at a time)
def test_every_benchmark_runs_in_quick_mode() -> None:
    # Two halves at once (mostly waiting for their stacks to start; quick figures mean nothing anyway), each
    # in a session of its own: should one hang, the redis-servers, APIs and workers it started go with it.
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "--quick", *BENCHMARKS[half::2]], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for half in (0, 1)]
    summary = ""
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=400)
            assert proc.returncode == 0, out[-3000:] + err[-3000:]
            summary += out.split("all figures", 1)[1]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()  # (reaped, and its pipes closed: else a later test fails on their ResourceWarning)
    for figure in FIGURES:
        assert figure in summary, f"{figure!r} missing from:\n{summary}"
