"""A job with a webhook: one signed POST when it ends, retried until the receiver takes it."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.harness import Stack, free_port, read_stream, wait_for

SECRET = "whsec_" + base64.b64encode(b"a test secret of 24 bytes").decode()


class Receiver:
    """A webhook receiver on loopback that answers with the statuses it is given, in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.got: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_a_webhook_is_signed_retried_after_a_500_and_shows_its_state(make_stack, receiver: Receiver) -> None:
    st: Stack = make_stack(workers=1, JOBCAST_WEBHOOK_SECRET=SECRET, JOBCAST_WEBHOOK_ALLOW_PRIVATE="1",
                           JOBCAST_WEBHOOK_RETRY_BASE_S="1")
    job = st.submit({"steps": 2, "interval_ms": 0}, webhook={"url": receiver.url})
    assert job["webhook"] == {"url": receiver.url, "state": "pending", "attempts": 0, "last_status": None}
    end = read_stream(st.url, job["links"]["events"]).events[-1]
    with st.client() as c:
        hook = wait_for(lambda: (h := c.get(f"/jobs/{job['id']}").json()["webhook"])["state"] == "delivered" and h,
                        30, "the webhook to be delivered")
    assert hook["attempts"] == 2 and hook["last_status"] == 200
    assert len(receiver.got) == 2
    headers, body = receiver.got[-1]
    payload = Webhook(SECRET).verify(body, headers)  # raises unless the signature is right
    assert payload["type"] == "job.completed" and payload["data"]["id"] == job["id"]
    assert payload["data"]["result"] == end.data["result"]
    assert receiver.got[0][0]["webhook-id"] == headers["webhook-id"]  # the same message, tried again


def test_a_webhook_to_a_private_address_is_refused_at_submit(make_stack) -> None:
    st: Stack = make_stack(workers=0, JOBCAST_WEBHOOK_SECRET=SECRET)
    with st.client() as c:
        for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest",
                    "http://localhost/hook", "ftp://example.com/x", "http://[::ffff:127.0.0.1]/hook",
                    "http://[64:ff9b::a01:203]/hook", "http://example.com:99999/", "http://[::1/", "http://host:abc/"):
            r = c.post("/jobs", json={"type": "demo", "webhook": {"url": url}})
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["details"][0]["path"] == "webhook.url"
    assert st.redis.r.zcard(f"{st.prefix}:owner:{{anonymous}}") == 0


def test_without_a_signing_secret_webhooks_are_refused(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/jobs", json={"type": "demo", "webhook": {"url": "https://example.com/hook"}})
    assert r.status_code == 422 and "JOBCAST_WEBHOOK_SECRET" in r.json()["error"]["message"]


def _verify_with_npm_standardwebhooks(deliveries: list[tuple[dict[str, str], bytes]]) -> list[dict]:
    """Each delivery's payload as the npm `standardwebhooks` package verifies it (an error if it does not)."""
    script = Path(__file__).parent / "node" / "verify_webhook.js"
    stdin = json.dumps({"secret": SECRET, "deliveries": [{"headers": h, "body": b.decode()} for h, b in deliveries]})
    out = subprocess.run(["node", str(script)], input=stdin, capture_output=True, text=True, check=True, timeout=30)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_no_webhook_after_a_manual_retry_is_fixed_every_end_gets_its_own_delivery(make_stack) -> None:
    receiver = Receiver([])
    try:
        st: Stack = make_stack(workers=1, JOBCAST_WEBHOOK_SECRET=SECRET, JOBCAST_WEBHOOK_ALLOW_PRIVATE="1")
        job = st.submit({"steps": 2, "interval_ms": 0, "fail_attempts": 1}, webhook={"url": receiver.url})
        failed = read_stream(st.url, job["links"]["events"]).events[-1]
        assert failed.event == "failed"
        wait_for(lambda: len(receiver.got) == 1, 30, "the job.failed delivery")
        with st.client() as c:
            wait_for(lambda: c.get(f"/jobs/{job['id']}").json()["webhook"]["state"] == "delivered", 10,
                     "the failed delivery to show")
            retried = c.post(f"/jobs/{job['id']}/retry")
            assert retried.status_code == 202
        done = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(failed.id)}).events[-1]
        assert done.event == "completed"
        # (events carry no webhook URL: a stream token's holder reads them)
        assert done.data["webhook"] == {"state": "pending", "attempts": 0, "last_status": None}
        wait_for(lambda: len(receiver.got) == 2, 30, "the job.completed delivery")
        with st.client() as c:
            hook = wait_for(lambda: (h := c.get(f"/jobs/{job['id']}").json()["webhook"])["state"] == "delivered"
                            and h, 10, "the webhook field to describe the latest delivery")
        assert hook == {"url": receiver.url, "state": "delivered", "attempts": 1, "last_status": 200}
        payloads = _verify_with_npm_standardwebhooks(receiver.got)
        assert [p.get("type") for p in payloads] == ["job.failed", "job.completed"], payloads
        assert [p["data"]["attempt"] for p in payloads] == [1, 2]
        ids = [h["webhook-id"] for h, _ in receiver.got]
        assert ids[0] != ids[1], "each end is a message of its own"
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
