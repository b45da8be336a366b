"""The HTTP API in process: Starlette's TestClient over `create_app` on fakeredis (no worker runs, so
jobs stay queued), for what the contract promises of idempotency, listing, ETags, auth and error shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from jobcast.settings import Settings
from jobcast.store.connections import RedisFactory
from jobcast.web.app import create_app

ALICE, BOB = "alice-key-0123456789", "bob-key-0123456789ab"
DEMO = {"type": "demo", "payload": {"steps": 2}}


@pytest.fixture
def api(server: fakeredis.FakeServer) -> Iterator[Callable[..., TestClient]]:
    """`api(**settings)`: a client of a fresh app over the test's in-memory Redis."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        app = create_app(Settings(prefix="t", **settings), RedisFactory(fake_server=server))
        client = TestClient(app, base_url="http://localhost")
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def keyed(api: Callable[..., TestClient]) -> TestClient:
    return api(api_keys={ALICE: "alice", BOB: "bob"}, secret="s" * 16)


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_the_same_idempotency_key_gives_the_same_job_and_a_different_body_a_409(api: Callable[..., TestClient],
                                                                                server: fakeredis.FakeServer) -> None:
    c = api()
    first = c.post("/jobs", json=DEMO, headers={"Idempotency-Key": "k-1"})
    again = c.post("/jobs", json=DEMO, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    _error(c.post("/jobs", json={**DEMO, "payload": {"steps": 3}}, headers={"Idempotency-Key": "k-1"}), 409,
           "conflict")
    assert len(c.get("/jobs").json()["jobs"]) == 1
    _error(c.post("/jobs", json=DEMO, headers={"Idempotency-Key": "x" * 256}), 422, "validation_error")


def test_listing_pages_newest_first_with_a_cursor_and_filters(api: Callable[..., TestClient]) -> None:
    c = api()
    ids = [c.post("/jobs", json={**DEMO, "tags": {"n": str(i % 2)}}).json()["id"] for i in range(5)]
    page = c.get("/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2] and page["next_cursor"]
    seen = [j["id"] for j in page["jobs"]]
    while page["next_cursor"]:
        page = c.get("/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == ids[::-1]
    assert [j["id"] for j in c.get("/jobs", params={"tag": "n:1"}).json()["jobs"]] == [ids[3], ids[1]]
    assert c.get("/jobs", params={"status": "running"}).json() == {"jobs": [], "next_cursor": None}
    for params, path in (({"limit": 0}, "limit"), ({"status": "done"}, "status"), ({"cursor": "nope"}, "cursor"),
                         ({"tag": "no-colon"}, "tag"), ({"colour": "red"}, "colour")):
        details = _error(c.get("/jobs", params=params), 422, "validation_error")["details"]
        assert details[0]["path"] == path, (params, details)


def test_get_job_answers_304_to_its_current_etag_and_200_once_it_changes(api: Callable[..., TestClient]) -> None:
    c = api()
    job = c.post("/jobs", json=DEMO).json()
    r = c.get(f"/jobs/{job['id']}")
    etag = r.headers["etag"]
    assert r.headers["cache-control"] == "no-cache"
    unchanged = c.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert c.get(f"/jobs/{job['id']}", headers={"If-None-Match": f'W/{etag}, "other"'}).status_code == 304
    c.post(f"/jobs/{job['id']}/cancel")
    changed = c.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and changed.json()["status"] == "canceled"


def test_keys_decide_who_sees_what(keyed: TestClient) -> None:
    _error(keyed.get("/jobs"), 401, "unauthorized")
    _error(keyed.get("/jobs", headers={"Authorization": "Bearer wrong-key-0123456789"}), 401, "unauthorized")
    _error(keyed.post("/jobs", json=DEMO, headers={"Authorization": "Basic x"}), 401, "unauthorized")
    alice = {"Authorization": f"Bearer {ALICE}"}
    job = keyed.post("/jobs", json=DEMO, headers=alice).json()
    _error(keyed.get(f"/jobs/{job['id']}", headers={"Authorization": f"Bearer {BOB}"}), 404, "not_found")
    assert keyed.get("/jobs", headers={"Authorization": f"Bearer {BOB}"}).json()["jobs"] == []
    token = job["links"]["events"].split("token=")[1]
    assert keyed.get(f"/jobs/{job['id']}", params={"token": token}).status_code == 200
    _error(keyed.get(f"/jobs/{job['id']}", params={"token": token[:-2] + "xx"}), 401, "unauthorized")
    _error(keyed.post(f"/jobs/{job['id']}/cancel", params={"token": token}), 401, "unauthorized")


@pytest.mark.parametrize(("request_", "status", "code"), [
    (("POST", "/jobs", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}), 400,
     "invalid_json"),
    (("POST", "/jobs", {"content": b"[1]", "headers": {"Content-Type": "application/json"}}), 400, "invalid_json"),
    (("POST", "/jobs", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}), 415, "unsupported_media_type"),
    (("POST", "/jobs", {"json": {"type": "nope"}}), 422, "validation_error"),
    (("POST", "/jobs", {"json": {"type": "backlog_tasks", "payload": {}}}), 422, "validation_error"),  # a part type
    (("GET", "/jobs?parent=nope", {}), 422, "validation_error"),
    (("GET", "/jobs?parent=" + "0" * 32 + "&cursor=p1", {}), 422, "validation_error"),
    (("GET", "/jobs?parent=" + "0" * 32, {}), 404, "not_found"),
    (("POST", "/jobs", {"json": {**DEMO, "payload": {"parts": 0}}}), 422, "validation_error"),
    (("POST", "/jobs", {"json": {**DEMO, "payload": {"steps": "2"}}}), 422, "validation_error"),
    (("POST", "/jobs", {"content": b'{"type": "demo", "payload": {"x": "' + b"a" * 300_000 + b'"}}',
                        "headers": {"Content-Type": "application/json"}}), 413, "payload_too_large"),
    (("GET", "/jobs/" + "0" * 32, {}), 404, "not_found"),
    (("GET", "/jobs/not-an-id", {}), 404, "not_found"),
    (("GET", "/nowhere", {}), 404, "not_found"),
    (("PUT", "/jobs", {}), 405, "method_not_allowed"),
    (("GET", "/jobs/" + "0" * 32 + "/events", {"headers": {"Last-Event-ID": "abc"}}), 422, "validation_error"),
])
def test_every_error_has_the_contracts_shape_and_changes_nothing(
        api: Callable[..., TestClient], server: fakeredis.FakeServer,
        request_: tuple[str, str, dict[str, Any]], status: int, code: str) -> None:
    c = api()
    before = sorted(fakeredis.FakeRedis(server=server).keys("t:*"))
    method, path, options = request_
    _error(c.request(method, path, **options), status, code)
    assert sorted(fakeredis.FakeRedis(server=server).keys("t:*")) == before


def test_conflicts_on_jobs_in_the_wrong_state(api: Callable[..., TestClient]) -> None:
    c = api()
    job = c.post("/jobs", json=DEMO).json()
    _error(c.post(f"/jobs/{job['id']}/retry"), 409, "conflict")  # queued: nothing to retry
    _error(c.delete(f"/jobs/{job['id']}"), 409, "conflict")  # queued: cancel it first
    assert c.post(f"/jobs/{job['id']}/cancel").status_code == 202
    _error(c.post(f"/jobs/{job['id']}/cancel"), 409, "conflict")
    assert c.delete(f"/jobs/{job['id']}").status_code == 204
    _error(c.get(f"/jobs/{job['id']}"), 404, "not_found")


def test_a_part_type_is_neither_listed_nor_submitted_on_its_own(api: Callable[..., TestClient]) -> None:
    c = api()
    names = [t["name"] for t in c.get("/job-types").json()["job_types"]]
    assert "generate_backlog" in names and "backlog_tasks" not in names
    r = c.post("/jobs", json={"type": "backlog_tasks", "payload": {}})
    assert "runs only as the parts of a 'generate_backlog' job" in r.json()["error"]["details"][0]["message"]
