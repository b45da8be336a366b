"""With API keys: every job endpoint needs one, owners see only their own jobs, and stream links carry
a short-lived token for that one job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import RedisServer, Stack, read_stream, running_stack, wait_for

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef0"
SECRET = "test-secret-0123456789"


@pytest.fixture(scope="module")
def keyed(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"JOBCAST_API_KEYS": f"{ALICE}:alice,{BOB}:bob", "JOBCAST_SECRET": SECRET,
           "JOBCAST_STREAM_TOKEN_TTL": "3"}
    with running_stack(redis_server, tmp_path_factory.mktemp("keyed"), workers=1, **env) as st:
        yield st


def _as(st: Stack, key: str | None) -> httpx.Client:
    return st.client(headers={"Authorization": f"Bearer {key}"} if key else {})


def _job(st: Stack, key: str = ALICE, **payload: object) -> dict:
    with _as(st, key) as c:
        r = c.post("/jobs", json={"type": "demo", "payload": {"steps": 2, "interval_ms": 0, **payload}})
    assert r.status_code == 202, r.text
    return r.json()


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef", f"{ALICE}x"])
def test_no_key_or_a_wrong_one_is_401_everywhere_but_health_and_the_page(keyed: Stack, key: str | None) -> None:
    job = _job(keyed)
    with _as(keyed, key) as c:
        for method, path in (("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/job-types"), ("GET", f"/jobs/{job['id']}"),
                             ("GET", f"/jobs/{job['id']}/events"), ("POST", f"/jobs/{job['id']}/cancel"),
                             ("POST", f"/jobs/{job['id']}/retry"), ("DELETE", f"/jobs/{job['id']}")):
            r = c.request(method, path, json={"type": "demo"} if method == "POST" else None)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path, r.text)
        for path in ("/healthz", "/readyz", "/", "/static/jobcast.js"):
            assert c.get(path).status_code == 200, path


def test_an_owner_sees_and_touches_only_its_own_jobs(keyed: Stack) -> None:
    job = _job(keyed, ALICE)
    with _as(keyed, BOB) as bob:
        for method, path in (("GET", f"/jobs/{job['id']}"), ("GET", f"/jobs/{job['id']}/events"),
                             ("POST", f"/jobs/{job['id']}/cancel"), ("POST", f"/jobs/{job['id']}/retry"),
                             ("DELETE", f"/jobs/{job['id']}")):
            r = bob.request(method, path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path)
        assert job["id"] not in [j["id"] for j in bob.get("/jobs").json()["jobs"]]
    with _as(keyed, ALICE) as alice:
        assert alice.get(f"/jobs/{job['id']}").status_code == 200
        assert job["id"] in [j["id"] for j in alice.get("/jobs").json()["jobs"]]


def test_the_events_link_works_without_a_key_for_that_job_only(keyed: Stack) -> None:
    job = _job(keyed, emit_output=True)
    other = _job(keyed)
    link = job["links"]["events"]
    assert "?token=" in link
    s = read_stream(keyed.url, link)  # as EventSource would: no Authorization header
    assert s.status == 200 and s.events[-1].event == "completed"
    token = link.split("token=")[1]
    with keyed.client() as c:
        assert c.get(f"/jobs/{job['id']}?token={token}").status_code == 200  # the polling fallback
        foreign = c.get(f"/jobs/{other['id']}/events?token={token}")
        assert foreign.status_code == 401
        tampered = c.get(f"/jobs/{job['id']}?token={token[:-2]}xy")
        assert tampered.status_code == 401
        not_ascii = c.get(f"/jobs/{job['id']}?token={token.split('.')[0]}.%C3%A9t%C3%A9")
        assert not_ascii.status_code == 401, not_ascii.text
        # Without a key, an unknown job is a 401 as much as a known one: nothing is looked up first.
        for method, path in [("GET", f"/jobs/{'0' * 32}"), ("DELETE", f"/jobs/{'0' * 32}"),
                             ("POST", f"/jobs/{'0' * 32}/cancel"), ("POST", f"/jobs/{'0' * 32}/retry"),
                             ("GET", f"/jobs/{'0' * 32}/events")]:
            assert c.request(method, path).status_code == 401, (method, path)
    # a fresh link comes with the key
    with _as(keyed, ALICE) as alice:
        assert "?token=" in alice.get(f"/jobs/{job['id']}").json()["links"]["events"]


def test_an_expired_token_is_401_not_a_reconnect_loop(keyed: Stack) -> None:
    job = _job(keyed)
    expired = job["links"]["events"].split("token=")[1]
    expires = int(expired.split(".")[0])
    with keyed.client() as c:
        while time.time() <= expires:  # JOBCAST_STREAM_TOKEN_TTL=3 in this stack
            time.sleep(0.1)
        r = c.get(f"/jobs/{job['id']}/events?token={expired}")
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_keys_never_appear_in_the_logs(keyed: Stack) -> None:
    _job(keyed, ALICE)
    with _as(keyed, "wrong-key-0123456789abcdef") as c:
        c.get("/jobs")
    logs = keyed.log("api.log") + keyed.log("worker-0.log")
    assert ALICE not in logs and BOB not in logs and "wrong-key-0123456789abcdef" not in logs and SECRET not in logs


def test_an_owner_over_the_submit_rate_gets_429_with_retry_after(make_stack) -> None:
    st: Stack = make_stack(workers=0, JOBCAST_SUBMIT_RATE="3")
    with st.client() as c:
        codes = [c.post("/jobs", json={"type": "demo"}).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        r = c.post("/jobs", json={"type": "demo"})
    assert r.json()["error"]["code"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 60
    assert st.redis.r.zcard(f"{st.prefix}:owner:{{anonymous}}") == 3


def test_rejected_and_replayed_submissions_do_not_count_against_the_submit_rate(make_stack) -> None:
    st: Stack = make_stack(workers=0, JOBCAST_SUBMIT_RATE="3")
    key = {"Idempotency-Key": "order-1"}
    with st.client() as c:
        assert c.post("/jobs", json={"type": "demo"}, headers=key).status_code == 202
        for _ in range(3):  # the same key with another body: 409, three times
            assert c.post("/jobs", json={"type": "demo", "payload": {"steps": 2}}, headers=key).status_code == 409
        for _ in range(3):  # bad payloads: 422
            assert c.post("/jobs", json={"type": "demo", "payload": {"steps": 0}}).status_code == 422
        replay = c.post("/jobs", json={"type": "demo"}, headers=key)
        assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
        codes = [c.post("/jobs", json={"type": "demo"}).status_code for _ in range(3)]
    assert codes == [202, 202, 429], "only the accepted submissions count: 1 + 2 of 3"
    assert st.redis.r.zcard(f"{st.prefix}:owner:{{anonymous}}") == 3


def test_an_owner_over_its_open_streams_gets_429(make_stack) -> None:
    st: Stack = make_stack(workers=0, JOBCAST_MAX_STREAMS_PER_OWNER="2")
    job = st.submit()
    held = [threading.Thread(target=read_stream, args=(st.url, job["links"]["events"]),
                             kwargs={"stop": lambda s: len(s.comments) >= 3}) for _ in range(2)]
    for t in held:
        t.start()
    while st.redis.r.pubsub_numsub(f"{st.prefix}:ch:{{{job['id']}}}")[0][1] < 1:
        time.sleep(0.01)
    with st.client() as c:
        deadline = time.monotonic() + 5
        while (r := c.get(job["links"]["events"])).status_code != 429 and time.monotonic() < deadline:
            r.close()
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    for t in held:
        t.join()


def test_cors_is_off_by_default_and_on_for_listed_origins(stack: Stack, make_stack) -> None:
    with stack.client() as c:
        r = c.get("/healthz", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers
        page = c.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    st: Stack = make_stack(workers=0, JOBCAST_CORS_ORIGINS="https://app.example")
    with st.client() as c:
        ok = c.options("/jobs", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization,content-type"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_dashboard_needs_its_own_credentials_and_shows_the_same_job_ids(make_stack) -> None:
    st: Stack = make_stack(workers=0, JOBCAST_API_KEYS=f"{ALICE}:alice", JOBCAST_SECRET=SECRET,
                           JOBCAST_DASHBOARD_USER="ops", JOBCAST_DASHBOARD_PASSWORD="dashboard-pass")
    job = _job(st, ALICE)  # no worker: it waits in RQ's queue
    with st.client() as c:
        assert c.get("/dashboard/").status_code == 401
        assert c.get("/dashboard/", auth=("ops", "wrong")).status_code == 401
        assert c.get("/dashboard/", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 401
        page = c.get("/dashboard/", auth=("ops", "dashboard-pass"))
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        data = c.get(f"/dashboard/0/data/job/{job['id']}.json", auth=("ops", "dashboard-pass"))
    assert data.status_code == 200 and data.json()["id"] == job["id"]


def test_with_keys_but_no_dashboard_credentials_there_is_no_dashboard(keyed: Stack) -> None:
    with _as(keyed, ALICE) as c:
        assert c.get("/dashboard/").status_code == 404


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"])
def test_authentication_comes_before_validation_and_parsing(keyed: Stack, key: str | None) -> None:
    deep = '{"type": "demo", "payload": {"a": ' + "[" * 500 + "]" * 500 + "}}"
    before = len(keyed.log("api.log"))
    with _as(keyed, key) as c:
        answers = [
            c.post("/jobs", json={"type": "no-such-type"}),  # would list every job type
            c.post("/jobs", content=deep, headers={"content-type": "application/json"}),  # a 500 once
            c.post("/jobs", content=b"not json", headers={"content-type": "text/plain"}),
            c.get("/jobs", params={"limit": "9999"}),
            c.get("/jobs", params={"bogus": "1"}),
            c.get(f"/jobs/{'0' * 32}/events", headers={"Last-Event-ID": "x"}),
        ]
    for r in answers:
        assert r.status_code == 401, (r.request.method, r.request.url, r.text)
        assert r.json()["error"]["code"] == "unauthorized" and "demo" not in r.text
    assert "Traceback" not in keyed.log("api.log")[before:]


def test_a_token_with_an_absurdly_long_expiry_is_401_not_500(keyed: Stack) -> None:
    job = _job(keyed)
    with _as(keyed, None) as c:
        for token in ["9" * 5000 + ".AAAA", "1" * 13 + ".AAAA", "12.\u00e9\u00e9", ".", "", "abc.def"]:
            r = c.get(f"/jobs/{job['id']}", params={"token": token})
            assert r.status_code == 401, (token[:20], r.text)
            s = c.get(f"/jobs/{job['id']}/events", params={"token": token})
            assert s.status_code == 401, (token[:20], s.text)


def test_with_keys_any_host_name_is_answered(keyed: Stack) -> None:
    with _as(keyed, ALICE) as c:
        assert c.get("/jobs", headers={"Host": "jobs.example.com"}).status_code == 200


WEBHOOK_SECRET = "whsec_" + "dGhlIHRlc3Qgc2VjcmV0IG9mIDI0IGJ5dGVz"


def test_a_leaked_token_can_neither_hold_the_owners_streams_nor_outlive_itself(make_stack) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_API_KEYS=f"{ALICE}:alice", JOBCAST_SECRET=SECRET,
                           JOBCAST_STREAM_TOKEN_TTL="8", JOBCAST_MAX_STREAMS_PER_TOKEN="2")
    job = _job(st, steps=200, interval_ms=100)
    link = job["links"]["events"]
    held = [threading.Thread(target=read_stream, args=(st.url, link)) for _ in range(2)]
    t0 = time.monotonic()
    for t in held:
        t.start()
    def third_refused() -> bool:
        with st.client() as c, c.stream("GET", link) as r:
            assert r.status_code != 401, "the token expired before both streams were open: raise its TTL here"
            return r.status_code == 429

    wait_for(third_refused, 10, "the third stream on one token to be refused")
    with _as(st, ALICE) as c, c.stream("GET", f"/jobs/{job['id']}/events") as own:
        assert own.status_code == 200, "the owner's own streams are not used up by the token's"
    for t in held:  # both end by themselves when the token expires, although the job runs on
        t.join(timeout=20)
        assert not t.is_alive()
    print(f"token-opened streams ended {time.monotonic() - t0:.1f}s after they opened (token TTL 8 s)")
    with st.client() as c:
        assert c.get(link).status_code == 401  # EventSource's reconnect: jobcast.js then asks for a fresh link
        assert c.get(f"/jobs/{job['id']}").status_code == 401


def test_a_stream_token_does_not_show_the_webhook_url(make_stack) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_API_KEYS=f"{ALICE}:alice", JOBCAST_SECRET=SECRET,
                           JOBCAST_WEBHOOK_SECRET=WEBHOOK_SECRET, JOBCAST_WEBHOOK_ALLOW_PRIVATE="1")
    url = "http://127.0.0.1:9/hook?signature=a-secret-in-the-url"
    with _as(st, ALICE) as c:
        job = c.post("/jobs", json={"type": "demo", "payload": {"steps": 1, "interval_ms": 0},
                                    "webhook": {"url": url}}).json()
        assert job["webhook"]["url"] == url
    token = job["links"]["events"].split("token=", 1)[1]
    s = read_stream(st.url, job["links"]["events"])
    assert s.events[-1].terminal and "url" not in s.events[-1].data["webhook"]
    with st.client() as c:
        by_token = c.get(f"/jobs/{job['id']}", params={"token": token}).json()
    assert "a-secret-in-the-url" not in str(by_token)
    assert set(by_token["webhook"]) == {"state", "attempts", "last_status"}
    with _as(st, ALICE) as c:
        assert c.get(f"/jobs/{job['id']}").json()["webhook"]["url"] == url


def test_retries_count_against_the_submit_rate_and_the_limit_comes_before_any_dns_lookup(make_stack) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_SUBMIT_RATE="2", JOBCAST_WEBHOOK_SECRET=WEBHOOK_SECRET)
    job = st.submit({"steps": 1, "interval_ms": 0, "fail_at": 1})
    assert read_stream(st.url, job["links"]["events"]).events[-1].event == "failed"
    with st.client() as c:
        assert c.post(f"/jobs/{job['id']}/retry").status_code == 202  # the second of 2 this minute
        end = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": "1"}).events[-1]
        assert end.event == "failed"
        r = c.post(f"/jobs/{job['id']}/retry")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        # over the limit, a webhook host is not even looked up: 429, not 422 for a name that does not resolve
        r = c.post("/jobs", json={"type": "demo", "webhook": {"url": "https://does-not-resolve.invalid/hook"}})
        assert r.status_code == 429
