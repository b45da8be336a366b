"""A 200-persona batch on the stand-in model, paced at a fixed time per call, with 1, 2, 4 and 8 workers:
the batch's wall time against the ideal (parts x call time / workers), beside the same count as one job
did it before batches (calls of 10, three at a time in one process).

The stand-in (`jobcast.llm.fake`) writes every answer at a fixed pace, so a call of 10 personas takes
the same time on every worker; the call time is measured as the median time its parts ran in the run on
one worker. Wall time is the batch's `ended_at` minus its `created_at` (server clocks), so it holds the
queueing, the split, every part and the join.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime

import httpx

from bench.common import Figure, bench_stack, free_port, private_redis, wait_for
from tests.e2e.harness import ROOT

TOKENS_PER_S = 200  # a call of 10 personas (about 160 words) in some 0.8 s


@contextlib.contextmanager
def stand_in(tokens_per_s: float) -> Iterator[str]:
    port = free_port()
    code = ("import uvicorn; from jobcast.llm.fake import create_fake_llm; "
            f"uvicorn.run(create_fake_llm(first_token_ms=0, tokens_per_s={tokens_per_s}), host='127.0.0.1', "
            f"port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 20, "the stand-in model")
        yield url
    finally:
        proc.terminate()
        proc.wait()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_requests").status_code == 200
    except httpx.HTTPError:
        return False


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def _run(url: str, job_type: str, count: int) -> tuple[float, list[float]]:
    """Submit `count` personas as `job_type`; its wall time, and how long each of its parts ran."""
    with httpx.Client(base_url=url, timeout=30) as c:
        job = c.post("/jobs", json={"type": job_type, "payload": {"count": count}}).json()
        done = wait_for(lambda: (j := c.get(f"/jobs/{job['id']}").json())["status"] in ("completed", "failed")
                        and j, 600, f"{job_type} to end")
        assert done["status"] == "completed", done["error"]
        parts = c.get("/jobs", params={"parent": job["id"], "limit": 500}).json()["jobs"]
    return _seconds(done["created_at"], done["ended_at"]), [_seconds(p["started_at"], p["ended_at"]) for p in parts]


def run(quick: bool) -> list[Figure]:
    count = 40 if quick else 200
    parts = -(-count // 10)
    worker_counts = (1, 2) if quick else (1, 2, 4, 8)
    figures: list[Figure] = []
    with private_redis() as server, stand_in(TOKENS_PER_S * (4 if quick else 1)) as model:
        env = {"JOBCAST_MODEL": "stand-in", "OPENAI_BASE_URL": f"{model}/v1", "OPENAI_API_KEY": "bench"}
        call_s = 0.0
        for workers in worker_counts:
            with bench_stack(server, workers=workers, **env) as stack:
                wall, ran = _run(stack.url, "generate_personas", count)
                if workers == 1:
                    call_s = statistics.median(ran)
                    one_job, _ = _run(stack.url, "bench_personas_one_job", count)
            ideal = parts * call_s / workers
            target = workers == max(worker_counts)
            figures.append(Figure(
                f"{count}-persona batch, {workers} worker{'s' * (workers > 1)}: wall time", wall, "s",
                "≤ 1.3× ideal" if target else "-", wall <= 1.3 * ideal if target else True, ideal,
                note=f"ideal {parts} parts × {call_s:.2f}s / {workers}; best schedule {-(-parts // workers)} rounds "
                     f"= {-(-parts // workers) * call_s:.2f}s; a part ran {statistics.median(ran):.2f}s (median), "
                     f"{max(ran):.2f}s at most"))
        figures.append(Figure(f"same {count} as one job (calls of 10, 3 at a time)", one_job, "s", "-", True,
                              figures[-1].value, note="baseline: the batch at the most workers"))
    return figures
