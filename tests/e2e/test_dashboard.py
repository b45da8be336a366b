"""rq-dashboard at /dashboard/ against the attacks a review found: stored XSS through a job's error, cross-site
requests riding on cached credentials, and a dashboard open without any."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser

from tests.e2e.harness import Stack, read_stream, wait_for

USER, PASSWORD = "ops", "dashboard-pass-0123"
XSS = '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">'


@pytest.fixture
def ops(make_stack) -> Stack:
    return make_stack(workers=1, JOBCAST_JOB_MODULES="tests.fixtures", JOBCAST_DASHBOARD_USER=USER,
                      JOBCAST_DASHBOARD_PASSWORD=PASSWORD)


def test_stored_xss_through_a_jobs_error_does_not_run_in_the_dashboard(ops: Stack, browser: Browser) -> None:
    with ops.client() as c:
        job = c.post("/jobs", json={"type": "greet", "payload": {"name": XSS}}).json()
    end = read_stream(ops.url, job["links"]["events"]).events[-1]
    assert end.event == "failed" and XSS in end.data["error"]["message"]  # jobcast's own API keeps it as it is
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        response = page.goto(f"{ops.url}/dashboard/0/view/job/{job['id']}")
        assert response is not None and response.status == 200
        csp = response.headers["content-security-policy"]
        assert "'nonce-" in csp and "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]
        # the dashboard's own scripts ran (they fetched the job and drew its error) ...
        page.wait_for_selector("pre.exc_info", timeout=15_000)
        wait_for(lambda: "cannot greet" in page.inner_text("pre.exc_info"), 15, "the error to be drawn")
        # ... and the payload did not
        assert page.evaluate("window.__xss") is None
        assert page.query_selector("pre.exc_info img") is None
    finally:
        context.close()


def test_cross_site_requests_that_act_are_refused(ops: Stack) -> None:
    queue = f"rq:queue:{ops.queue}"
    ops.stop()  # no worker: the jobs stay queued, so an empty queue shows that the request acted
    ops.start_api()
    ops.submit({"steps": 1})
    assert ops.redis.r.llen(queue) == 1
    empty = f"/dashboard/queue/{ops.queue}/queued/empty"
    with ops.client(auth=(USER, PASSWORD)) as c:
        # (rq-dashboard opens its Redis connection on the first page view; its actions need one)
        assert c.get("/dashboard/", headers={"Sec-Fetch-Site": "none"}).status_code == 200
        for headers in ({"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example"}, {}):
            r = c.post(empty, headers=headers)
            assert r.status_code == 403, (headers, r.text)
            r = c.get(f"/dashboard/requeue/{ops.queue}", headers=headers)
            assert r.status_code == 403, (headers, r.text)
        assert ops.redis.r.llen(queue) == 1, "a refused request changed something"
        # the dashboard's own pages may (the browser says so)
        assert c.post(empty, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert ops.redis.r.llen(queue) == 0


def test_without_credentials_the_dashboard_is_never_mounted(make_stack) -> None:
    st: Stack = make_stack(workers=0)  # auth off, no dashboard credentials
    with st.client() as c:
        assert c.get("/dashboard/").status_code == 404
