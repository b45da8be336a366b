"""A page on another origin (an app's own front end) follows a job with `new EventSource(job.links.events)`,
the link exactly as the API returned it, in Debian's chromium; with auth off and on; and with jobcast.js
imported from the API's origin."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, Page

from tests.e2e.harness import Stack

KEY, SECRET = "origin-test-key-0123456789", "origin-test-secret-0123456789"

FOLLOW = """
window.states = [];
const follow = (job) => new Promise((resolve) => {
  const source = new EventSource(job.links.events);  // as returned: no rewriting, no base
  source.addEventListener("state", (e) => window.states.push(JSON.parse(e.data).progress));
  source.addEventListener("completed", (e) => { source.close(); resolve(JSON.parse(e.data)); });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) resolve({error: "stream refused"}); };
});
"""


class AppOrigin:
    """An app's own web server on another origin (`http://localhost:<its port>`, where the API is
    `http://127.0.0.1:<port>`): it serves one page, whatever is asked."""

    def __init__(self) -> None:
        self.html = b""
        origin = self

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(origin.html)))
                self.end_headers()
                self.wfile.write(origin.html)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.url = f"http://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def origin() -> Iterator[AppOrigin]:
    app = AppOrigin()
    yield app
    app.server.shutdown()
    app.server.server_close()


@pytest.fixture
def app_page(browser: Browser, origin: AppOrigin) -> Iterator[Callable[[str], Page]]:
    """Open a page of `html` on the app's origin."""
    context = browser.new_context()

    def open_page(html: str) -> Page:
        origin.html = html.encode()
        page = context.new_page()
        page.goto(f"{origin.url}/")
        return page

    yield open_page
    context.close()


def _page(script: str) -> str:
    return f"<!doctype html><title>an app</title><script type=module>{script}</script>"


def test_with_auth_off_a_page_elsewhere_submits_and_follows_the_link_as_returned(
        make_stack: Callable[..., Stack], origin: AppOrigin, app_page: Callable[[str], Page]) -> None:
    st = make_stack(workers=1, JOBCAST_CORS_ORIGINS=origin.url)
    page = app_page(_page(FOLLOW + f"""
const response = await fetch("{st.url}/jobs", {{method: "POST", headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{type: "demo", payload: {{steps: 4, interval_ms: 100}}}})}});
window.job = await response.json();
window.done = await follow(window.job);
"""))
    page.wait_for_function("() => window.done", timeout=20_000)
    job, done = page.evaluate("window.job"), page.evaluate("window.done")
    assert job["links"]["events"] == f"{st.url}/jobs/{job['id']}/events"
    assert done["status"] == "completed" and done["result"] == {"steps": 4}
    assert 0 < len(page.evaluate("window.states"))


def test_with_auth_on_the_token_link_from_the_apps_backend_is_all_the_page_needs(
        make_stack: Callable[..., Stack], origin: AppOrigin, app_page: Callable[[str], Page]) -> None:
    st = make_stack(workers=1, JOBCAST_CORS_ORIGINS=origin.url, JOBCAST_API_KEYS=f"{KEY}:acme",
                    JOBCAST_SECRET=SECRET)
    with st.client(headers={"Authorization": f"Bearer {KEY}"}) as c:  # the app's backend holds the key
        job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 4, "interval_ms": 100}}).json()
    assert job["links"]["events"].startswith(f"{st.url}/jobs/{job['id']}/events?token=")
    page = app_page(_page(FOLLOW + f"window.done = await follow({json.dumps(job)});"))
    page.wait_for_function("() => window.done", timeout=20_000)
    assert page.evaluate("window.done")["status"] == "completed"


def test_jobcast_js_from_the_apis_origin_follows_a_job_on_a_page_elsewhere(
        make_stack: Callable[..., Stack], origin: AppOrigin, app_page: Callable[[str], Page]) -> None:
    st = make_stack(workers=1, JOBCAST_CORS_ORIGINS=origin.url, JOBCAST_API_KEYS=f"{KEY}:acme",
                    JOBCAST_SECRET=SECRET)
    with st.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 5, "interval_ms": 100}}).json()
    page = app_page(_page(f"""
import {{ watchJob }} from "{st.url}/static/jobcast.js";
window.modes = [];
watchJob({json.dumps(job)}, {{onDone: (job) => {{ window.done = job; }}, onMode: (m) => window.modes.push(m)}});
"""))
    page.wait_for_function("() => window.done", timeout=20_000)
    assert page.evaluate("window.done")["status"] == "completed" and page.evaluate("window.modes") == ["sse"]


def test_without_cors_for_its_origin_the_page_gets_nothing(
        make_stack: Callable[..., Stack], origin: AppOrigin, app_page: Callable[[str], Page]) -> None:
    st = make_stack(workers=1)
    page = app_page(_page(f"""
try {{ await fetch("{st.url}/jobs"); window.outcome = "read"; }} catch {{ window.outcome = "blocked"; }}
"""))
    page.wait_for_function("() => window.outcome")
    assert page.evaluate("window.outcome") == "blocked"
