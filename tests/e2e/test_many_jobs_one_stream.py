"""`GET /events`: many of an owner's jobs over one stream, read off the wire, resumed across API processes and an
API restart with its opaque cursor: every job's events exactly once, jobs that join included."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.harness import Read, SetEvent, Stack, _spawn, free_port, read_set, wait_for

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdefgh"
KEYED = {"JOBCAST_API_KEYS": f"{ALICE}:alice,{BOB}:bob", "JOBCAST_SECRET": "s" * 32}


@contextmanager
def second_api(st: Stack) -> Iterator[str]:
    """Another API process over the same Redis and prefix; yields its URL."""
    port = free_port()
    proc = _spawn([sys.executable, "-m", "jobcast", "serve"], {**st.env(), "JOBCAST_PORT": str(port)},
                  st.workdir / "api-2.log")
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=1) as c:
            wait_for(lambda: c.get("/readyz").status_code == 200, 20, "the second API process")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _by_job(events: list[SetEvent]) -> dict[str, list[SetEvent]]:
    out: dict[str, list[SetEvent]] = {}
    for e in events:
        out.setdefault(e.data["job_id"], []).append(e)
    return out


def test_fifty_jobs_cut_off_three_times_arrive_exactly_once(make_stack) -> None:
    st: Stack = make_stack(workers=2)
    tag = {"batch": "b50"}
    first = [st.submit({"steps": 15, "interval_ms": 60, "emit_output": True}, tags=tag) for _ in range(25)]
    st.submit({"steps": 3, "interval_ms": 0}, tags={"batch": "other"})  # never on this stream
    path = "/events?tag=batch:b50"
    reads = [read_set(st.url, path, stop=60)]
    assert reads[0].status == 200 and reads[0].cursor is not None
    later = [st.submit({"steps": 10, "interval_ms": 60}, tags=tag) for _ in range(25)]  # while it is away
    with second_api(st) as other:
        reads.append(read_set(other, path, cursor=reads[-1].cursor, stop=150))  # the other API process
        st.stop_api()
        st.start_api()
        reads.append(read_set(st.url, path, cursor=reads[-1].cursor, stop=150))  # after a restart
        ids = {j["id"] for j in first + later}

        def all_ended() -> bool:
            with st.client() as c:
                return all(c.get(f"/jobs/{i}").json()["status"] == "completed" for i in ids)

        wait_for(all_ended, 60, "all 50 jobs to complete")
        reads.append(_read_until_quiet(other, path, reads[-1].cursor))
    events = [e for r in reads for e in r.events]
    assert all(e.id is None or e.id.startswith("c") for e in events)
    per_job = _by_job(events)
    assert set(per_job) == ids, "a job of another tag showed, or one of the set never did"
    with st.client() as c:
        last = {i: c.get(f"/jobs/{i}").json()["last_event_id"] for i in ids}
    for job_id, seen in per_job.items():
        # (a job that ended before the stream opened comes as its terminal event, as on a job's own stream)
        assert seen[0].event == "snapshot" or [e.event for e in seen] == ["completed"], (job_id, seen[0])
        seqs = [e.data["seq"] for e in seen]
        assert seqs == list(range(seqs[0], last[job_id] + 1)), f"job {job_id}: {seqs}"
        assert seen[-1].event == "completed"
    joined = [per_job[j["id"]][0] for j in later]
    assert all(e.data["seq"] == 1 and e.data["status"] == "queued" for e in joined), "a joiner's snapshot is as of "\
        "its first event"
    print(f"{len(events)} events in {len(reads)} connections; cursors {[r.cursor for r in reads]}")


def _read_until_quiet(base: str, path: str, cursor: str | None) -> Read:
    """Read what is left after everything has ended: a tag stream stays open, so stop once it pings."""
    sent = {"Last-Event-ID": cursor} if cursor else {}
    read = Read(0)
    with httpx.Client(base_url=base, timeout=30) as c, c.stream("GET", path, headers=sent) as r:
        read.status = r.status_code
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                return read  # a ping: nothing more is coming
            if line == "":
                if "data" in fields:
                    read.events.append(SetEvent(fields.get("id"), fields.get("event", "message"),
                                                orjson.loads(fields["data"])))
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
    return read


def test_pubsub_link_dropped_mid_set_stream_loses_no_event(make_stack) -> None:
    st: Stack = make_stack(workers=2)
    jobs = [st.submit({"steps": 30, "interval_ms": 40, "emit_output": True}) for _ in range(3)]
    killed: list[int] = []

    def kill_pubsub_once(read: Read) -> None:
        if len(read.events) == 20 and not killed:
            killed.append(st.redis.r.client_kill_filter(_type="pubsub"))

    read = read_set(st.url, "/events?" + "&".join(f"job={j['id']}" for j in jobs), on_event=kill_pubsub_once)
    assert killed and killed[0] >= 1 and read.ended_by_server
    for job_id, seen in _by_job(read.events).items():
        seqs = [e.data["seq"] for e in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"job {job_id}: {seqs}"
        assert seen[-1].event == "completed"


def test_a_list_of_jobs_ends_after_the_last_ends_and_then_answers_204(make_stack) -> None:
    st: Stack = make_stack(workers=2)
    jobs = [st.submit({"steps": 4, "interval_ms": 50}) for _ in range(3)]
    unknown = "0" * 32
    path = "/events?" + "&".join(f"job={j['id']}" for j in [*jobs, {"id": unknown}])
    read = read_set(st.url, path)
    assert read.status == 200 and read.ended_by_server
    per_job = _by_job(read.events)
    assert set(per_job) == {j["id"] for j in jobs}, "the unknown id is left out without a word"
    assert all(seen[-1].event == "completed" for seen in per_job.values())
    again = read_set(st.url, path, cursor=read.cursor)
    assert again.status == 204, "nothing more to send: EventSource is told not to come back"
    assert read_set(st.url, f"/events?job={unknown}").status == 204


def test_a_set_shows_neither_another_owners_jobs_nor_another_tags_and_its_token_is_for_it_alone(
    make_stack,
) -> None:
    st: Stack = make_stack(workers=1, **KEYED)

    def submit(key: str, tags: dict[str, str]) -> dict[str, Any]:
        with st.client(headers={"Authorization": f"Bearer {key}"}) as c:
            r = c.post("/jobs", json={"type": "demo", "payload": {"steps": 2, "interval_ms": 20}, "tags": tags})
            assert r.status_code == 202, r.text
            return r.json()

    mine = submit(ALICE, {"project": "apollo"})
    submit(ALICE, {"project": "gemini"})
    submit(BOB, {"project": "apollo"})
    with st.client(headers={"Authorization": f"Bearer {ALICE}"}) as c:
        listing = c.get("/jobs", params={"tag": "project:apollo"}).json()
    link = listing["links"]["events"]
    assert "token=" in link and "tag=project%3Aapollo" in link
    assert [j["id"] for j in listing["jobs"]] == [mine["id"]]
    path = link.split("127.0.0.1:", 1)[1].split("/", 1)[1]
    read = read_set(st.url, "/" + path, stop=1)
    assert read.status == 200 and {e.data["job_id"] for e in read.events} == {mine["id"]}
    joined = submit(ALICE, {"project": "apollo"})  # later jobs of the set join the open stream too
    submit(BOB, {"project": "apollo"})
    live = read_set(st.url, "/" + path, stop=2)
    assert {e.data["job_id"] for e in live.events} <= {mine["id"], joined["id"]}
    # The token is for that set: another tag, or no filter at all, is a 401.
    token = link.split("token=", 1)[1]
    for other in (f"/events?tag=project:gemini&token={token}", f"/events?token={token}"):
        assert read_set(st.url, other).status == 401, other
    assert read_set(st.url, "/events").status == 401  # no key, no token


@pytest.mark.parametrize("query, problem", [
    ("job=nothex", "job"), ("tag=nocolon", "tag"), ("type=", "type"),
    ("bogus=1", "bogus"), ("last_event_id=12", "last_event_id"), ("&".join(["job=" + "a" * 32] * 101), "job"),
])
def test_bad_parameters_get_a_clear_error(stack: Stack, query: str, problem: str) -> None:
    with stack.client() as c:
        r = c.get(f"/events?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["path"] == problem


def test_the_python_client_watches_many_jobs_through_an_api_restart(make_stack) -> None:
    from jobcast import AsyncClient, Client

    st: Stack = make_stack(workers=2)
    jobs = [st.submit({"steps": 25, "interval_ms": 40}, tags={"run": "sdk"}) for _ in range(4)]
    seen: dict[str, list[int]] = {}
    last: dict[str, str] = {}
    with Client(st.url) as client:
        for n, (job_id, event) in enumerate(client.watch_many(ids=[j["id"] for j in jobs])):
            seen.setdefault(job_id, []).append(event.id)
            last[job_id] = event.event
            if n == 15:
                st.stop_api()  # the client rides it out and resumes with its cursor
                st.start_api()
    assert set(seen) == {j["id"] for j in jobs} and set(last.values()) == {"completed"}
    for job_id, seqs in seen.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"job {job_id}: {seqs}"

    async def by_tag() -> set[str]:
        done: set[str] = set()
        async with AsyncClient(st.url) as client:
            async for job_id, event in client.watch_many(tags={"run": "sdk"}):
                if event.terminal:
                    done.add(job_id)
                if done == set(seen):
                    return done
        return done

    import asyncio

    assert asyncio.run(by_tag()) == set(seen)


def test_redis_killed_and_restarted_mid_set_stream_a_resuming_client_misses_nothing(make_stack, tmp_path) -> None:
    from tests.e2e.harness import RedisServer

    durable = RedisServer(tmp_path / "durable", persistent=True)
    (tmp_path / "durable").mkdir()
    durable.start()
    try:
        st: Stack = make_stack(workers=1, redis=durable)
        jobs = [st.submit({"steps": 20, "interval_ms": 80, "emit_output": True}) for _ in range(3)]
        path = "/events?" + "&".join(f"job={j['id']}" for j in jobs)
        before = read_set(st.url, path, stop=25)
        durable.stop()  # SIGKILL
        durable.start()  # the append-only file brings the feed and the logs back together
        with st.client() as c:
            wait_for(lambda: c.get("/readyz").status_code == 200, 15, "readiness after Redis returned")
        after = read_set(st.url, path, cursor=before.cursor)
        assert after.status == 200 and after.ended_by_server
        seen = before.events + after.events
        for job_id, events in _by_job(seen).items():
            # Consecutive, but where the restart moved a job's ids ahead (SEQ_JUMP in lua/lib.lua): there the
            # client gets the job as a whole (its snapshot, or its end), under a new id.
            seqs = [e.data["seq"] for e in events]
            shown = [(e.event, e.data["seq"]) for e in events]
            for i in range(1, len(events)):
                whole = events[i].event in ("snapshot", "completed", "failed") and seqs[i] > seqs[i - 1]
                assert seqs[i] == seqs[i - 1] + 1 or whole, f"job {job_id}: {shown}"
            assert events[-1].data["status"] in ("completed", "failed")
        print("after the restart:", {e.data["job_id"][:8]: e.event for e in after.events if e.event != "output"})
    finally:
        durable.close()
