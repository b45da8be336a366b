"""`watchJobs` of jobcast.js in Debian's chromium: a set of jobs over one `GET /events` connection, jobs
submitted later (by the CLI) joining it, and the polling fallback with the same filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

from playwright.sync_api import Browser, Page

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


def _open_the_page(page: Page) -> list[str]:
    """Open the page, its list live; the URLs of its requests for streams and jobs from then on, as they come."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/events" in r.url or "/jobs/" in r.url else None)
    # (its list's stream asked for: with no jobs listed yet, the wait below would pass before it)
    with page.expect_request(lambda r: "/events" in r.url and "/jobs/" not in r.url):
        page.goto("/")
    page.wait_for_function("() => [...document.querySelectorAll('.job .mode')].every(m => m.textContent === 'live')")
    return requests


def test_the_page_shows_twelve_jobs_live_over_its_one_stream_and_one_the_cli_submits(
    page: Page, stack: Stack
) -> None:
    streams = _open_the_page(page)
    page.wait_for_selector("#job-type option[value=demo]", state="attached")
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


WATCH_EACH = """async (jobs) => {
  const { watchJob } = await import('/static/jobcast.js');
  window.items = window.items || {}; window.done = window.done || {}; window.modes = window.modes || {};
  for (const job of jobs) {
    window.items[job.id] = []; window.modes[job.id] = [];
    watchJob(job, {
      onOutput: (out) => out.kind === 'item' && window.items[job.id].push(out.item.step),
      onDone: (j) => { window.done[job.id] = j.status; },
      onMode: (mode) => window.modes[job.id].push(mode),
    });
  }
}"""


def test_watching_twelve_single_jobs_shares_one_set_stream_past_four_and_never_polls(
    page: Page, stack: Stack
) -> None:
    requests = _open_the_page(page)
    requests.clear()  # the page's own list stream
    # The first four (each on a stream of its own) run longest, so their streams stay open while the rest run.
    jobs = [stack.submit({"steps": 6, "interval_ms": 400 if i < 4 else 150, "emit_output": True})
            for i in range(12)]
    page.evaluate(WATCH_EACH, jobs)
    page.wait_for_function("() => Object.values(window.items).some((steps) => steps.length)", timeout=30_000)
    late = stack.submit({"steps": 6, "interval_ms": 150, "emit_output": True})
    page.evaluate(WATCH_EACH, [late])  # mid-run, the first four far from done: it joins the shared stream
    ids = [job["id"] for job in jobs + [late]]
    page.wait_for_function(f"() => Object.keys(window.done).length === {len(ids)}", timeout=60_000)
    assert page.evaluate("window.done") == {job_id: "completed" for job_id in ids}
    items = page.evaluate("window.items")
    assert all(items[job_id] == [1, 2, 3, 4, 5, 6] for job_id in ids), items  # every item once, in order
    assert all(modes == ["sse"] for modes in page.evaluate("Object.values(window.modes)"))
    single = [u for u in requests if "/events" in u and "/jobs/" in u]
    shared = [u for u in requests if "/events?" in u and "/jobs/" not in u]
    polled = [u for u in requests if "/events" not in u]
    assert len(single) == 4, "\n".join(requests)
    assert len(shared) == 2 and shared[0].count("job=") == 8, shared  # the eight past four; then the late one
    assert f"job={late['id']}" in shared[1], shared
    assert not polled, f"it polled: {polled[:3]}"


def test_a_set_being_watched_is_watched_again_after_a_reload(page: Page, stack: Stack) -> None:
    page.goto("/")
    tag = uuid.uuid4().hex[:8]
    ids = page.evaluate("""async (tag) => {
      const { submitJob, watchJobs } = await import('/static/jobcast.js');
      const jobs = [];
      const payload = {steps: 8, interval_ms: 250, emit_output: true};
      for (let i = 0; i < 3; i++) jobs.push(await submitJob('demo', payload, {tags: {batch: tag}}));
      watchJobs({tag: {batch: tag}}, {});
      return jobs.map((j) => j.id);
    }""", tag)
    page.reload()
    resumed = page.evaluate("""async () => {
      const { rememberedSets, resumeSetWatches } = await import('/static/jobcast.js');
      window.done = {};
      const sets = rememberedSets();
      const onDone = (job) => { window.done[job.id] = job.output.items.length; };
      window.handles = resumeSetWatches(() => ({ onDone }));
      return sets;
    }""")
    assert {"tag": {"batch": tag}} in resumed, resumed
    # (The page's own watch of all your jobs is remembered too, and resumed with it.)
    page.wait_for_function(f"() => {json.dumps(ids)}.every((id) => id in window.done)", timeout=30_000)
    done = page.evaluate("window.done")
    assert {job_id: done[job_id] for job_id in ids} == {job_id: 8 for job_id in ids}  # each with all it produced
    left = page.evaluate("import('/static/jobcast.js').then((m) => { window.handles.forEach((h) => h.close());"
                         " return m.rememberedSets(); })")
    assert {"tag": {"batch": tag}} not in left, "a closed watch is forgotten"


def test_with_a_key_a_list_is_followed_live_on_the_token_stream_of_all_your_jobs(
    browser: Browser, make_stack: Any
) -> None:
    key = "list-page-key-0123456789abcdef"
    st: Stack = make_stack(workers=1, JOBCAST_API_KEYS=f"{key}:carol", JOBCAST_SECRET="list-secret-0123456789")
    context = browser.new_context(base_url=st.url)
    page = context.new_page()
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events" in r.url or "/jobs/" in r.url else None)
    page.goto("/")
    seen = page.evaluate("""async (key) => {
      const { setApiKey, submitJob, watchJobs } = await import('/static/jobcast.js');
      setApiKey(key);
      const other = await submitJob('demo', {steps: 3, interval_ms: 100});
      const listed = [await submitJob('demo', {steps: 4, interval_ms: 100}),
                      await submitJob('demo', {steps: 4, interval_ms: 100})].map((j) => j.id);
      const seen = new Set();
      await new Promise((resolve) => {
        const handle = watchJobs({ids: listed}, {
          onState: (job) => seen.add(job.id),
          onDone: () => { if (listed.every((id) => handle.jobs.get(id)?.status === 'completed')) resolve(); },
        });
        window.handle = handle;
      });
      return {mode: window.handle.mode, seen: [...seen], listed, other: other.id};
    }""", key)
    context.close()
    assert seen["mode"] == "sse"
    assert sorted(seen["seen"]) == sorted(seen["listed"]), "only the listed jobs, though the stream has all"
    mine = [u for u in streams if "/events" in u]
    assert len(mine) == 1 and "token=" in mine[0] and "job=" not in mine[0], streams
    assert not [u for u in streams if "/jobs/" in u and "/events" not in u], f"it polled: {streams}"
