"""The LLM job types against a real HTTP server speaking the chat-completions protocol (jobcast.llm.fake),
reached by the real `openai` client through OPENAI_BASE_URL, with scripted answers and recorded requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from jobcast import Client
from tests.e2e.harness import ROOT, RedisServer, Stack, Stream, free_port, read_stream, running_stack, wait_for
from tests.e2e.test_python_client_and_cli import jobcast_cli


class FakeLLM:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=5)

    def script(self, *answers: dict) -> None:
        self.http.post("/_script", json=list(answers)).raise_for_status()

    def requests(self) -> list[dict]:
        return self.http.get("/_requests").json()

    def reset(self) -> None:
        self.http.post("/_reset").raise_for_status()


@pytest.fixture(scope="module")
def fake_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLLM]:
    port = free_port()
    code = ("import uvicorn; from jobcast.llm.fake import create_fake_llm; "
            "uvicorn.run(create_fake_llm(first_token_ms=0, tokens_per_s=0), host='127.0.0.1', "
            f"port={port}, log_level='warning')")
    log = tmp_path_factory.mktemp("fake_llm") / "fake_llm.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    fake = FakeLLM(f"http://127.0.0.1:{port}")
    wait_for(lambda: fake.http.get("/_requests").status_code == 200, 20, "the stand-in model server")
    yield fake
    fake.http.close()
    proc.terminate()
    proc.wait()


@pytest.fixture(scope="module")
def llm_stack(redis_server: RedisServer, fake_llm: FakeLLM,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"OPENAI_BASE_URL": f"{fake_llm.url}/v1", "JOBCAST_MODEL": "stand-in", "OPENAI_API_KEY": "test-key"}
    with running_stack(redis_server, tmp_path_factory.mktemp("llm"), workers=2, **env) as st:
        yield st


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> None:
    if "fake_llm" in request.fixturenames:
        request.getfixturevalue("fake_llm").reset()


GO = {"role": "user", "content": "go"}


def _run(st: Stack, type_: str, payload: dict, **extra: object) -> Stream:
    with st.client() as c:
        r = c.post("/jobs", json={"type": type_, "payload": payload, **extra})
    assert r.status_code == 202, r.text
    return read_stream(st.url, r.json()["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=60)


def _progress(s: Stream) -> list[float]:
    return [e.data["progress"] for e in s.events if e.event == "state" and e.data["status"] == "running"]


def test_25_personas_run_as_a_batch_of_three_parts_and_come_back_in_order(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    s = _run(llm_stack, "generate_personas", {"count": 25})
    end = s.events[-1]
    assert end.event == "completed", end.data
    names = [p["name"] for p in end.data["result"]["personas"]]
    assert names == [f"Persona {i}" for i in range(1, 26)]
    items = [(e.data["part"], e.data["item"]["name"]) for e in s.events if e.event == "output"]
    assert sorted(name for _, name in items) == sorted(names), "every persona once, as it arrived"
    assert all(name in names[10 * part:10 * part + 10] for part, name in items), "each with its part"
    batches = sorted(r["body"]["messages"][0]["content"].split("]")[0] for r in fake_llm.requests())
    assert batches == ["[jobcast:personas start=1 count=10", "[jobcast:personas start=11 count=10",
                       "[jobcast:personas start=21 count=5"]
    progress = _progress(s)
    assert progress == sorted(progress) and progress[-1] == 100
    assert {"1/3 parts done", "2/3 parts done"} <= {e.data["message"] for e in s.events if e.event == "state"}
    assert end.data["parts"]["completed"] == 3


def test_personas_arrive_one_by_one_while_the_model_is_still_writing(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"delay_ms": 15})  # about 160 words: the answer takes some 2.5 s to write
    with llm_stack.client() as c:
        job = c.post("/jobs", json={"type": "generate_personas", "payload": {"count": 10}}).json()
    arrivals: list[float] = []

    def note(stream: Stream) -> bool:
        if stream.events and stream.events[-1].event == "output":
            arrivals.append(time.time())
        return False

    s = read_stream(llm_stack.url, job["links"]["events"], stop=note, timeout=60)
    assert s.events[-1].event == "completed" and len(arrivals) == 10
    written = fake_llm.requests()[0]["stream_ended"]["at"]
    # the first persona is on the client while the model has most of its answer still to write
    assert arrivals[0] < written - 1.0, (arrivals, written)
    assert len({round(t, 1) for t in arrivals}) >= 5  # spread out, not all at the end


def test_lore_aggregates_progress_over_every_step_of_every_piece(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    s = _run(llm_stack, "generate_lore", {"kind": "characters", "theme": "a drowned city", "count": 2})
    assert s.events[-1].event == "completed"
    assert len(fake_llm.requests()) == 12  # 2 characters x 6 steps
    pieces = s.events[-1].data["result"]["pieces"]
    assert len(pieces) == 2 and list(pieces[0]) == ["name", "appearance", "backstory", "traits", "skills", "stats"]
    progress = _progress(s)
    assert progress == sorted(progress) and len(set(progress)) >= 6
    messages = {e.data["message"] for e in s.events if e.event == "state"}
    assert "Generated backstory (2/2)" in messages or "Generated backstory (1/2)" in messages
    assert len([e for e in s.events if e.event == "output"]) == 2


def test_backlog_moves_through_epic_stories_and_tasks_in_their_ranges(llm_stack: Stack) -> None:
    s = _run(llm_stack, "generate_backlog", {"brief": "An app to swap houseplants", "max_stories": 3})
    end = s.events[-1]
    assert end.event == "completed" and len(end.data["result"]["stories"]) == 3
    assert len(end.data["result"]["tasks"]) == 6
    ranges = {"epic": (0, 30), "stories": (30, 60), "parts": (60, 100)}  # (the tasks: a part per story)
    for e in s.events:
        if e.event == "state" and e.data["stage"] in ranges:
            lo, hi = ranges[e.data["stage"]]
            assert lo <= e.data["progress"] <= hi, e.data
    kinds = [e.data["item"]["kind"] for e in s.events if e.event == "output"]
    assert kinds == ["epic", "story", "story", "story", "task", "task", "task", "task", "task", "task"]


def test_chat_deltas_reassemble_to_the_exact_reply(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    reply = "Bonjour ! Voilà une réponse — avec des “guillemets”,\nun saut de ligne et 42 mots… ✓"
    fake_llm.script({"content": reply, "delay_ms": 5})
    s = _run(llm_stack, "chat", {"messages": [{"role": "user", "content": "Salut"}]})
    deltas = "".join(e.data["text"] for e in s.events if e.event == "output")
    assert deltas == reply
    assert s.events[-1].data["result"]["text"] == reply and s.events[-1].data["output"]["text"] == reply
    assert s.events[-1].data["result"]["usage"]["total_tokens"] > 0
    assert fake_llm.requests()[0]["body"]["messages"] == [{"role": "user", "content": "Salut"}]


def test_cancel_mid_stream_closes_the_model_request_within_a_second(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"content": " ".join(f"word{i}" for i in range(200)), "delay_ms": 100})
    with llm_stack.client() as c:
        job = c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json()
    read_stream(llm_stack.url, job["links"]["events"], stop=lambda s: any(e.event == "output" for e in s.events))
    with llm_stack.client() as c:
        t_cancel = time.time()
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 202
    end = read_stream(llm_stack.url, job["links"]["events"]).events[-1]
    assert end.event == "canceled"
    ended = wait_for(lambda: fake_llm.requests()[0]["stream_ended"], 5, "the model stream to end")
    print(f"model stream closed {ended['at'] - t_cancel:.2f}s after the cancel request")
    assert ended["how"] == "client closed" and ended["at"] - t_cancel < 1


def test_a_429_is_retried_after_retry_after_then_succeeds(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"status": 429, "headers": {"Retry-After": "1"}, "message": "slow down"})
    s = _run(llm_stack, "chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert s.events[-1].event == "completed" and s.events[-1].data["attempt"] == 1
    first, second = fake_llm.requests()
    assert second["at"] - first["at"] >= 0.9


def test_bad_json_is_repaired_once_then_fails_clearly(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"content": "Sure! Here are your personas: not json"})
    s = _run(llm_stack, "generate_personas", {"count": 3})
    assert s.events[-1].event == "completed" and len(s.events[-1].data["result"]["personas"]) == 3
    repair = fake_llm.requests()[1]["body"]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "Sure! Here are your personas: not json"}
    assert "corrected JSON" in repair[-1]["content"]

    fake_llm.reset()
    fake_llm.script({"content": "nope"}, {"content": "still nope"})
    s = _run(llm_stack, "generate_personas", {"count": 3})  # 3 attempts allowed, but another cannot help
    end = s.events[-1]
    assert end.event == "failed" and end.data["error"]["code"] == "bad_model_output" and end.data["attempt"] == 1
    assert "even after a repair request" in end.data["error"]["message"]
    assert len(fake_llm.requests()) == 2


def test_without_a_model_the_llm_types_are_unavailable_and_refused(stack: Stack) -> None:
    with stack.client() as c:
        types = {t["name"]: t for t in c.get("/job-types").json()["job_types"]}
        for name in ("generate_personas", "generate_lore", "generate_backlog", "chat"):
            assert types[name]["available"] is False and "JOBCAST_MODEL" in types[name]["unavailable_reason"]
        assert types["demo"]["available"] is True
        r = c.post("/jobs", json={"type": "chat", "payload": {"messages": [{"role": "user", "content": "hi"}]}})
    assert r.status_code == 422 and "JOBCAST_MODEL" in r.json()["error"]["message"]


def _start_chat(st: Stack, fake: FakeLLM) -> dict:
    with st.client() as c:
        job = c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json()
    wait_for(lambda: fake.requests(), 10, "the model request")
    return job


def _cancel(st: Stack, job: dict) -> float:
    with st.client() as c:
        t = time.time()
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 202
    return t


def test_cancel_while_the_model_is_silent_hangs_up_within_a_second(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"content": "a b c d", "delay_ms": 8000})  # a long wait before the first token
    job = _start_chat(llm_stack, fake_llm)
    t_cancel = _cancel(llm_stack, job)
    end = read_stream(llm_stack.url, job["links"]["events"]).events[-1]
    ended = wait_for(lambda: fake_llm.requests()[0]["stream_ended"], 5, "the model stream to end")
    print(f"silent model stream closed {ended['at'] - t_cancel:.2f}s after the cancel request")
    assert end.event == "canceled" and ended["how"] == "client closed" and ended["at"] - t_cancel < 1


def test_cancel_during_a_retry_wait_ends_the_job_without_asking_again(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"status": 429, "headers": {"Retry-After": "30"}})
    job = _start_chat(llm_stack, fake_llm)
    t_cancel = _cancel(llm_stack, job)
    end = read_stream(llm_stack.url, job["links"]["events"]).events[-1]
    assert end.event == "canceled" and time.time() - t_cancel < 2
    assert len(fake_llm.requests()) == 1
    # The 429 paused every call of the stack's workers for 30 s (shared): not the next test's business.
    llm_stack.redis.r.delete(f"{llm_stack.prefix}:model:{{stand-in}}:pause")


def test_a_5xx_is_tried_again(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"status": 503})
    s = _run(llm_stack, "chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert s.events[-1].event == "completed" and len(fake_llm.requests()) == 2


def test_a_refused_request_fails_at_once_with_a_hint_and_no_server_text(llm_stack: Stack, fake_llm: FakeLLM) -> None:
    fake_llm.script({"status": 401, "message": "Incorrect API key provided: sk-...abcd"})
    end = _run(llm_stack, "chat", {"messages": [{"role": "user", "content": "hi"}]}).events[-1]
    assert end.event == "failed" and end.data["attempt"] == 1 and end.data["error"]["code"] == "model_error"
    assert "OPENAI_API_KEY" in end.data["error"]["message"] and "sk-" not in end.data["error"]["message"]
    assert len(fake_llm.requests()) == 1


def test_60_personas_run_as_six_parts_on_four_workers_at_once(make_stack: Any, fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=4, JOBCAST_MAX_RUNNING_PER_OWNER="0", OPENAI_BASE_URL=f"{fake_llm.url}/v1",
                           JOBCAST_MODEL="stand-in", OPENAI_API_KEY="test-key")
    fake_llm.script(*[{"delay_ms": 10}] * 6)  # each call writes for about 1.6 s
    s = _run(st, "generate_personas", {"count": 60})
    end = s.events[-1]
    assert end.event == "completed", end.data
    assert [p["name"] for p in end.data["result"]["personas"]] == [f"Persona {i}" for i in range(1, 61)]
    items = [e.data["item"]["name"] for e in s.events if e.event == "output"]
    assert sorted(items) == sorted(f"Persona {i}" for i in range(1, 61)), "every persona item once"
    progress = [e.data["progress"] for e in s.events if e.event in ("state", "completed")]
    assert progress == sorted(progress), "progress went down"
    assert {f"{k}/6 parts done" for k in range(1, 6)} <= {e.data["message"] for e in s.events if e.event == "state"}
    with st.client() as c:
        parts = c.get("/jobs", params={"parent": end.data["id"]}).json()["jobs"]
    spans = [(datetime.fromisoformat(p["started_at"]), datetime.fromisoformat(p["ended_at"])) for p in parts]
    at_once = max(sum(1 for start, stop in spans if start <= t < stop) for t, _ in spans)
    print(f"6 parts of 10 personas: {at_once} ran at once on 4 workers")
    assert len(parts) == 6 and at_once >= 3, spans


def test_usage_is_what_the_model_reported_summed_over_a_batch_and_priced(make_stack: Any, fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=2, JOBCAST_MAX_RUNNING_PER_OWNER="0", OPENAI_BASE_URL=f"{fake_llm.url}/v1",
                           JOBCAST_MODEL="stand-in", OPENAI_API_KEY="test-key",
                           JOBCAST_MODEL_PRICES="stand-in=2/8,other=1/1")
    fake_llm.script({"content": "one two three four five"})
    chat_stream = _run(st, "chat", {"messages": [GO]})
    chat = chat_stream.events[-1].data
    live = [e.data["usage"] for e in chat_stream.events if e.event == "state" and "usage" in e.data]
    assert live == [chat["usage"]], "the usage came in a state event as soon as the call ended, before the end"
    # the stand-in reports 10 prompt tokens and a completion token a word
    assert chat["usage"] == {"calls": 1, "prompt_tokens": 10, "completion_tokens": 5, "estimated": False,
                             "cost_usd": round((10 * 2 + 5 * 8) / 1e6, 6),
                             "attempt": {"calls": 1, "prompt_tokens": 10, "completion_tokens": 5, "estimated": False,
                                         "cost_usd": round((10 * 2 + 5 * 8) / 1e6, 6)}}
    assert chat["result"]["usage"]["completion_tokens"] == 5
    fake_llm.script({"content": "one two three four five"})
    cli = jobcast_cli(st, "submit", "chat", "--payload", '{"messages": [{"role": "user", "content": "go"}]}', "--watch")
    assert cli.returncode == 0 and f"(15 tokens in 1 call, ${(10 * 2 + 5 * 8) / 1e6:.4f})" in cli.stderr, cli.stderr
    batch_stream = _run(st, "generate_personas", {"count": 25})
    batch = batch_stream.events[-1].data
    calls_seen = [e.data["usage"]["calls"] for e in batch_stream.events if e.event == "state" and "usage" in e.data]
    assert calls_seen[-1] == 3 and calls_seen == sorted(calls_seen), calls_seen  # (live, as each part's call ended)
    with st.client() as c:
        parts = c.get("/jobs", params={"parent": batch["id"]}).json()["jobs"]
        metrics = c.get("/metrics").text
    assert [p["usage"]["calls"] for p in parts] == [1, 1, 1]
    for kind in ("calls", "prompt_tokens", "completion_tokens"):
        assert batch["usage"][kind] == sum(p["usage"][kind] for p in parts), kind
    assert batch["usage"]["cost_usd"] == pytest.approx(sum(p["usage"]["cost_usd"] for p in parts), abs=2e-6)
    completion = sum(p["usage"]["completion_tokens"] for p in parts)
    assert f'jobcast_model_tokens_total{{kind="completion",model="stand-in",type="generate_personas"}} ' \
           f'{float(completion)}' in metrics, [line for line in metrics.splitlines() if "model_tokens" in line]


def _most_at_once(requests: list[dict]) -> int:
    """The most requests the stand-in had in flight at one time, from when each came and its stream ended."""
    spans = [(r["at"], r["stream_ended"]["at"]) for r in requests]
    return max(sum(1 for start, end in spans if start <= t < end) for t, _ in spans)


def test_four_workers_never_send_more_than_the_models_concurrency(make_stack: Any, fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=4, JOBCAST_MAX_RUNNING_PER_OWNER="0", OPENAI_BASE_URL=f"{fake_llm.url}/v1",
                           JOBCAST_MODEL="stand-in", OPENAI_API_KEY="test-key", JOBCAST_MODEL_CONCURRENCY="3")
    fake_llm.script(*[{"delay_ms": 8}] * 12)  # each call streams for about a second
    with st.client() as c:
        jobs = [c.post("/jobs", json={"type": "generate_personas", "payload": {"count": 60}}).json()]
        jobs += [c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json() for _ in range(3)]
    waiting = []
    for job in jobs:
        assert read_stream(st.url, job["links"]["events"], timeout=90).events[-1].event == "completed"
    with st.client() as c:
        parts = c.get("/jobs", params={"parent": jobs[0]["id"]}).json()["jobs"]
    for job in jobs[1:] + parts:  # (each call's own job says it waits: a part, or a chat)
        s = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=30)
        waiting += [(e, s.events[i - 1]) for i, e in enumerate(s.events)
                    if e.event == "state" and e.data["message"].startswith("Waiting for model")]
    requests = wait_for(lambda: (r := fake_llm.requests()) and all(x["stream_ended"] for x in r) and r, 10,
                        "every request to end")
    most = _most_at_once(requests)
    print(f"{len(requests)} requests, at most {most} at once at the stand-in (concurrency 3, 4 workers)")
    assert len(requests) == 9 and most == 3, most  # (never more; and all 3 used while work was waiting)
    assert waiting, "no call said it was waiting for the model, though 9 calls shared 3"
    with st.client() as c:
        metrics = c.get("/metrics").text
    assert 'jobcast_model_capacity_wait_seconds_count{model="stand-in"} 9.0' in metrics
    assert 'jobcast_model_calls_in_flight{model="stand-in"} 0.0' in metrics  # (all ended, all given back)
    assert all(e.data["progress"] == before.data["progress"] for e, before in waiting), "the wait moved progress"


def test_one_owners_batch_does_not_keep_another_owners_chat_waiting_behind_it(make_stack: Any,
                                                                             fake_llm: FakeLLM) -> None:
    alice, bob = "alice-model-key-0123456789", "bob-model-key-0123456789ab"
    # The owner limit (3, the default) keeps workers free for others; the model's turns interleave the owners.
    st: Stack = make_stack(workers=4, JOBCAST_MAX_RUNNING_PER_OWNER="3", OPENAI_BASE_URL=f"{fake_llm.url}/v1",
                           JOBCAST_MODEL="stand-in", OPENAI_API_KEY="test-key", JOBCAST_MODEL_CONCURRENCY="1",
                           JOBCAST_API_KEYS=f"{alice}:alice,{bob}:bob", JOBCAST_SECRET="s" * 32)
    fake_llm.script(*[{"delay_ms": 3}] * 12)
    with st.client(headers={"Authorization": f"Bearer {alice}"}) as c:
        batch = c.post("/jobs", json={"type": "generate_personas", "payload": {"count": 80}}).json()
        wait_for(lambda: len(fake_llm.requests()) >= 1, 30, "alice's first call")
    with st.client(headers={"Authorization": f"Bearer {bob}"}) as c:
        chat = c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json()
    end = read_stream(st.url, chat["links"]["events"], timeout=90).events[-1]
    assert end.event == "completed"
    asked = [r["body"]["messages"][0]["content"] for r in fake_llm.requests()]
    place = next(i for i, content in enumerate(asked) if content == "go")
    print(f"bob's chat was call {place + 1} of {len(asked)} so far (alice's batch has 8 calls)")
    # Alice's 3 running parts are in line before bob comes (one call in flight, two waiting): first come,
    # first served would make his call the 4th at best, and her later parts' calls, queued behind, take turns too.
    assert place <= 2, asked
    assert read_stream(st.url, batch["links"]["events"], timeout=90).events[-1].event == "completed"


def test_a_worker_sigkilled_mid_call_gives_its_model_capacity_back_when_the_lease_ends(
        make_stack: Any, fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=2, OPENAI_BASE_URL=f"{fake_llm.url}/v1", JOBCAST_MODEL="stand-in",
                           OPENAI_API_KEY="test-key", JOBCAST_MODEL_CONCURRENCY="1", JOBCAST_MODEL_LEASE_MS="3000")
    fake_llm.script({"content": " ".join(f"w{i}" for i in range(300)), "delay_ms": 100})  # 30 s of answer
    with st.client() as c:
        first = c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json()
        wait_for(lambda: len(fake_llm.requests()) == 1, 30, "the first call")
        worker = st.redis.r.hget(f"{st.prefix}:job:{{{first['id']}}}", "worker").decode()
        os.killpg(os.getpgid(int(worker.rsplit(":", 1)[1])), signal.SIGKILL)  # its work horse and worker
        killed = time.time()
        second = c.post("/jobs", json={"type": "chat", "payload": {"messages": [{"role": "user", "content": "hi"}]}})
    assert read_stream(st.url, second.json()["links"]["events"], timeout=60).events[-1].event == "completed"
    came = fake_llm.requests()[1]["at"] - killed
    print(f"the second call reached the model {came:.1f}s after the first one's worker was killed (lease 3s)")
    assert came < 3 + 2, came  # the dead worker's lease ran out; without it the second would wait for good


def test_a_429_with_retry_after_makes_every_workers_next_call_wait_it_out(make_stack: Any, fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=2, OPENAI_BASE_URL=f"{fake_llm.url}/v1", JOBCAST_MODEL="stand-in",
                           OPENAI_API_KEY="test-key")
    fake_llm.script({"status": 429, "headers": {"Retry-After": "2"}, "message": "slow down"})
    with st.client() as c:
        first = c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json()
        wait_for(lambda: len(fake_llm.requests()) == 1, 30, "the first call (answered 429)")
        second = c.post("/jobs", json={"type": "chat", "payload": {"messages": [{"role": "user", "content": "hi"}]}})
        s = read_stream(st.url, second.json()["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=60)
    assert s.events[-1].event == "completed"
    assert any(e.data["message"] == "Waiting for model capacity (the model server asked to slow down)"
               for e in s.events if e.event == "state")
    assert read_stream(st.url, first["links"]["events"], timeout=60).events[-1].event == "completed"
    refused, *rest = fake_llm.requests()
    waited = [r["at"] - refused["at"] for r in rest]
    print(f"after the 429 (Retry-After: 2), the next calls came {', '.join(f'{w:.2f}s' for w in waited)} later")
    assert len(rest) == 2 and min(waited) >= 1.9, waited  # the other job's call too, on the other worker


def _most_in_a_minute(times: list[float]) -> int:
    """The most of `times` (s) in any 60 s window."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t - start < 60) for i, start in enumerate(times))


def test_with_an_rpm_of_60_the_model_never_sees_more_than_60_requests_in_any_minute(make_stack: Any,
                                                                                 fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=4, JOBCAST_MAX_RUNNING_PER_OWNER="0", OPENAI_BASE_URL=f"{fake_llm.url}/v1",
                           JOBCAST_MODEL="stand-in", OPENAI_API_KEY="test-key", JOBCAST_MODEL_RPM="60")
    with st.client() as c:
        jobs = [c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}}).json() for _ in range(72)]
        wait_for(lambda: len(fake_llm.requests()) >= 60, 60, "the first minute's 60 requests")
        waiting = wait_for(lambda: [j for j in jobs if c.get(f"/jobs/{j['id']}").json()["message"]
                                    == "Waiting for model capacity (requests per minute)"], 10,
                           "a chat saying it waits for the minute's requests")
        canceled_at = time.time()  # a cancel while it waits ends it at once, the minute still full
        assert c.post(f"/jobs/{waiting[0]['id']}/cancel").status_code == 202
        wait_for(lambda: c.get(f"/jobs/{waiting[0]['id']}").json()["status"] == "canceled", 5, "the cancel")
        print(f"a chat waiting for the minute was canceled in {time.time() - canceled_at:.2f}s")
    ends = [read_stream(st.url, j["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=120).events[-1]
            for j in jobs]
    assert sorted(e.event for e in ends).count("completed") == 71, [e.event for e in ends]
    times = [r["at"] for r in fake_llm.requests()]
    first_minute = sum(1 for t in times if t - min(times) < 60)
    print(f"{len(times)} requests over {max(times) - min(times):.1f}s; at most {_most_in_a_minute(times)} in any "
          f"60 s; {first_minute} in the first minute, while work waited")
    assert len(times) == 71 and _most_in_a_minute(times) <= 60 and first_minute >= 50
    with st.client() as c:
        metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in c.get("/metrics").text.splitlines()
                   if line.startswith("jobcast_model_minute_")}
    last_minute = sum(1 for t in times if time.time() - t < 60)
    print(f"/metrics: {metrics}; the stand-in saw {last_minute} requests in the last 60 s")
    # (the window is 61 s, on Redis's clock: it may count a few more than the stand-in's last 60 s)
    assert last_minute <= metrics['jobcast_model_minute_requests{model="stand-in"}'] <= 60
    # each chat reserved 1 token ("go", no max_tokens) and used what the stand-in reported: 10 and a word each
    assert metrics['jobcast_model_minute_tokens{model="stand-in"}'] > 20 * metrics[
        'jobcast_model_minute_requests{model="stand-in"}']


def test_tokens_per_minute_hold_a_call_back_until_an_earlier_ones_real_usage_makes_room(make_stack: Any,
                                                                                       fake_llm: FakeLLM) -> None:
    # A chat reserves its prompt (1 token for "go") and max_tokens (200): two fit in 500 a minute, a third
    # waits; the stand-in reports 10 + 5 tokens, so the first to end makes room at once, not after a minute.
    st: Stack = make_stack(workers=3, JOBCAST_MAX_RUNNING_PER_OWNER="0", OPENAI_BASE_URL=f"{fake_llm.url}/v1",
                           JOBCAST_MODEL="stand-in", OPENAI_API_KEY="test-key", JOBCAST_MODEL_TPM="500")
    fake_llm.script(*[{"content": "one two three four five", "delay_ms": 300}] * 3)  # streams of 1.5 s
    chat = {"type": "chat", "payload": {"messages": [GO], "max_tokens": 200}}
    with st.client() as c:
        first = [c.post("/jobs", json=chat).json() for _ in range(2)]
        wait_for(lambda: len(fake_llm.requests()) == 2, 30, "the first two calls")
        third = c.post("/jobs", json=chat).json()
        s = read_stream(st.url, third["links"]["events"], headers={"Last-Event-ID": "0"}, timeout=30)
        big = c.post("/jobs", json={**chat, "payload": {"messages": [GO], "max_tokens": 600}}).json()
        too_big = read_stream(st.url, big["links"]["events"], timeout=30).events[-1]
    assert s.events[-1].event == "completed"
    said = [e.data for e in s.events if e.event == "state" and e.data["message"].startswith("Waiting for model")]
    assert said and said[0]["message"] == "Waiting for model capacity (tokens per minute)", said
    assert all(d["progress"] == said[0]["progress"] and d["stage"] == said[0]["stage"] for d in said)
    requests = fake_llm.requests()
    ended = min(r["stream_ended"]["at"] for r in requests[:2])
    print(f"the third call came {requests[2]['at'] - ended:.2f}s after the first stream ended")
    assert ended - 0.1 <= requests[2]["at"] < ended + 5, "it went before room was made, or waited the minute"
    assert too_big.event == "failed" and too_big.data["error"]["code"] == "model_unavailable", too_big.data
    assert "JOBCAST_MODEL_TPM=500" in too_big.data["error"]["message"] and len(fake_llm.requests()) == 3
    for job in first:
        assert read_stream(st.url, job["links"]["events"], timeout=30).events[-1].event == "completed"


def test_a_budget_stops_a_batch_before_the_call_that_would_pass_it(make_stack: Any, fake_llm: FakeLLM) -> None:
    st: Stack = make_stack(workers=1, OPENAI_BASE_URL=f"{fake_llm.url}/v1", JOBCAST_MODEL="stand-in",
                           OPENAI_API_KEY="test-key")
    one = _run(st, "generate_personas", {"count": 10}).events[-1].data["usage"]  # what one call of 10 takes
    per_call = one["prompt_tokens"] + one["completion_tokens"]
    budget = 2 * per_call + 20  # two calls of 10, and not the prompt of a third
    with Client(st.url) as jc:  # (the SDK's way to set it; POST /jobs takes it as it is)
        job = jc.submit("generate_personas", {"count": 30}, max_tokens_total=budget)
    s = read_stream(st.url, job.links.events, timeout=60)
    end = s.events[-1].data
    assert s.events[-1].event == "failed" and end["error"]["code"] == "budget_exceeded", end["error"]
    assert "would pass its batch's budget" in end["error"]["details"]["error"]["message"]
    assert len(fake_llm.requests()) == 1 + 2, "a third call was sent"
    assert end["usage"]["prompt_tokens"] + end["usage"]["completion_tokens"] == 2 * per_call <= budget
    assert len(end["output"]["items"]) == 20, "what was made before the budget ran out is kept"
    with st.client() as c:
        r = c.post("/jobs", json={"type": "chat", "payload": {"messages": [GO]}, "max_tokens_total": 0})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "max_tokens_total", r.text
    cli = jobcast_cli(st, "submit", "chat", "--payload", '{"messages": [{"role": "user", "content": "tell me '
                      'about the sea"}]}', "--max-tokens-total", "2", "--watch")  # (a prompt of about 6 tokens)
    assert cli.returncode == 1 and "budget_exceeded" in cli.stdout, (cli.stdout, cli.stderr)
