"""Bad input of every kind gets the contract's JSON error, and creates or changes nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import Stack, read_stream, wait_for


def _state(stack: Stack) -> tuple[int, int, int]:
    """How many job records, RQ queue entries and owner-index entries there are."""
    r = stack.redis.r
    return (
        len(list(r.scan_iter(f"{stack.prefix}:job:*"))),
        r.llen(f"rq:queue:{stack.queue}"),
        r.zcard(f"{stack.prefix}:owner:{{anonymous}}"),
    )


@pytest.fixture
def unchanged(stack: Stack) -> Iterator[None]:
    before = _state(stack)
    yield
    assert _state(stack) == before, "a rejected request changed the store"


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"] and "Traceback" not in r.text
    return body["error"]


JSON = {"content-type": "application/json"}
BAD_JSON = [b"", b"{", b'{"type": "demo",}', b"not json", b"\xff\xfe"]
NOT_OBJECT = [b"[]", b'"demo"', b"42", b"null", b'[{"type": "demo"}]']


@pytest.mark.parametrize("body", BAD_JSON + NOT_OBJECT)
def test_body_that_is_not_a_json_object_is_400(stack: Stack, unchanged: None, body: bytes) -> None:
    with stack.client() as c:
        _error(c.post("/jobs", content=body, headers={"content-type": "application/json"}), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"payload": {}}, "type"),
        ({"type": "nope"}, "type"),
        ({"type": 7}, "type"),
        ({"type": "demo", "payload": {"steps": 0}}, "payload.steps"),
        ({"type": "demo", "payload": {"steps": 100001}}, "payload.steps"),
        ({"type": "demo", "payload": {"steps": "10"}}, "payload.steps"),
        ({"type": "demo", "payload": {"interval_ms": -1}}, "payload.interval_ms"),
        ({"type": "demo", "payload": {"emit_output": "yes"}}, "payload.emit_output"),
        ({"type": "demo", "payload": {"stepz": 3}}, "payload.stepz"),
        ({"type": "demo", "payload": []}, "payload"),
        ({"type": "demo", "tags": {f"k{i}": "v" for i in range(17)}}, "tags"),
        ({"type": "demo", "tags": {"k": "v" * 129}}, "tags.k"),
        ({"type": "demo", "tags": {"k": 1}}, "tags.k"),
        ({"type": "demo", "max_attempts": 0}, "max_attempts"),
        ({"type": "demo", "max_attempts": 11}, "max_attempts"),
        ({"type": "demo", "timeout_s": 0}, "timeout_s"),
        ({"type": "demo", "timeout_s": 86401}, "timeout_s"),
        ({"type": "demo", "priority": 1}, "priority"),
        ({"type": "demo", "webhook": {"url": "https://example.com/hook"}}, "webhook"),
    ],
)
def test_body_breaking_the_schema_is_422_with_the_field_path(stack: Stack, unchanged: None, body: dict,
                                                             path: str) -> None:
    with stack.client() as c:
        err = _error(c.post("/jobs", json=body), 422, "validation_error")
    assert path in [d["path"] for d in err["details"]], err
    assert all(set(d) == {"path", "message"} and d["message"] for d in err["details"])


def test_unknown_type_names_the_known_ones(stack: Stack, unchanged: None) -> None:
    with stack.client() as c:
        err = _error(c.post("/jobs", json={"type": "nope"}), 422, "validation_error")
    assert "demo" in err["message"]


def test_body_over_the_limit_is_413(stack: Stack, unchanged: None) -> None:
    big = b'{"type": "demo", "payload": {}, "tags": {"x": "' + b"a" * (300 * 1024) + b'"}}'
    with stack.client() as c:
        _error(c.post("/jobs", content=big, headers=JSON), 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
            for i in range(0, len(big), 16384):
                yield big[i:i + 16384]

        _error(c.post("/jobs", content=chunks(), headers=JSON), 413, "payload_too_large")


def test_unknown_job_is_404_everywhere(stack: Stack) -> None:
    with stack.client() as c:
        for path in ("/jobs/0123456789abcdef0123456789abcdef", "/jobs/nope", "/jobs/" + "x" * 500,
                     "/jobs/0123456789abcdef0123456789abcdef/events"):
            _error(c.get(path), 404, "not_found")


def test_bad_last_event_id_is_422(stack: Stack) -> None:
    job = stack.submit({"steps": 1, "interval_ms": 0})
    for headers, path in (({"Last-Event-ID": "abc"}, job["links"]["events"]),
                          ({"Last-Event-ID": "-1"}, job["links"]["events"]),
                          ({"Last-Event-ID": "99999999999999999999999"}, job["links"]["events"]),
                          ({}, job["links"]["events"] + "?last_event_id=%C2%B2"),
                          ({}, job["links"]["events"] + "?last_event_id=1.5")):
        s = read_stream(stack.url, path, headers=headers)
        assert s.status == 422


@pytest.mark.parametrize(
    "query",
    ["status=done", "limit=0", "limit=501", "limit=ten", "limit=%C2%B2", "tag=nocolon", "tag=:v", "cursor=abc",
     "sort=asc"],
)
def test_bad_list_parameters_are_422(stack: Stack, query: str) -> None:
    with stack.client() as c:
        err = _error(c.get(f"/jobs?{query}"), 422, "validation_error")
    assert err["details"][0]["path"] == query.split("=")[0]


def test_unknown_route_and_method_are_json(stack: Stack, unchanged: None) -> None:
    with stack.client() as c:
        _error(c.get("/nope"), 404, "not_found")
        _error(c.put("/jobs"), 405, "method_not_allowed")
        _error(c.delete("/job-types"), 405, "method_not_allowed")


def test_a_client_that_hangs_up_mid_body_is_an_info_line_not_an_error(stack: Stack, unchanged: None) -> None:
    before = stack.log("api.log")
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"type\": \"demo\", ")
    wait_for(lambda: "client disconnected before sending the whole request body" in stack.log("api.log")[len(before):],
             10, "the API to notice the client went away")
    new = stack.log("api.log")[len(before):]
    assert "ERROR" not in new and "Traceback" not in new, new


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_a_body_not_sent_as_json_is_415_so_no_cross_site_form_can_submit(
    stack: Stack, unchanged: None, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with stack.client() as c:
        r = c.post("/jobs", content=b'{"type": "demo"}', headers=headers)
        _error(r, 415, "unsupported_media_type")


def test_json_with_a_charset_parameter_is_json(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/jobs", content=b'{"type": "demo", "payload": {"steps": 1, "interval_ms": 0}}',
                   headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 202, r.text


def test_json_nested_deeper_than_64_is_422_not_a_crash(stack: Stack, unchanged: None) -> None:
    deep = '{"type": "demo", "payload": {"a": ' + "[" * 500 + "]" * 500 + "}}"
    before = len(stack.log("api.log"))
    with stack.client() as c:
        r = c.post("/jobs", content=deep, headers=JSON)
    _error(r, 422, "validation_error")
    assert "64" in r.json()["error"]["message"]
    assert "Traceback" not in stack.log("api.log")[before:]


def test_dns_rebinding_with_auth_off_a_foreign_host_name_is_refused(stack: Stack, unchanged: None) -> None:
    with stack.client() as c:
        for host in ("rebind.evil.example", "rebind.evil.example:8000", "127.0.0.1.evil.example", "[::2]:80", ""):
            r = c.get("/jobs", headers={"Host": host})
            _error(r, 400, "invalid_host")
            assert "JOBCAST_ALLOWED_HOSTS" in r.json()["error"]["message"]
            _error(c.post("/jobs", json={"type": "demo"}, headers={"Host": host}), 400, "invalid_host")
        for host in (f"127.0.0.1:{stack.port}", "localhost", f"LOCALHOST:{stack.port}", "[::1]:8000"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_can_name_a_domain(make_stack) -> None:
    st: Stack = make_stack(workers=0, JOBCAST_ALLOWED_HOSTS="127.0.0.1,*.corp.example")
    with st.client() as c:
        assert c.get("/healthz", headers={"Host": "jobs.corp.example"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "corp.example.evil"}).status_code == 400
        assert c.get("/healthz", headers={"Host": "localhost"}).status_code == 400
