"""The React hook (`clients/react`, installed from this repository as an app would: `npm install
--install-links`, with the `jobcast` client of `clients/js`) in real React 18 and ReactDOM from the npm
registry, rendered under StrictMode in Debian's chromium: StrictMode runs every effect twice in development,
which is what a hand-written imitation of React could not show."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, Route

from tests.e2e.harness import ROOT, Stack

NODE = ROOT / "tests" / "e2e" / "node" / "node_modules"
FILES = {  # what the test page loads, from the packages as npm installed them
    "/hooktest/react.development.js": NODE / "react/umd/react.development.js",
    "/hooktest/react-dom.development.js": NODE / "react-dom/umd/react-dom.development.js",
    "/hooktest/react.js": ROOT / "tests/e2e/react_esm.js",
    "/hooktest/jobcast.js": NODE / "jobcast/jobcast.js",
    "/hooktest/useJob.js": NODE / "jobcast-react/useJob.js",
    "/hooktest/useJobs.js": NODE / "jobcast-react/useJobs.js",
}

PAGE = """<!doctype html>
<script src="/hooktest/react.development.js"></script>
<script src="/hooktest/react-dom.development.js"></script>
<script type="importmap">{"imports": {"react": "/hooktest/react.js", "jobcast": "/hooktest/jobcast.js"}}</script>
<div id="root"></div>
<script type="module">
  import React from "react";
  import { useJob } from "/hooktest/useJob.js";
  window.renders = [];
  function Probe({ job }) {
    const r = useJob(job);
    window.renders.push({status: r.status, progress: r.progress, message: r.message,
                         items: r.output.items.length, mode: r.mode, error: r.error?.status ?? null});
    return React.createElement("p", {id: "shown"}, `${r.status} ${r.progress}`);
  }
  const root = ReactDOM.createRoot(document.getElementById("root"));
  root.render(React.createElement(React.StrictMode, null, React.createElement(Probe, {job: JOB})));
  window.unmount = () => { root.unmount(); window.unmountedAt = window.renders.length; };
</script>"""

STREAMS = """
// Every EventSource the page opens: how many are open now, and the most ever open at once.
window.streams = {open: 0, most: 0, opened: 0};
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(...args) {
    super(...args);
    streams.open += 1; streams.opened += 1; streams.most = Math.max(streams.most, streams.open);
  }
  close() {
    if (this.readyState !== Native.CLOSED) streams.open -= 1;
    super.close();
  }
};
"""


@pytest.fixture
def hook_page(browser: Browser, stack: Stack) -> Iterator[tuple[Page, list[str]]]:
    """A page that renders `useJob(JOB)` under StrictMode (`open_with`), and what its console said."""
    context = browser.new_context(base_url=stack.url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"error: {e}"))
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.add_init_script(STREAMS)
    yield page, problems
    context.close()


def open_with(page: Page, job: dict[str, Any] | str) -> None:
    """Render `useJob(job)` on the test page."""
    open_page(page, PAGE.replace("JOB", json.dumps(job)))


def open_page(page: Page, html: str) -> None:
    """Open `html` as the test page, with the React and jobcast files of `FILES` beside it."""

    def serve(route: Route) -> None:
        path = urlparse(route.request.url).path
        if path == "/hooktest/page.html":
            route.fulfill(body=html, content_type="text/html")
        else:
            route.fulfill(path=str(FILES[path]), content_type="text/javascript")

    page.route("**/hooktest/*", serve)
    page.goto("/hooktest/page.html")


def test_the_test_page_runs_the_installed_packages() -> None:
    for path in FILES.values():
        assert path.is_file(), f"{path} is missing: `make test` installs tests/e2e/node (npm ci)"
    # npm installed this repository's packages as an app would (copies, `install-links`), as they are now
    for package, name in (("js", "jobcast"), ("react", "jobcast-react")):
        for file in (ROOT / "clients" / package).iterdir():
            installed = NODE / name / file.name
            assert installed.read_bytes() == file.read_bytes(), f"{installed} is stale: run `make test` again"


def test_the_react_hook_follows_a_job_to_its_end(hook_page: tuple[Page, list[str]], stack: Stack) -> None:
    page, problems = hook_page
    # (2 s of steps: a slow machine's page may take longer than a quicker job to open, and see only its end)
    job = stack.submit({"steps": 5, "interval_ms": 400, "emit_output": True})
    open_with(page, job)
    page.wait_for_function("() => window.renders?.at(-1)?.status === 'completed'", timeout=15_000)
    renders = page.evaluate("window.renders")
    assert renders[0]["status"] == "queued" and renders[0]["message"].startswith("Queued")
    progress = [r["progress"] for r in renders]
    assert progress == sorted(progress) and any(0 < p < 100 for p in progress) and progress[-1] == 100
    assert renders[-1]["items"] == 5 and "sse" in {r["mode"] for r in renders}
    assert page.inner_text("#shown") == "completed 100"
    assert problems == []


def test_strict_modes_double_effect_leaves_one_stream_and_none_once_the_job_ends(
    hook_page: tuple[Page, list[str]], stack: Stack
) -> None:
    page, problems = hook_page
    job = stack.submit({"steps": 20, "interval_ms": 100})
    open_with(page, job)
    page.wait_for_function("() => window.renders?.some(r => r.progress > 0)", timeout=15_000)
    streams = page.evaluate("window.streams")
    assert streams["opened"] >= 2, "StrictMode ran the effect once only: this is not React's development build"
    assert streams["open"] == 1 and streams["most"] == 1, f"the first effect's stream was left open: {streams}"
    page.wait_for_function("() => window.renders.at(-1).status === 'completed'", timeout=15_000)
    page.wait_for_function("() => window.streams.open === 0", timeout=5_000)
    assert problems == []


def test_unmounting_while_the_first_answer_is_on_its_way_stops_everything(
    hook_page: tuple[Page, list[str]], stack: Stack
) -> None:
    page, problems = hook_page
    job = stack.submit({"steps": 30, "interval_ms": 100})
    answered: list[str] = []
    page.on("requestfinished", lambda r: answered.append(r.url) if f"/jobs/{job['id']}" in r.url else None)
    # The hook handed a job id fetches the job first; unmount before any answer has come.
    page.route(f"**/jobs/{job['id']}*", lambda route: (page.wait_for_timeout(300), route.continue_()))
    open_with(page, job["id"])
    page.wait_for_function("() => window.streams.opened + (window.renders?.length ?? 0) > 0")
    page.evaluate("window.unmount()")
    page.wait_for_timeout(1500)  # time for a late answer to arrive and be wrongly acted on
    state = page.evaluate("({renders: window.renders.length, at: window.unmountedAt, streams: window.streams})")
    assert state["renders"] == state["at"], "the unmounted hook rendered again"
    assert state["streams"]["open"] == 0, f"a stream stayed open after unmount: {state['streams']}"
    assert problems == []


SET_PAGE = """<!doctype html>
<script src="/hooktest/react.development.js"></script>
<script src="/hooktest/react-dom.development.js"></script>
<script type="importmap">{"imports": {"react": "/hooktest/react.js", "jobcast": "/hooktest/jobcast.js"}}</script>
<div id="root"></div>
<script type="module">
  import React from "react";
  import { useJobs } from "/hooktest/useJobs.js";
  window.renders = [];
  function Batch({ tag }) {
    const { jobs, mode } = useJobs({ tag });
    window.renders.push({ids: jobs.map((j) => j.id), done: jobs.filter((j) => j.status === "completed").length,
                         items: jobs.reduce((n, j) => n + j.output.items.length, 0), mode});
    return React.createElement("ul", null, jobs.map((j) => React.createElement("li", {key: j.id}, j.status)));
  }
  const root = ReactDOM.createRoot(document.getElementById("root"));
  root.render(React.createElement(React.StrictMode, null, React.createElement(Batch, {tag: TAG})));
  window.unmount = () => root.unmount();
</script>"""


def test_use_jobs_follows_a_tag_set_newest_first_with_a_job_that_joins(
    hook_page: tuple[Page, list[str]], stack: Stack
) -> None:
    page, problems = hook_page
    tag = {"batch": f"hooks-{id(page)}"}
    jobs = [stack.submit({"steps": 5, "interval_ms": 60, "emit_output": True}, tags=tag) for _ in range(3)]
    open_page(page, SET_PAGE.replace("TAG", json.dumps(tag)))
    page.wait_for_function("() => window.renders?.at(-1)?.done === 3", timeout=15_000)
    later = stack.submit({"steps": 2, "interval_ms": 30}, tags=tag)
    page.wait_for_function("() => window.renders.at(-1).done === 4", timeout=15_000)
    last = page.evaluate("window.renders.at(-1)")
    assert last["ids"] == [later["id"], *[j["id"] for j in reversed(jobs)]], "newest first"
    assert last["items"] == 3 * 5 and last["mode"] == "sse"
    assert page.evaluate("window.streams.open") == 1, "StrictMode's first effect left its stream open"
    page.evaluate("window.unmount()")
    page.wait_for_function("() => window.streams.open === 0", timeout=5_000)
    assert problems == []


def _exports(source: str) -> set[str]:
    return set(re.findall(r"^export (?:async )?(?:function|const) (\w+)", source, flags=re.M))


APP_TS = """
import { watchJob, watchJobs, submitJob, describe, type Job } from "jobcast";
import { useJob, useJobs } from "jobcast-react";
export async function run(): Promise<string> {
  const job: Job = await submitJob("demo", { steps: 3 });
  const handle = watchJob(job, { onState: (j) => console.log(j.progress, j.output.items.length) });
  handle.close();
  const state = useJob(job.id);
  const set = useJobs({ tag: { project: "apollo" } });
  const onDone = (j: Job) => console.log(j.status, j.usage?.attempt.prompt_tokens, j.parts?.total, j.parent_id);
  watchJobs({ ids: [job.id] }, { onDone }).close();
  return describe(state.job) + String(state.status) + set.jobs.map((j) => j.id).join();
}
"""
WRONG_TS = 'import { watchJob } from "jobcast";\nwatchJob(42, { onState: (j: number) => j });\n'


def test_the_typescript_declarations_cover_the_client_and_are_checked() -> None:
    js = (ROOT / "clients/js/jobcast.js").read_text()
    dts = (ROOT / "clients/js/jobcast.d.ts").read_text()
    assert _exports(js) == set(re.findall(r"^export function (\w+)", dts, flags=re.M))
    # A small app beside node_modules, so that "jobcast" and "jobcast-react" resolve as an app's imports do
    # (through the packages' package.json `exports` and `types`).
    where = Path(tempfile.mkdtemp(prefix="tscheck-", dir=ROOT / "tests/e2e/node"))
    try:
        (where / "app.ts").write_text(APP_TS)
        (where / "wrong.ts").write_text(WRONG_TS)
        flags = ["--noEmit", "--strict", "--module", "esnext", "--moduleResolution", "bundler", "--target", "es2022",
                 "--lib", "es2022,dom"]

        def tsc(name: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(NODE / ".bin" / "tsc"), *flags, name], cwd=where, capture_output=True,
                                  text=True, timeout=120)

        ok = tsc("app.ts")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = tsc("wrong.ts")
        assert bad.returncode != 0 and "wrong.ts" in bad.stdout, "tsc accepted a job id of the wrong type"
    finally:
        shutil.rmtree(where)
