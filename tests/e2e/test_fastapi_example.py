"""`examples/fastapi_app`: jobcast mounted at /jobcast in a FastAPI app under uvicorn, with real Redis and a
real worker; the app's own endpoint submits in-process, and the job is followed under the prefix."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.e2e.harness import ROOT, RedisServer, Stack, _spawn, free_port, read_stream, wait_for

EXAMPLE = ROOT / "examples" / "fastapi_app"
USER, PASSWORD = "ops", "example-dashboard-pass"


@pytest.fixture(scope="module")
def example(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example app's URL, with one worker beside it."""
    workdir: Path = tmp_path_factory.mktemp("example")
    st = Stack(redis_server, workdir, {"JOBCAST_DASHBOARD_USER": USER, "JOBCAST_DASHBOARD_PASSWORD": PASSWORD})
    port = free_port()
    env = {**st.env(), "PYTHONPATH": str(EXAMPLE), "JOBCAST_JOB_MODULES": "reports"}
    procs = [
        _spawn([sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(EXAMPLE), "--port", str(port)], env,
               workdir / "app.log"),
        _spawn([sys.executable, "-m", "jobcast", "worker"], env, workdir / "worker.log"),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=2) as c:
            wait_for(lambda: _get(c, "/jobcast/readyz") == 1, 30, f"the example app and its worker ({workdir})")
        yield url
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _get(c: httpx.Client, path: str) -> int | None:
    try:
        r = c.get(path)
    except httpx.TransportError:
        return None
    return int(r.json()["workers"]) if r.status_code == 200 else None


def test_the_apps_own_endpoint_submits_and_the_job_is_followed_under_the_prefix(example: str) -> None:
    with httpx.Client(base_url=example, timeout=5) as c:
        assert c.get("/health").json() == {"status": "ok"}  # the host app's own routes still answer
        r = c.post("/reports", json={"weeks": 3})
        assert r.status_code == 202, r.text
        report = r.json()
        assert report["events"] == f"{example}/jobcast/jobs/{report['job_id']}/events"
        s = read_stream(example, report["events"], headers={"Last-Event-ID": "0"})
        end = s.events[-1]
        assert end.event == "completed" and end.data["result"] == {"weeks": 3, "total": 600}
        assert [e.data["item"]["week"] for e in s.events if e.event == "output"] == [1, 2, 3]
        assert end.data["links"]["self"] == report["self"] == f"{example}/jobcast/jobs/{report['job_id']}"
        # the job as jobcast's own API under the prefix has it
        assert c.get(report["self"]).json()["tags"] == {"app": "reports"}
        refused = c.post("/jobcast/jobs", json={"type": "weekly_report", "payload": {"weeks": 99}})
        assert refused.status_code == 422 and refused.json()["error"]["details"][0]["path"] == "payload.weeks"


def test_the_dashboard_under_the_prefix_keeps_its_own_guards(example: str) -> None:
    with httpx.Client(base_url=example, timeout=5) as c:
        assert c.get("/jobcast/dashboard/").status_code == 401
        r = c.get("/jobcast/dashboard/", auth=(USER, PASSWORD))
    assert r.status_code == 200 and len(r.headers.get_list("content-security-policy")) == 1
    assert "nonce-" in r.headers["content-security-policy"]


def test_the_page_under_the_prefix_follows_the_report_live(example: str, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{example}/jobcast/")
        page.wait_for_selector("#job-type option[value=weekly_report]", state="attached")
        with httpx.Client(base_url=example, timeout=5) as c:
            job_id = c.post("/reports", json={"weeks": 8}).json()["job_id"]
        page.reload()  # the page lists the owner's jobs, the new report among them
        card = f'.job[data-job-id="{job_id}"]'
        page.wait_for_selector(f"{card} .mode:text('live')")
        page.wait_for_selector(f"{card} .status.completed", timeout=20_000)
        assert page.locator(f"{card} .item").count() == 8 and errors == []
    finally:
        context.close()
