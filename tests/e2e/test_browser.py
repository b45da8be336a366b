"""A person uses the page at `/` in real headless Chromium (Debian's, driven by playwright)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.e2e.harness import ROOT, Stack

ARTIFACTS = ROOT / "test-artifacts"

RECORD = """
window.seen = {};  // per job card: every progress value and item count it showed, in order
new MutationObserver(() => {
  for (const card of document.querySelectorAll('.job')) {
    const seen = window.seen[card.dataset.jobId] ??= {progress: [], items: []};
    const p = Number(card.querySelector('.bar').getAttribute('aria-valuenow'));
    if (seen.progress.at(-1) !== p) seen.progress.push(p);
    const n = card.querySelectorAll('.item').length;
    if (seen.items.at(-1) !== n) seen.items.push(n);
  }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


def _submit(page: Page, steps: int, interval_ms: int, emit_output: bool = False) -> str:
    page.goto("/")
    page.wait_for_selector("#job-type option[value=demo]", state="attached")
    page.select_option("#job-type", "demo")
    page.fill("input[name=steps]", str(steps))
    page.fill("input[name=interval_ms]", str(interval_ms))
    if emit_output:
        page.check("input[name=emit_output]")
    with page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as posted:
        page.click("#submit-form button[type=submit]")
    job_id: str = posted.value.json()["id"]
    page.wait_for_selector(f'.job[data-job-id="{job_id}"]')
    return job_id


def _status(page: Page, job_id: str) -> str:
    return page.locator(f'.job[data-job-id="{job_id}"] .status').inner_text()


def _wait_status(page: Page, job_id: str, status: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([id, s]) => document.querySelector(`.job[data-job-id='${id}'] .status`)?.textContent === s",
        arg=[job_id, status], timeout=timeout)


def test_submit_from_the_page_and_watch_the_bar_fill(page: Page) -> None:
    page.add_init_script(RECORD)
    job_id = _submit(page, steps=10, interval_ms=200, emit_output=True)
    page.wait_for_function(f"() => Number(document.querySelector('.job[data-job-id=\"{job_id}\"] .bar')"
                           ".getAttribute('aria-valuenow')) >= 40")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-mid-job.png"), full_page=True)
    _wait_status(page, job_id, "completed")
    seen = page.evaluate("window.seen")[job_id]
    assert seen["progress"][-1] == 100 and any(0 < p < 100 for p in seen["progress"]), seen
    assert seen["progress"] == sorted(seen["progress"])
    assert seen["items"][-1] == 10 and len(seen["items"]) >= 4, "items should arrive one by one"
    bar = page.locator(f'.job[data-job-id="{job_id}"] .bar')
    assert bar.get_attribute("role") == "progressbar" and bar.get_attribute("aria-valuemax") == "100"
    assert page.locator(f'.job[data-job-id="{job_id}"] .mode').inner_text() == "live"


def test_the_first_thing_shown_is_the_real_state_never_a_false_zero(page: Page) -> None:
    job_id = _submit(page, steps=3, interval_ms=300)
    message = page.locator(f'.job[data-job-id="{job_id}"] .message').inner_text()
    assert message.startswith(("Queued — ", "Starting", "Step ")), message


def test_reload_mid_job_reattaches_and_finishes(page: Page) -> None:
    job_id = _submit(page, steps=15, interval_ms=200)
    page.wait_for_function(f"() => Number(document.querySelector('.job[data-job-id=\"{job_id}\"] .bar')"
                           ".getAttribute('aria-valuenow')) >= 20")
    page.reload()
    card = page.wait_for_selector(f'.job[data-job-id="{job_id}"]')
    assert float(card.query_selector(".bar").get_attribute("aria-valuenow")) >= 20
    _wait_status(page, job_id, "completed")
    # (the page follows its list over one set stream: no job is left remembered as watched)
    assert page.evaluate("localStorage.getItem('jobcast.watching')") in (None, "[]")


def test_without_eventsource_the_page_falls_back_to_polling(page: Page) -> None:
    page.add_init_script("window.JOBCAST_DISABLE_EVENTSOURCE = true")
    job_id = _submit(page, steps=4, interval_ms=300, emit_output=True)
    page.wait_for_function(f"() => document.querySelector('.job[data-job-id=\"{job_id}\"] .mode')"
                           ".textContent === 'polling'")
    _wait_status(page, job_id, "completed")
    assert page.locator(f'.job[data-job-id="{job_id}"] .item').count() == 4


def test_a_buffering_proxy_makes_the_page_fall_back_to_polling(page: Page) -> None:
    # A proxy that holds the stream back: the request for it never answers.
    page.route("**/events*", lambda route: None)
    job_id = _submit(page, steps=6, interval_ms=1000)
    page.wait_for_function(f"() => document.querySelector('.job[data-job-id=\"{job_id}\"] .mode')"
                           ".textContent === 'polling'",
                           timeout=10_000)
    _wait_status(page, job_id, "completed")


def test_cancel_from_the_page(page: Page) -> None:
    job_id = _submit(page, steps=30, interval_ms=300)
    page.wait_for_function(f"() => Number(document.querySelector('.job[data-job-id=\"{job_id}\"] .bar')"
                           ".getAttribute('aria-valuenow')) > 0")
    page.click(f'.job[data-job-id="{job_id}"] button.cancel')
    _wait_status(page, job_id, "canceled", timeout=10_000)
    assert page.locator(f'.job[data-job-id="{job_id}"] button.retry').is_visible()


@pytest.fixture
def own_page(browser: Browser, make_stack) -> Iterator[tuple[Page, Stack]]:
    """A page on a private stack (no workers unless the test starts some)."""
    st: Stack = make_stack(workers=0, JOBCAST_JOB_MODULES="tests.fixtures")
    context = browser.new_context(base_url=st.url, viewport={"width": 1000, "height": 900})
    yield context.new_page(), st
    context.close()


def test_a_job_that_waits_quietly_stays_live_rather_than_falling_back(own_page: tuple[Page, Stack]) -> None:
    page, st = own_page
    job_id = _submit(page, steps=2, interval_ms=0)  # no worker: it waits in the queue, quietly
    page.wait_for_timeout(5000)  # longer than the client's 4 s wait for a first event
    assert page.locator(f'.job[data-job-id="{job_id}"] .mode').inner_text() == "live"
    st.start_worker()
    _wait_status(page, job_id, "completed")


def test_a_retried_attempt_starts_with_fresh_output_on_the_card(page: Page) -> None:
    page.add_init_script(RECORD)
    page.goto("/")
    page.wait_for_selector("#job-type option[value=demo]", state="attached")
    job = page.evaluate("""() => fetch('/jobs', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({type: 'demo', payload: {steps: 6, interval_ms: 100, fail_at: 4, emit_output: true},
                              max_attempts: 2})}).then(r => r.json())""")
    page.reload()
    page.wait_for_selector(f'.job[data-job-id="{job["id"]}"]')
    _wait_status(page, job["id"], "failed")
    seen = page.evaluate("window.seen")[job["id"]]
    assert max(seen["items"]) <= 3, f"items of two attempts were shown together: {seen['items']}"
    assert page.locator(f'.job[data-job-id="{job["id"]}"] .item').count() == 3


def test_polling_keeps_the_latest_items_once_the_server_caps_them(page: Page) -> None:
    page.add_init_script("window.JOBCAST_DISABLE_EVENTSOURCE = true")
    job_id = _submit(page, steps=1300, interval_ms=0, emit_output=True)
    _wait_status(page, job_id, "completed", timeout=60_000)
    items = page.locator(f'.job[data-job-id="{job_id}"] .item dd')
    assert page.locator(f'.job[data-job-id="{job_id}"] .item').count() == 1000
    assert items.first.inner_text() == "301" and items.nth(1998).inner_text() == "1300"


def test_the_form_handles_enums_optionals_booleans_and_nested_models(own_page: tuple[Page, Stack]) -> None:
    page, st = own_page
    page.goto("/")
    page.wait_for_selector("#job-type")
    page.select_option("#job-type", "form_showcase")
    page.wait_for_selector("select[name=tone]")
    assert page.locator("select[name=tone] option").all_inner_texts() == ["warm", "dry"]
    assert page.locator("select[name=style] option").all_inner_texts() == ["", "short", "long"]
    page.fill("textarea[name=tags]", '["a", "b"]')
    with page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as posted:
        page.click("#submit-form button[type=submit]")  # strict left unchecked: false is a valid answer
    assert posted.value.status == 202, posted.value.text()
    st.start_worker()
    job_id = posted.value.json()["id"]
    _wait_status(page, job_id, "completed")
    with st.client() as c:
        result = c.get(f"/jobs/{job_id}").json()["result"]
    assert result == {"count": 3, "tone": "warm", "style": None, "strict": False, "sampling": {"temperature": 0.7},
                      "tags": ["a", "b"]}
