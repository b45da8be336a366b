"""An existing FastAPI app that adds jobcast instead of running it as one more service.

- jobcast's API, its page and its event streams live under `/jobcast` (`app.mount`), and this app's
  lifespan runs jobcast's (its Redis clients, event hub and janitor);
- the app's own endpoint `POST /reports` submits a job in-process (`jobcast.submit`: the same checks and
  the same job object as `POST /jobcast/jobs`) and hands the browser `links.events` to follow it live;
- the job type is an ordinary function (`reports.py`), which the workers import (`JOBCAST_JOB_MODULES=reports`).

    python app.py    # this app on http://127.0.0.1:8080/ and one jobcast worker beside it
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import redis
import reports  # noqa: F401  (registers the job type `weekly_report`)
import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel

import jobcast

REDIS_URL = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")


jobcast_app = jobcast.create_app()
app = FastAPI(title="Acme reports", lifespan=jobcast_app.lifespan)
app.mount("/jobcast", jobcast_app)
connection = redis.Redis.from_url(REDIS_URL)


class ReportRequest(BaseModel):
    weeks: int = 4


@app.post("/reports", status_code=202)
async def start_report(body: ReportRequest, request: Request) -> dict[str, Any]:
    """Start a report; the answer's `events` is a URL the browser hands to `new EventSource(...)`."""
    job = await jobcast.submit(connection, "weekly_report", {"weeks": body.weeks}, tags={"app": "reports"},
                               base_url=f"{request.base_url}jobcast")
    return {"job_id": job.id, "status": job.status, "events": job.links.events, "self": job.links.self}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    here = os.path.dirname(__file__) or "."
    worker = subprocess.Popen([sys.executable, "-m", "jobcast", "worker"],
                              env={**os.environ, "JOBCAST_JOB_MODULES": "reports"}, cwd=here)
    try:
        uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
    finally:
        worker.terminate()
        worker.wait(timeout=10)
