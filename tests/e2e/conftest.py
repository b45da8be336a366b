from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RedisServer, Stack, running_stack


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
