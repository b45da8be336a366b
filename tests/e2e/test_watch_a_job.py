"""A user submits a job and watches it over server-sent events, as the contract's stream section says."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.e2e.harness import Event, Stack, Stream, count_events, parse_lines, read_raw, read_stream, target


def _assert_gapless(events: list[Event]) -> None:
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"event ids are not consecutive: {ids}"


def _assert_monotonic(events: list[Event]) -> None:
    seen = [e.data["progress"] for e in events if e.event in ("snapshot", "state")]
    assert seen == sorted(seen), f"progress went down: {seen}"


def test_submit_answers_at_once_with_a_queued_job(stack: Stack) -> None:
    with stack.client() as c:
        t0 = time.monotonic()
        r = c.post("/jobs", json={"type": "demo", "payload": {"steps": 3, "interval_ms": 1000}, "tags": {"p": "1"}})
        elapsed = time.monotonic() - t0
    assert r.status_code == 202
    job = r.json()
    print(f"POST /jobs answered in {elapsed * 1000:.1f} ms")
    assert job["status"] == "queued" and job["progress"] == 0
    assert job["message"].startswith("Queued (") and job["message"] == f"Queued ({job['queue_position']} ahead)"
    # Absolute links: a page on another origin can hand `links.events` to EventSource as it is.
    assert r.headers["location"] == f"{stack.url}/jobs/{job['id']}" == job["links"]["self"]
    assert job["links"]["events"] == f"{stack.url}/jobs/{job['id']}/events"
    assert job["tags"] == {"p": "1"} and job["attempt"] == 1 and job["max_attempts"] == 1
    assert job["last_event_id"] == 1
    assert job["created_at"].endswith("Z") and len(job["created_at"]) == len("2026-11-22T12:00:00.000Z")
    # the RQ job id is the jobcast id
    assert stack.redis.r.exists(f"rq:job:{job['id']}")


def test_links_follow_a_trusted_proxys_scheme_only(stack: Stack, make_stack) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    with stack.client() as c:  # from 127.0.0.1, trusted by default (JOBCAST_FORWARDED_ALLOW_IPS)
        job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 1}}, headers=proxied).json()
    assert job["links"]["self"] == f"https://127.0.0.1:{stack.port}/jobs/{job['id']}"
    other = make_stack(workers=0, JOBCAST_FORWARDED_ALLOW_IPS="192.0.2.1")  # a proxy elsewhere: not this client
    with other.client() as c:
        job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 1}}, headers=proxied).json()
    assert job["links"]["self"] == f"{other.url}/jobs/{job['id']}"


def test_full_stream_is_gapless_monotonic_and_ends_with_the_whole_job(stack: Stack) -> None:
    job = stack.submit({"steps": 8, "interval_ms": 50, "emit_output": True})
    s = read_stream(stack.url, job["links"]["events"])
    assert s.status == 200
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["cache-control"] == "no-cache" and s.headers["x-accel-buffering"] == "no"
    assert s.first_line == "retry: 2000" and s.retry == 2000
    assert s.ended_by_server
    first, last = s.events[0], s.events[-1]
    assert first.event == "snapshot" and first.data["id"] == job["id"] and first.id == first.data["last_event_id"]
    _assert_gapless(s.events)
    _assert_monotonic(s.events)
    assert last.event == "completed"
    assert last.data["status"] == "completed" and last.data["progress"] == 100
    assert last.data["result"] == {"steps": 8} and last.data["last_event_id"] == last.id
    assert last.data["links"]["self"] == f"{stack.url}/jobs/{job['id']}"
    assert [i["step"] for i in last.data["output"]["items"]] == list(range(1, 9))
    states = [e.data for e in s.events if e.event == "state"]
    assert any(st["message"] == "Step 8/8" and st["progress"] == 100 for st in states)
    assert {"status", "progress", "message", "stage", "attempt", "queue_position", "eta_s", "ts"} <= set(states[-1])
    outputs = [e.data for e in s.events if e.event == "output"]
    assert outputs and all(o["kind"] == "item" for o in outputs)


def test_snapshot_comes_at_once_while_the_job_waits_behind_busy_workers(make_stack) -> None:
    st: Stack = make_stack(workers=1)
    blocker = st.submit({"steps": 2, "interval_ms": 3000})
    read_stream(st.url, blocker["links"]["events"],
                stop=lambda s: any(e.data.get("status") == "running" for e in s.events))
    behind = st.submit({"steps": 1, "interval_ms": 0})
    waiting = st.submit({"steps": 1, "interval_ms": 0})
    t0 = time.monotonic()
    s = read_stream(st.url, waiting["links"]["events"], stop=count_events(1))
    print(f"first event after {(time.monotonic() - t0) * 1000:.1f} ms")
    snap = s.events[0]
    assert snap.event == "snapshot" and snap.data["status"] == "queued"
    assert snap.data["queue_position"] == 1 and snap.data["message"] == "Queued (1 ahead)"
    assert snap.data["progress"] == 0
    with st.client() as c:
        assert c.get(f"/jobs/{behind['id']}").json()["queue_position"] == 0


def test_a_waiting_job_hears_its_place_in_line_count_down(make_stack) -> None:
    st: Stack = make_stack(workers=1)
    blocker = st.submit({"steps": 2, "interval_ms": 1000})
    read_stream(st.url, blocker["links"]["events"],
                stop=lambda s: any(e.data.get("status") == "running" for e in s.events))
    ahead = [st.submit({"steps": 2, "interval_ms": 200}) for _ in range(2)]
    waiting = st.submit({"steps": 1, "interval_ms": 0})
    s = read_stream(st.url, waiting["links"]["events"])
    said = [(e.data["status"], e.data["queue_position"], e.data["message"]) for e in s.events[:-1]]
    assert said[:3] == [("queued", 2, "Queued (2 ahead)"), ("queued", 1, "Queued (1 ahead)"),
                        ("queued", 0, "Queued (0 ahead)")]
    assert said[3][0] == "running" and said[3][1] is None
    assert s.events[-1].event == "completed"
    assert all(read_stream(st.url, j["links"]["events"]).events[-1].event == "completed" for j in ahead)


def test_idle_stream_sends_pings(make_stack) -> None:
    st: Stack = make_stack(workers=0)
    job = st.submit()
    t0 = time.monotonic()
    s = read_stream(st.url, job["links"]["events"], stop=lambda s: len(s.comments) >= 2)
    assert s.comments[:2] == ["ping", "ping"]
    assert time.monotonic() - t0 < 5  # JOBCAST_PING_MS=1000 in the test stacks


def test_resume_with_last_event_id_gives_exactly_the_rest(stack: Stack) -> None:
    job = stack.submit({"steps": 12, "interval_ms": 40, "emit_output": True})
    part = read_stream(stack.url, job["links"]["events"], stop=count_events(5))
    resumed_at = part.events[-1].id
    rest = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": str(resumed_at)})
    whole = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": "0"})
    assert rest.events[0].id == resumed_at + 1
    assert [e.id for e in part.events] + [e.id for e in rest.events] == \
        [e.id for e in whole.events[part.events[0].id - 1:]]
    _assert_gapless(rest.events)
    assert rest.events[-1].event == "completed" and rest.ended_by_server
    assert whole.events[0].id == 1 and whole.events[0].event == "state" and whole.events[0].data["status"] == "queued"
    # the query parameter works the same as the header, for clients that cannot set headers
    via_query = read_stream(stack.url, f"{job['links']['events']}?last_event_id={resumed_at}")
    assert [(e.id, e.event, e.data) for e in via_query.events] == [(e.id, e.event, e.data) for e in rest.events]


def test_reconnect_after_the_terminal_event_gets_204(stack: Stack) -> None:
    job = stack.submit({"steps": 2, "interval_ms": 0})
    s = read_stream(stack.url, job["links"]["events"])
    end = s.events[-1]
    assert end.terminal
    for headers, path in (({"Last-Event-ID": str(end.id)}, job["links"]["events"]),
                          ({"Last-Event-ID": str(end.id + 5)}, job["links"]["events"]),
                          ({}, f"{job['links']['events']}?last_event_id={end.id}")):
        again = read_stream(stack.url, path, headers=headers)
        assert again.status == 204 and again.events == []


def test_late_connect_to_a_finished_job_gets_the_terminal_event(stack: Stack) -> None:
    job = stack.submit({"steps": 3, "interval_ms": 0, "emit_output": True})
    first = read_stream(stack.url, job["links"]["events"])
    late = read_stream(stack.url, job["links"]["events"])
    assert len(late.events) == 1 and late.ended_by_server
    only = late.events[0]
    assert only.event == "completed" and only.id == first.events[-1].id
    assert only.data == first.events[-1].data
    assert len(only.data["output"]["items"]) == 3


def test_fifty_clients_on_one_job_see_identical_sequences(stack: Stack) -> None:
    job = stack.submit({"steps": 30, "interval_ms": 100, "emit_output": True})

    async def watch(client: httpx.AsyncClient) -> Stream:
        async with client.stream("GET", job["links"]["events"], headers={"Last-Event-ID": "0"}) as r:
            stream = Stream(r.status_code, r.headers)
            lines: list[str] = []
            async for line in r.aiter_lines():
                lines.append(line)
            parse_lines(iter(lines), stream, lambda s: False)
            return stream

    async def main() -> list[Stream]:
        async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
            return await asyncio.gather(*(watch(client) for _ in range(50)))

    streams = asyncio.run(main())
    reference = [(e.id, e.event, e.data) for e in streams[0].events]
    assert reference[-1][1] == "completed" and len(reference) >= 60
    for s in streams[1:]:
        assert [(e.id, e.event, e.data) for e in s.events] == reference


def test_polling_agrees_with_the_stream(stack: Stack) -> None:
    job = stack.submit({"steps": 6, "interval_ms": 150, "emit_output": True})
    s = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": "0"},
                    stop=lambda s: any(e.event == "state" and e.data["progress"] >= 50 for e in s.events))
    with stack.client() as c:
        polled = c.get(f"/jobs/{job['id']}").json()
    seen_up_to = {e.id: e for e in s.events}
    assert polled["status"] == "running"
    # the poll is at least as new as what the stream had delivered, and the stream then brings the same state
    rest = read_stream(stack.url, job["links"]["events"], headers={"Last-Event-ID": str(s.events[-1].id)})
    events = {**seen_up_to, **{e.id: e for e in rest.events}}
    state_at = [events[i] for i in sorted(events) if i <= polled["last_event_id"] and events[i].event == "state"][-1]
    assert (polled["progress"], polled["message"]) == (state_at.data["progress"], state_at.data["message"])
    items_at = [events[i].data["item"] for i in sorted(events)
                if i <= polled["last_event_id"] and events[i].event == "output"]
    assert polled["output"]["items"] == items_at
    with stack.client() as c:
        final = c.get(f"/jobs/{job['id']}").json()
    assert final == rest.events[-1].data


def test_polling_with_an_etag_gets_304_until_something_changes(stack: Stack) -> None:
    job = stack.submit({"steps": 3, "interval_ms": 0, "fail_at": 2})
    read_stream(stack.url, job["links"]["events"])
    with stack.client() as c:
        first = c.get(f"/jobs/{job['id']}")
        etag = first.headers["etag"]
        again = c.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert c.get(f"/jobs/{job['id']}", headers={"If-None-Match": '"other", W/' + etag}).status_code == 304
        assert c.post(f"/jobs/{job['id']}/retry").status_code == 202
        changed = c.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_a_burst_of_streams_opening_at_once_all_get_their_snapshot(stack: Stack) -> None:
    """Regression: more simultaneous opens than the Redis pool's size answered 503 ("Too many connections")."""
    job = stack.submit({"steps": 1, "interval_ms": 0})
    host, port = stack.url.removeprefix("http://").split(":")

    async def open_one() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {target(job['links']['events'])} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status = await reader.readline()
        writer.close()
        return status

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(open_one() for _ in range(300)))

    statuses = asyncio.run(burst())
    assert all(s.startswith(b"HTTP/1.1 200") for s in statuses), {s for s in statuses}


def test_the_terminal_event_has_the_same_bytes_whichever_way_it_is_read(stack: Stack) -> None:
    job = stack.submit({"steps": 3, "interval_ms": 50, "emit_output": True})
    path = job["links"]["events"]
    live = asyncio.run(read_raw(stack.port, path))[-1]  # watched as it happened
    assert live[1] == "completed"
    late = asyncio.run(read_raw(stack.port, path))  # connected after the end: the first event is the end
    resumed = asyncio.run(read_raw(stack.port, f"{path}?last_event_id={live[0] - 1}"))  # from the log
    assert len(late) == 1 and late[0] == live
    assert resumed == [live]
