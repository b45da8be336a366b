"""`watchJobs` of jobcast.js in Debian's chromium: a set of jobs over one `GET /events` connection, jobs
submitted later (by the CLI) joining it, and the polling fallback with the same filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from playwright.sync_api import Page

from tests.e2e.harness import ROOT, Stack

WATCH = """async ([tag, count]) => {
  const { submitJob, watchJobs } = await import('/static/jobcast.js');
  window.done = new Set(); window.states = 0;
  const jobs = [];
  for (let i = 0; i < count; i++) jobs.push(await submitJob('demo', {steps: 6, interval_ms: 80}, {tags: {batch: tag}}));
  window.handle = watchJobs({tag: {batch: tag}}, {
    onState: () => { window.states += 1; },
    onDone: (job) => window.done.add(job.id),
  });
  return jobs.map((j) => j.id);
}"""


def test_a_page_follows_twelve_jobs_over_one_connection_and_a_job_the_cli_submits_joins(
    page: Page, stack: Stack
) -> None:
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
    page.goto("/")
    tag = uuid.uuid4().hex[:8]
    ids = page.evaluate(WATCH, [tag, 12])
    page.wait_for_function(f"() => window.done.size === {len(ids)}", timeout=30_000)
    assert page.evaluate("window.handle.mode") == "sse"
    mine = [url for url in streams if "tag=batch" in url]
    assert len(mine) == 1, streams
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_"))}
    env["JOBCAST_URL"] = stack.url
    cli = subprocess.run([sys.executable, "-m", "jobcast", "submit", "demo", "--payload",
                          '{"steps": 2, "interval_ms": 50}', "--tag", f"batch={tag}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    page.wait_for_function(f"() => window.done.size === {len(ids) + 1}", timeout=30_000)
    assert len([url for url in streams if "tag=batch" in url]) == 1, "the joining job came over the same connection"
    page.evaluate("window.handle.close()")


def test_the_page_shows_twelve_jobs_live_over_its_one_stream_and_one_the_cli_submits(
    page: Page, stack: Stack
) -> None:
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events" in r.url or "/jobs/" in r.url else None)
    page.goto("/")
    page.wait_for_selector("#job-type option[value=demo]", state="attached")
    page.wait_for_function("() => [...document.querySelectorAll('.job .mode')].every(m => m.textContent === 'live')")
    jobs = [stack.submit({"steps": 5, "interval_ms": 100}) for _ in range(12)]  # from elsewhere: not this page
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_"))}
    env["JOBCAST_URL"] = stack.url
    cli = subprocess.run([sys.executable, "-m", "jobcast", "submit", "demo", "--payload",
                          '{"steps": 2, "interval_ms": 50}'], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)["id"]
    for job_id in [j["id"] for j in jobs] + [from_cli]:
        page.wait_for_function(f"() => document.querySelector('.job[data-job-id=\"{job_id}\"] .status')"
                               "?.textContent === 'completed'", timeout=30_000)
        assert page.locator(f'.job[data-job-id="{job_id}"] .mode').inner_text() == "live"
    assert len([u for u in streams if "/events" in u]) == 1, f"more than one stream: {streams}"
    assert not [u for u in streams if "/jobs/" in u], f"the page polled: {streams[:5]}"
    first = page.locator(".job").first.get_attribute("data-job-id")
    assert first == from_cli, "newest first"


def test_without_eventsource_a_set_is_polled_with_the_same_filters(page: Page) -> None:
    page.add_init_script("window.JOBCAST_DISABLE_EVENTSOURCE = true")
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/jobs?tag=" in r.url or "/events" in r.url else None)
    page.goto("/")
    tag = uuid.uuid4().hex[:8]
    ids = page.evaluate(WATCH, [tag, 3])
    page.wait_for_function(f"() => window.done.size === {len(ids)}", timeout=30_000)
    assert page.evaluate("window.handle.mode") == "polling"
    assert polls and all(f"/jobs?tag=batch%3A{tag}" in url for url in polls), polls[:3]  # no /events at all
    page.evaluate("window.handle.close()")
