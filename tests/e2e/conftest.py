from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.harness import RedisServer, Stack, running_stack

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium through playwright (never a downloaded browser). Module-scoped: playwright's sync
    API keeps an event loop running while it is open, which would break `asyncio.run` in later tests."""
    if not CHROMIUM.exists():
        raise RuntimeError("Debian's chromium is not installed; `make test` installs it (scripts/system-packages)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared API and two workers; tests that need the workers to themselves start their own."""
    with running_stack(redis_server, tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture
def make_stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[object]:
    """Start a private stack: `make_stack(workers=1, JOBCAST_X="...")`; stopped after the test."""
    with_stacks: list[object] = []

    def make(workers: int = 1, redis: RedisServer | None = None, **env: str) -> Stack:
        cm = running_stack(redis or redis_server, tmp_path / f"stack{len(with_stacks)}", workers, **env)
        s = cm.__enter__()
        with_stacks.append(cm)
        return s

    yield make
    for cm in reversed(with_stacks):
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A page on the shared stack; the test fails if the page throws."""
    context = browser.new_context(base_url=stack.url, viewport={"width": 1000, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], f"the page threw: {errors}"
