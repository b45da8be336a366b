"""The Python client (sync and async) and the `jobcast` client commands, against a real API and workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from typing import Any

import orjson
import pytest

from jobcast import ApiError, AsyncClient, Client, Job
from tests.e2e.harness import ROOT, Stack, wait_for


def jobcast_cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_"))}
    environ.update({"JOBCAST_URL": stack.url, "COLUMNS": "120", **env})
    return subprocess.run([sys.executable, "-m", "jobcast", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=60)


def test_client_submits_watches_and_gets_typed_results(stack: Stack) -> None:
    with Client(stack.url) as jc:
        job = jc.submit("demo", {"steps": 4, "interval_ms": 30, "emit_output": True}, tags={"project": "p-1"})
        assert isinstance(job, Job) and job.status == "queued" and job.tags == {"project": "p-1"}
        events = list(jc.watch(job))
        ids = [e.id for e in events]
        assert events[0].event == "snapshot" and ids == list(range(ids[0], ids[-1] + 1)), "each event once, in order"
        assert events[-1].event == "completed" and events[-1].job is not None
        assert events[-1].job.result == {"steps": 4}
        assert events[-1].job.output.items[-1] == {"step": 4, "of": 4}
        # Resume after an id: only what came after it.
        assert [e.id for e in jc.watch(job, last_event_id=3)] == list(range(4, ids[-1] + 1))
        assert jc.get(job.id).status == "completed"
        assert job.id in [j.id for j in jc.list(tags={"project": "p-1"}).jobs]
        assert "demo" in [t.name for t in jc.job_types()]


def test_client_resumes_a_dropped_stream_without_gaps(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1)
    with Client(stack.url) as jc:
        job = jc.submit("demo", {"steps": 30, "interval_ms": 60})
        seen: list[int] = []
        for event in jc.watch(job):
            seen.append(event.id)
            if len(seen) == 5:  # the API dies mid-stream and comes back
                stack.stop_api()
                stack.start_api()
        assert seen == list(range(seen[0], seen[-1] + 1))
        assert jc.get(job).status == "completed"


def test_client_falls_back_to_polling_when_streams_are_refused(make_stack: Any) -> None:
    # One stream per owner: the client holds one, so its own watch() is refused (429) and polls.
    stack: Stack = make_stack(workers=1, JOBCAST_MAX_STREAMS_PER_OWNER="1")
    with Client(stack.url, poll_interval_s=0.1) as jc:
        job = jc.submit("demo", {"steps": 10, "interval_ms": 100})
        stop = threading.Event()
        holder_client = Client(stack.url)

        def hold() -> None:
            for _ in holder_client.watch(job):
                if stop.is_set():
                    return

        holder = threading.Thread(target=hold)
        holder.start()
        wait_for(lambda: "jobcast_sse_streams_open 1.0" in jc._http.get("/metrics").text, 10, "the held stream")
        events = list(jc.watch(job))
        stop.set()
        holder.join(30)
        assert not holder.is_alive()
        holder_client.close()
    assert events[-1].event == "completed" and events[-1].data["progress"] == 100
    assert all(e.event in ("snapshot", "completed") for e in events), "polled: snapshots, then the end"
    assert [e.id for e in events] == sorted({e.id for e in events})


def test_client_errors_carry_the_contract_code(stack: Stack) -> None:
    with Client(stack.url) as jc:
        with pytest.raises(ApiError) as bad:
            jc.submit("no_such_type")
        assert bad.value.status == 422 and bad.value.code == "validation_error"
        with pytest.raises(ApiError) as missing:
            jc.get("0" * 32)
        assert missing.value.status == 404 and missing.value.code == "not_found"
    with Client("http://127.0.0.1:9") as nowhere, pytest.raises(ApiError) as down:
        nowhere.get("0" * 32)
    assert down.value.code == "unreachable" and "JOBCAST_URL" in down.value.message


def test_async_client_does_the_same(stack: Stack) -> None:
    async def main() -> tuple[Job, list[str], Job]:
        async with AsyncClient(stack.url) as jc:
            job = await jc.submit("demo", {"steps": 3, "interval_ms": 20})
            names = [e.event async for e in jc.watch(job)]
            canceled = await jc.submit("demo", {"steps": 100, "interval_ms": 100})
            await jc.cancel(canceled)
            return await jc.get(job.id), names, await jc.wait(canceled)

    done, names, canceled = asyncio.run(main())
    assert done.status == "completed" and names[0] == "snapshot" and names[-1] == "completed"
    assert canceled.status == "canceled"


def test_cli_submit_watch_exits_by_how_the_job_ended(stack: Stack) -> None:
    ok = jobcast_cli(stack, "submit", "demo", "--payload", '{"steps": 3, "interval_ms": 30}', "--watch")
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout)["result"] == {"steps": 3}
    assert "completed: Completed" in ok.stderr and "100%" in ok.stderr

    failed = jobcast_cli(stack, "submit", "demo", "--payload", '{"steps": 3, "fail_at": 2}', "--watch")
    assert failed.returncode == 1 and orjson.loads(failed.stdout)["error"]["code"] == "job_error", failed.stderr

    proc = subprocess.Popen([sys.executable, "-m", "jobcast", "submit", "demo", "--payload",
                             '{"steps": 200, "interval_ms": 100}', "--watch", "--tag", "cli=cancel-me"],
                            cwd=ROOT, env={**os.environ, "JOBCAST_URL": stack.url}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with Client(stack.url) as jc:
            job = wait_for(lambda: jc.list(tags={"cli": "cancel-me"}).jobs, 10, "the CLI's job")[0]
            wait_for(lambda: jc.get(job).status == "running", 10, "the CLI's job to run")
            jc.cancel(job)
        out, errs = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, errs
    assert orjson.loads(out)["status"] == "canceled"


def test_cli_status_jobs_cancel_retry(stack: Stack) -> None:
    submitted = jobcast_cli(stack, "submit", "demo", "--payload", '{"steps": 100, "interval_ms": 100}',
                            "--tag", "cli=table")
    assert submitted.returncode == 0
    job_id = orjson.loads(submitted.stdout)["id"]
    status = jobcast_cli(stack, "status", job_id)
    assert status.returncode == 0 and orjson.loads(status.stdout)["id"] == job_id
    table = jobcast_cli(stack, "jobs", "--tag", "cli=table")
    assert table.returncode == 0 and job_id in table.stdout and "demo" in table.stdout
    canceled = jobcast_cli(stack, "cancel", job_id)
    assert canceled.returncode == 0
    with Client(stack.url) as jc:
        wait_for(lambda: jc.get(job_id).status == "canceled", 10, "the cancel")
    retried = jobcast_cli(stack, "retry", job_id)
    assert retried.returncode == 0 and orjson.loads(retried.stdout)["attempt"] == 2
    jobcast_cli(stack, "cancel", job_id)


@pytest.mark.parametrize("args, says", [
    (["submit", "demo", "--payload", "{steps: 3}"], "--payload is not valid JSON"),
    (["submit", "demo", "--payload", "[1]"], "--payload must be a JSON object"),
    (["submit", "nope"], "unknown job type 'nope'"),
    (["submit", "demo", "--payload", '{"steps": 0}'], "payload.steps"),
    (["submit", "demo", "--tag", "novalue"], "--tag 'novalue' is not key=value"),
    (["status", "f" * 32], "404 not_found"),
    (["cancel", "f" * 32], "404 not_found"),
])
def test_cli_bad_input_says_what_is_wrong_and_exits_3(stack: Stack, args: list[str], says: str) -> None:
    with Client(stack.url) as jc:
        before = jc.list(limit=500).jobs
        run = jobcast_cli(stack, *args)
        assert run.returncode == 3 and says in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and run.stdout == ""
        assert [j.id for j in jc.list(limit=500).jobs] == [j.id for j in before], "nothing was created"


def test_cli_usage_errors_exit_3_not_2(stack: Stack) -> None:
    run = jobcast_cli(stack, "submit")  # no type
    assert run.returncode == 3 and "the following arguments are required: type" in run.stderr


def test_cli_shows_messages_as_they_are(stack: Stack) -> None:
    run = jobcast_cli(stack, "submit", "demo", "--payload", '{"steps": 0}')
    assert run.returncode == 3 and "[" not in run.stdout
    weird = jobcast_cli(stack, "jobs", "--type", "[bold]x[/bold]")
    assert weird.returncode == 0, weird.stderr


def test_watch_rides_out_an_api_outage(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=1)
    with Client(stack.url) as jc:
        job = jc.submit("demo", {"steps": 40, "interval_ms": 50})
        seen: list[int] = []
        for event in jc.watch(job):
            seen.append(event.id)
            if len(seen) == 3:  # the API is gone for a while (longer than a quick reconnect)
                stack.stop_api()
                threading.Timer(3.0, stack.start_api).start()
        assert seen == list(range(seen[0], seen[-1] + 1)) and jc.get(job).status == "completed"


def test_cli_without_a_server_says_where_it_looked(stack: Stack) -> None:
    run = jobcast_cli(stack, "status", "0" * 32, JOBCAST_URL="http://127.0.0.1:9")
    assert run.returncode == 3 and "could not reach jobcast at http://127.0.0.1:9" in run.stderr


def test_cli_watches_a_list_of_jobs_with_a_bar_each_and_exits_with_the_worst_end(stack: Stack) -> None:
    ok = stack.submit({"steps": 3, "interval_ms": 50})
    bad = stack.submit({"steps": 3, "interval_ms": 50, "fail_at": 2})
    run = jobcast_cli(stack, "watch", ok["id"], bad["id"])
    assert run.returncode == 1, run.stderr  # one of them failed
    assert ok["id"][:8] in run.stderr and bad["id"][:8] in run.stderr
    assert "2 jobs ended: 1 completed, 1 failed" in run.stderr
    both = jobcast_cli(stack, "watch", ok["id"], "--tag", "a=b")
    assert both.returncode == 3 and "not both" in both.stderr
