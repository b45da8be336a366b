"""`jobcast dev` runs the whole system from nothing: a private Redis (or an in-memory one), API, workers, and
a stand-in model for the LLM types when none is configured."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import read_stream, running_dev, wait_for


@pytest.mark.parametrize("redis", ["redis-server", "in-memory"])
def test_dev_runs_a_job_end_to_end(tmp_path: Path, redis: str) -> None:
    env = {"PATH": str(tmp_path)} if redis == "in-memory" else {}  # no redis-server to be found
    with running_dev(tmp_path, **env) as dev:
        with httpx.Client(base_url=dev.url, timeout=5) as c:
            wait_for(lambda: c.get("/readyz").json()["workers"] == 2, 10, "both workers to be up")
            job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 4, "interval_ms": 20}}).json()
        s = read_stream(dev.url, job["links"]["events"])
        assert s.events[-1].event == "completed" and s.events[-1].data["result"] == {"steps": 4}
        text = dev.output()
        assert f"jobcast is running at {dev.url}/" in text
        assert ("in-memory Redis" in text) == (redis == "in-memory")
        if redis == "redis-server":  # the dashboard is never open without credentials: dev makes up a pair
            found = re.search(r"rq-dashboard: \S+ \(user '([^']+)', password '([^']+)'\)", text)
            assert found, text
            with httpx.Client(base_url=dev.url, timeout=5) as c:
                assert c.get("/dashboard/").status_code == 401
                assert c.get("/dashboard/", auth=(found[1], found[2])).status_code == 200


LLM_TYPES = ["chat", "generate_backlog", "generate_lore", "generate_personas"]


def test_without_a_model_dev_serves_the_llm_types_from_a_stand_in_and_says_so(tmp_path: Path) -> None:
    with running_dev(tmp_path) as dev:
        with httpx.Client(base_url=dev.url, timeout=5) as c:
            types = {t["name"]: t for t in c.get("/job-types").json()["job_types"]}
            chat = c.post("/jobs", json={"type": "chat", "payload": {"messages": [{"role": "user", "content": "hi"}]}})
        assert all(t["available"] for t in types.values())
        assert sorted(n for n, t in types.items() if t["stand_in"]) == LLM_TYPES
        assert all("STAND-IN model with made-up answers" in types[n]["description"] for n in LLM_TYPES)
        assert "STAND-IN" not in types["demo"]["description"]
        assert f"STAND-IN MODEL: the LLM job types ({', '.join(LLM_TYPES)}) run on a stand-in" in dev.output()
        s = read_stream(dev.url, chat.json()["links"]["events"], headers={"Last-Event-ID": "0"})
    deltas = [e.data["text"] for e in s.events if e.event == "output"]
    assert s.events[-1].event == "completed" and len(deltas) > 20  # streamed a word at a time
    assert "".join(deltas) == s.events[-1].data["result"]["text"]


def test_a_configured_model_wins_over_the_stand_in(tmp_path: Path) -> None:
    # (a model server nobody listens on: the point is only what dev offers)
    with running_dev(tmp_path, JOBCAST_MODEL="gpt-x", OPENAI_BASE_URL="http://127.0.0.1:9/v1") as dev:
        with httpx.Client(base_url=dev.url, timeout=5) as c:
            types = c.get("/job-types").json()["job_types"]
    assert not any(t["stand_in"] for t in types) and all(t["available"] for t in types)
    assert "STAND-IN" not in dev.output()
