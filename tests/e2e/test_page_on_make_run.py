"""A newcomer's first look: the page of `jobcast dev` (what `make run` runs, no configuration at all) in
Debian's chromium, with the LLM types on the stand-in model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.e2e.harness import Dev, running_dev

# Each painted frame's count of items on every card: what a person watching the page sees.
FRAMES = """
window.painted = {};
const sample = () => {
  for (const card of document.querySelectorAll('.job')) {
    const seen = window.painted[card.dataset.jobId] ??= [];
    const n = card.querySelectorAll('.item').length;
    if (seen.at(-1) !== n) seen.push(n);
  }
  requestAnimationFrame(sample);
};
requestAnimationFrame(sample);
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    with running_dev(tmp_path_factory.mktemp("dev")) as d:
        yield d


@pytest.fixture
def page(browser: Browser, dev: Dev) -> Iterator[Page]:
    context = browser.new_context(base_url=dev.url, viewport={"width": 1100, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.add_init_script(FRAMES)
    pg.goto("/")
    pg.wait_for_selector("#job-type option[value=generate_personas]", state="attached")
    yield pg
    context.close()
    assert errors == [], f"the page threw: {errors}"


def _submit(page: Page, type_: str, **fields: object) -> str:
    page.select_option("#job-type", type_)
    for name, value in fields.items():
        page.fill(f"#payload-fields [name={name}]", str(value))
    with page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as answer:
        page.click("#submit-form button[type=submit]")
    job_id: str = answer.value.json()["id"]
    return job_id


def _card(page: Page, job_id: str) -> str:
    return f'.job[data-job-id="{job_id}"]'


def test_every_type_is_offered_and_the_llm_ones_are_labelled_stand_ins(page: Page) -> None:
    options = page.locator("#job-type option").all_inner_texts()
    assert "demo" in options and "generate_personas (stand-in model)" in options
    assert not any("unavailable" in o for o in options)
    page.select_option("#job-type", "generate_personas")
    assert page.locator("#type-stand-in").is_visible()
    page.select_option("#job-type", "demo")
    assert not page.locator("#type-stand-in").is_visible()


def test_descriptions_show_their_inline_code_not_backticks(page: Page) -> None:
    page.select_option("#job-type", "generate_personas")
    description = page.locator("#type-description")
    assert "`" not in description.inner_text()
    assert "count" in description.locator("code").all_inner_texts()


def test_a_30_persona_batch_fills_its_card_one_by_one(page: Page) -> None:
    job_id = _submit(page, "generate_personas", count=30)
    card = _card(page, job_id)
    assert page.locator(f"{card} .stand-in").is_visible()
    page.wait_for_selector(f"{card} .status.completed", timeout=60_000)
    counts = page.evaluate(f"window.painted[{json.dumps(job_id)}]")
    intermediate = sorted({n for n in counts if 0 < n < 30})
    assert len(intermediate) >= 3, counts
    assert page.locator(f"{card} .item").count() == 30
    parts = page.evaluate(f"fetch('/jobs?parent={job_id}').then((r) => r.json()).then((b) => b.jobs.map((j) => j.id))")
    assert len(parts) == 3 and not [p for p in parts if page.locator(f'.job[data-job-id="{p}"]').count()], \
        "a batch's parts have no cards of their own"


def test_a_finished_card_shows_how_long_it_ran_and_its_result_to_copy(page: Page) -> None:
    job_id = _submit(page, "demo", steps=3, interval_ms=300)
    card = _card(page, job_id)
    page.wait_for_selector(f"{card} .status.completed")
    assert page.locator(f"{card} .took").inner_text().startswith("Ran 0.")  # two waits of 0.3 s
    result = page.locator(f"{card} .result")
    assert result.is_visible() and result.get_attribute("open") is not None  # small: shown unfolded
    assert json.loads(page.locator(f"{card} .result pre.json").inner_text()) == {"steps": 3}
    page.click(f"{card} .result button.copy")
    page.wait_for_function(f"() => document.querySelector('{card} .result button.copy').textContent === 'Copied'")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == {"steps": 3}


def test_a_big_result_starts_folded(page: Page) -> None:
    job_id = _submit(page, "generate_personas", count=10)
    card = _card(page, job_id)
    page.wait_for_selector(f"{card} .status.completed", timeout=60_000)
    assert page.locator(f"{card} .result").get_attribute("open") is None
    assert page.locator(f"{card} .usage").inner_text().endswith("tokens (1 call).")  # (no price: no cost)
    assert "KiB" in page.locator(f"{card} .result .size").inner_text()
    page.click(f"{card} .result summary")
    assert len(json.loads(page.locator(f"{card} .result pre.json").inner_text())["personas"]) == 10


def test_a_failed_card_shows_the_error_code_and_message(page: Page) -> None:
    job_id = _submit(page, "demo", steps=3, interval_ms=0, fail_at=2)
    card = _card(page, job_id)
    page.wait_for_selector(f"{card} .status.failed")
    error = page.locator(f"{card} .error")
    assert error.locator("code").inner_text() == "job_error"
    assert "failing at step 2 on purpose (fail_at)" in error.inner_text()
    assert not page.locator(f"{card} .result").is_visible()
