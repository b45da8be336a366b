"""A user lists their jobs, discovers the job types, and an operator checks health."""

from __future__ import annotations

from tests.e2e.harness import Stack, read_stream


def _finish(stack: Stack, job: dict) -> dict:
    return read_stream(stack.url, job["links"]["events"]).events[-1].data


def test_list_is_newest_first_with_filters_and_a_cursor(make_stack) -> None:
    st: Stack = make_stack(workers=1)
    done = [_finish(st, st.submit({"steps": 1, "interval_ms": 0}, tags={"batch": "a", "n": str(i)})) for i in range(3)]
    failed = _finish(st, st.submit({"steps": 2, "interval_ms": 0, "fail_at": 2}, tags={"batch": "b"}))
    with st.client() as c:
        everything = c.get("/jobs").json()
        assert [j["id"] for j in everything["jobs"]] == [failed["id"], *[d["id"] for d in reversed(done)]]
        assert everything["next_cursor"] is None
        assert everything["jobs"][0] == c.get(f"/jobs/{failed['id']}").json()

        assert [j["id"] for j in c.get("/jobs?status=failed").json()["jobs"]] == [failed["id"]]
        assert [j["id"] for j in c.get("/jobs?status=completed&tag=batch:a&tag=n:1").json()["jobs"]] == [done[1]["id"]]
        assert c.get("/jobs?type=demo&tag=batch:b").json()["jobs"][0]["id"] == failed["id"]
        assert c.get("/jobs?type=other").json() == {"jobs": [], "next_cursor": None}

        pages, cursor = [], None
        while True:
            page = c.get("/jobs", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
            pages += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == [j["id"] for j in everything["jobs"]]


def test_expired_jobs_leave_the_listing(make_stack) -> None:
    st: Stack = make_stack(workers=1)
    gone = _finish(st, st.submit({"steps": 1, "interval_ms": 0}))
    kept = _finish(st, st.submit({"steps": 1, "interval_ms": 0}))
    st.redis.r.delete(f"{st.prefix}:job:{{{gone['id']}}}")  # what the TTL does after JOBCAST_JOB_TTL
    with st.client() as c:
        assert [j["id"] for j in c.get("/jobs").json()["jobs"]] == [kept["id"]]
        assert c.get(f"/jobs/{gone['id']}").status_code == 404
    assert st.redis.r.zcard(f"{st.prefix}:owner:{{anonymous}}") == 1


def test_finished_job_keys_expire_after_the_job_ttl(stack: Stack) -> None:
    job = _finish(stack, stack.submit({"steps": 1, "interval_ms": 0, "emit_output": True}))
    for key in ("job", "ev", "out"):
        ttl = stack.redis.r.ttl(f"{stack.prefix}:{key}:{{{job['id']}}}")
        assert 86000 < ttl <= 86400, (key, ttl)


def test_job_types_describe_the_payload_schema(stack: Stack) -> None:
    with stack.client() as c:
        types = {t["name"]: t for t in c.get("/job-types").json()["job_types"]}
    demo = types["demo"]
    assert demo["available"] is True and demo["description"]
    assert demo["max_attempts"] == 1 and demo["timeout_s"] == 3600
    props = demo["schema"]["properties"]
    assert props["steps"]["minimum"] == 1 and props["steps"]["maximum"] == 100000 and props["steps"]["default"] == 10
    assert props["interval_ms"]["default"] == 500
    assert {"fail_at", "fail_attempts", "emit_output"} <= set(props)


def test_health_and_readiness(stack: Stack) -> None:
    with stack.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] == 2
