"""The webhook address guard against the attacks a review found, with a resolver the test controls and a real
receiver on loopback that must never be reached. No packet leaves loopback: a connection to any other
address is refused by the patched `socket.create_connection` (and recorded)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from redis import Redis

from jobcast import webhooks
from jobcast.errors import ValidationFailed
from jobcast.registry import Registry
from jobcast.settings import Settings
from jobcast.store import Store
from jobcast.store.record import pending_webhook
from jobcast.worker.runtime import Runtime, running

PUBLIC = "93.184.216.34"
SECRET = "whsec_dGhlIHRlc3Qgc2VjcmV0IG9mIDI0IGJ5dGVz"


class Receiver:
    """A bare HTTP receiver on 127.0.0.1 that answers 200 to anything and notes each connection."""

    def __init__(self, answer: Callable[[socket.socket], None] | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.answer = answer or (lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                try:
                    self.answer(conn)
                except OSError:
                    pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.sock.close()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the test resolves as it likes: `resolver[name] = [first answer, second answer, ...]`."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        # as Python's socket module does: a str host is encoded with its own (IDNA 2003) codec
        name = host.decode() if isinstance(host, bytes) else host.encode("idna").decode()
        if name in answers:
            queue = answers[name]
            address = queue.pop(0) if len(queue) > 1 else queue[0]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def dialed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a connection was attempted to; only loopback ones are really made."""
    seen: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append((address[0], address[1]))
        if address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"the test lets no connection leave loopback ({address[0]})")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return seen


def _settings(**kw: Any) -> Settings:
    return Settings(prefix="t", webhook_secret=SECRET, **kw)


def test_a_name_whose_idna_2003_and_2008_forms_differ_is_checked_as_httpx_sends_it(
    resolver: dict[str, list[str]], receiver: Receiver
) -> None:
    resolver["ss.example"] = [PUBLIC]  # what Python's own IDNA 2003 codec makes of "ß.example"
    resolver["xn--zca.example"] = ["127.0.0.1"]  # what httpx (IDNA 2008) connects to
    with pytest.raises(ValidationFailed) as refused:
        webhooks.check_url(f"http://ß.example:{receiver.port}/hook", _settings())
    assert "not a public address" in refused.value.message and "127.0.0.1" not in refused.value.message
    assert receiver.connections == 0


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]", "[::7f00:1]",
                                  "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "127.0.0.1", "[::1]", "10.0.0.1",
                                  "169.254.169.254", "0.0.0.0"])
def test_addresses_that_are_or_embed_non_public_ipv4_are_refused(host: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        webhooks.check_url(f"http://{host}/hook", _settings())
    assert "not a public address" in refused.value.message


def test_public_addresses_pass_and_are_pinned(resolver: dict[str, list[str]]) -> None:
    resolver["hooks.example"] = [PUBLIC]
    target = webhooks.check_url("https://Hooks.Example:8443/in?x=1", _settings())
    assert (target.url.host, target.url.port, target.host, target.host_header) == (
        PUBLIC, 8443, "hooks.example", "hooks.example:8443")
    assert webhooks.check_url("http://[64:ff9b::808:808]/", _settings()).url.host == "64:ff9b::808:808"


@pytest.mark.parametrize("url", ["http://example.com:99999/", "http://[::1/", "http://host:abc/", "ftp://x/",
                                 "http://:80/"])
def test_malformed_urls_are_refused_not_crashed_on(url: str) -> None:
    with pytest.raises(ValidationFailed):
        webhooks.check_url(url, _settings())


@pytest.fixture
def make_runtime(redis: Redis) -> Iterator[Callable[..., Runtime]]:
    """The worker's runtime for `deliver`, with these settings."""
    with contextlib.ExitStack() as made:

        def make(**settings: Any) -> Runtime:
            s = _settings(**settings)
            rt = Runtime(s, Store(redis, s), Registry())
            made.enter_context(running(rt))
            return rt

        yield make


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


def _ended_job_with_hook(rt: Runtime, new_job: Callable[..., dict[str, str]], url: str) -> str:
    job = new_job(running=False, webhook=pending_webhook(url))
    rt.store.redis.hset(rt.store.keys.job(job["id"]), mapping={"status": "completed"})
    return job["id"]


def test_dns_rebinding_cannot_send_the_post_to_loopback(
    runtime: Runtime, new_job: Any, resolver: dict[str, list[str]], dialed: list[tuple[str, int]], receiver: Receiver
) -> None:
    resolver["rebind.example"] = [PUBLIC, "127.0.0.1"]  # public when checked, loopback if asked again
    job_id = _ended_job_with_hook(runtime, new_job, f"http://rebind.example:{receiver.port}/hook")
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.deliver(job_id, 1)
    assert dialed == [(PUBLIC, receiver.port)], "the POST goes to the address that was vetted, and only there"
    assert receiver.connections == 0
    hook = orjson.loads(runtime.store.load(job_id)["webhook"])  # type: ignore[index]
    assert hook["state"] == "pending" and hook["last_status"] is None


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(
    make_runtime: Callable[..., Runtime], new_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):
            conn.sendall(b"x-slow: 1\r\n")
            time.sleep(0.2)

    slow = Receiver(drip)
    monkeypatch.setattr(webhooks, "DELIVERY_DEADLINE_S", 1.0)
    runtime = make_runtime(webhook_allow_private=True)
    job_id = _ended_job_with_hook(runtime, new_job, f"http://127.0.0.1:{slow.port}/hook")
    t0 = time.monotonic()
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.deliver(job_id, 1)
    assert time.monotonic() - t0 < 3
    slow.sock.close()


def test_a_huge_answer_is_not_read(make_runtime: Callable[..., Runtime], new_job: Any) -> None:
    sent = []
    stopped = threading.Event()

    def flood(conn: socket.socket) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 419430400\r\n\r\n")
            chunk = b"x" * 65536
            for _ in range(6400):  # 400 MiB, unless the other side hangs up
                conn.sendall(chunk)
                sent.append(len(chunk))
        finally:
            stopped.set()

    big = Receiver(flood)
    runtime = make_runtime(webhook_allow_private=True)
    job_id = _ended_job_with_hook(runtime, new_job, f"http://127.0.0.1:{big.port}/hook")
    webhooks.deliver(job_id, 1)
    hook = orjson.loads(runtime.store.load(job_id)["webhook"])  # type: ignore[index]
    assert hook["state"] == "delivered" and hook["last_status"] == 200
    assert stopped.wait(10), "the receiver was never hung up on"
    assert sum(sent) < 64 * 1024 * 1024, "the body was read (or buffered) far past what a status needs"
    big.sock.close()
