"""Real processes for end-to-end tests: redis-server, the API under uvicorn, `worker.py` workers.

Everything binds to 127.0.0.1 on free ports, and is waited on until it answers,
never slept on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import redis
import redis.sentinel

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except (httpx.TransportError, redis.ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server on a free port; it can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, persistent: bool = False, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it (scripts/system-packages)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.auth = ["--requirepass", password] if password else []
        self.r = redis.Redis.from_url(self.url)
        """A client for tests to look inside with."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *self.persistence,
             "--dir", str(self.workdir), *self.auth],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.r.ping, 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.r.close()


class SentinelRedis:
    """A primary, its replica and three Sentinels watching them (quorum 2), all private, on free ports.

    `url` is the `redis+sentinel://` URL jobcast is given; `r` follows the primary the Sentinels name (as
    jobcast does). A Sentinel takes the primary for down after `down_after_ms` without an answer.
    """

    SERVICE = "jobcast"

    def __init__(self, workdir: Path, down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.primary = RedisServer(workdir / "a")
        self.replica = RedisServer(workdir / "b")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.down_after_ms = down_after_ms
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{self.SERVICE}/0"
        self._watchers = [redis.Redis(port=port, socket_timeout=2) for port in self.sentinel_ports]
        self.r = redis.sentinel.Sentinel([("127.0.0.1", p) for p in self.sentinel_ports],
                                         socket_timeout=2).master_for(self.SERVICE)
        """A client for tests to look inside with, on whichever server is the primary now."""

    def start(self) -> None:
        for server in (self.primary, self.replica):
            server.workdir.mkdir(parents=True, exist_ok=True)
        self.primary.start()
        self.replica.start()
        self.replica.r.replicaof("127.0.0.1", self.primary.port)
        wait_for(lambda: self.replica.r.info("replication")["master_link_status"] == "up", 10, "the replica to sync")
        for i, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
            )
            self.sentinels.append(subprocess.Popen([self.primary.binary, str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL))
        # Ready for a failover once each Sentinel knows the replica and the two other Sentinels.
        wait_for(lambda: all(w.sentinel_master(self.SERVICE)["num-other-sentinels"] == 2
                             and w.sentinel_slaves(self.SERVICE) for w in self._watchers), 30,
                 "the Sentinels to know each other and the replica")

    def primary_port(self) -> int:
        """The primary's port, as the Sentinels say now."""
        _, port = self._watchers[0].sentinel_get_master_addr_by_name(self.SERVICE)
        return int(port)

    def close(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait()
        for watcher in self._watchers:
            watcher.close()
        self.primary.close()
        self.replica.close()


@dataclass
class Dev:
    """A running `jobcast dev` (what `make run` runs): its URL and its output so far."""

    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def running_dev(workdir: Path, **env: str) -> Iterator[Dev]:
    """`jobcast dev` as a newcomer runs it: no JOBCAST_ or REDIS_ variables but `env`, on a free port;
    stopped with Ctrl-C (SIGINT), which must end it with 0."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_", "OPENAI_"))}
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "dev.log"
    proc = _spawn([sys.executable, "-m", "jobcast", "dev"], {**clean, "JOBCAST_PORT": str(port), **env}, log)
    dev = Dev(f"http://127.0.0.1:{port}", log)
    try:
        with httpx.Client(base_url=dev.url, timeout=5) as c:
            wait_for(lambda: _answers(c, "/readyz"), 30, f"jobcast dev to be ready ({log})")
        yield dev
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, dev.output()


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


STOP_GRACE_S = 2.0
"""How long a stack's processes get to exit by themselves at the end of a test (an idle one takes about 1 s);
the tests of graceful exits wait on their own."""


@dataclass
class Stack:
    """An API server and workers over one Redis, with their own key prefix and queue."""

    redis: RedisServer
    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_command: tuple[str, ...] = ("-m", "jobcast", "serve")
    """What the API process runs (`python` and these): `jobcast serve`, or a bench's variant of it."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def queue(self) -> str:
        return f"q-{self.prefix}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_"))}
        env.update({
            "REDIS_URL": self.redis.url, "JOBCAST_PORT": str(self.port), "JOBCAST_HOST": "127.0.0.1",
            "JOBCAST_PREFIX": self.prefix, "JOBCAST_QUEUE": self.queue, "JOBCAST_PING_MS": "1000",
            "JOBCAST_RETRY_BASE_MS": "300", "JOBCAST_HEARTBEAT_S": "4",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.env_overrides)
        return env

    def start_api(self) -> None:
        """Start the API and wait for its /healthz; a failure says why, with the end of its log."""
        api = self.api = _spawn([sys.executable, *self.api_command], self.env(), self.workdir / "api.log")
        with self.client(timeout=1) as c:
            try:
                got = wait_for(lambda: "exited" if api.poll() is not None else c.get("/healthz").status_code == 200,
                               20, "the API's /healthz")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; api.log ends:\n{self.log('api.log')[-3000:]}") from None
        if got == "exited":
            raise AssertionError(f"the API exited ({api.returncode}) as it started; api.log ends:\n"
                                 f"{self.log('api.log')[-3000:]}")

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = _spawn([sys.executable, "worker.py"], self.env(), self.workdir / f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def wait_workers(self, count: int) -> None:
        # Each worker imports jobcast, RQ and the job modules (~1 s of CPU on a slow core), all at once.
        with self.client() as c:
            wait_for(lambda: c.get("/readyz").json()["workers"] >= count, 10 + 2 * count,
                     f"{count} workers to register")

    def stop_api(self, sig: int = signal.SIGTERM) -> None:
        if self.api is not None:
            self.api.send_signal(sig)
            self.api.wait(timeout=15)
            self.api = None

    def stop(self) -> None:
        """SIGTERM the API and workers, and SIGKILL (with their sessions) what has not exited within
        `STOP_GRACE_S`: a worker in the middle of a job a test left running would finish it first."""
        procs = [*self.workers, *([self.api] if self.api else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self.workers.clear()
        self.api = None

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 10), **kw)

    def submit(self, payload: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/jobs", json={"type": "demo", "payload": payload or {}, **body})
            assert r.status_code == 202, r.text
            job: dict[str, Any] = r.json()
            return job

    def log(self, name: str) -> str:
        return (self.workdir / name).read_text(errors="replace")


@contextmanager
def running_stack(redis_server: RedisServer, workdir: Path, workers: int = 2, *,
                  api_command: tuple[str, ...] = Stack.api_command, **env: str) -> Iterator[Stack]:
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(redis_server, workdir, env_overrides=env, api_command=api_command)
    try:
        stack.start_api()
        for _ in range(workers):
            stack.start_worker()
        if workers:
            stack.wait_workers(workers)
        yield stack
    finally:
        stack.stop()


# -- a raw server-sent events reader --------------------------------------------


@dataclass
class Event:
    id: int | None
    event: str
    data: Any

    @property
    def terminal(self) -> bool:
        return self.event in ("completed", "failed", "canceled")


@dataclass
class Stream:
    """What one SSE response said, as read off the wire."""

    status: int
    headers: httpx.Headers
    retry: int | None = None
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    first_line: str | None = None
    ended_by_server: bool = False


def parse_lines(lines: Iterator[str], stream: Stream, stop: Callable[[Stream], bool]) -> None:
    """Parse the WHATWG event-stream format, appending to `stream` until `stop` says so or the body ends."""
    fields: dict[str, str] = {}
    for line in lines:
        if stream.first_line is None:
            stream.first_line = line
        if line == "":
            if "data" in fields:
                stream.events.append(Event(
                    int(fields["id"]) if "id" in fields else None,
                    fields.get("event", "message"),
                    orjson.loads(fields["data"]),
                ))
            fields = {}
            if stop(stream):
                return
            continue
        if line.startswith(":"):
            stream.comments.append(line[1:].strip())
            if stop(stream):
                return
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "retry":
            stream.retry = int(value)
        elif name == "data":
            fields["data"] = fields["data"] + "\n" + value if "data" in fields else value
        else:
            fields[name] = value
    stream.ended_by_server = True


def read_stream(
    base_url: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    stop: Callable[[Stream], bool] = lambda s: False,
    timeout: float = 30,
) -> Stream:
    """GET an event stream and read it until the server ends it or `stop(stream)` is true."""
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout)) as c:
        with c.stream("GET", path, headers=headers or {}) as r:
            stream = Stream(r.status_code, r.headers)
            if r.status_code == 200:
                parse_lines(r.iter_lines(), stream, stop)
            else:
                r.read()
            return stream


def count_events(n: int) -> Callable[[Stream], bool]:
    return lambda s: len(s.events) >= n


# -- many raw readers at once ----------------------------------------------------


def target(link: str) -> str:
    """What a raw HTTP request line asks for to follow `link` (an absolute URL): its path and query."""
    url = urlsplit(link)
    return f"{url.path}?{url.query}" if url.query else url.path


async def read_raw(port: int, link: str, *, timeout: float = 60) -> list[tuple[int | None, str, bytes]]:
    """GET an event stream (`link`: a URL or a path) over a bare socket (HTTP/1.1, chunked) and return its
    events as (id, name, data), until the server ends it or a terminal event arrives."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target(link)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    events: list[tuple[int | None, str, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
            text = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    return events
                text += (await reader.readexactly(size + 2))[:-2]
                *blocks, text = text.split(b"\n\n")
                for block in blocks:
                    fields = dict(line.partition(b": ")[::2] for line in block.split(b"\n"))
                    if b"data" in fields:
                        eid = fields.get(b"id")
                        events.append((int(eid) if eid else None, fields.get(b"event", b"message").decode(),
                                       fields[b"data"]))
                        if events[-1][1] in ("completed", "failed", "canceled"):
                            return events
    finally:
        writer.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- a set stream (GET /events) off the wire -------------------------------------


@dataclass
class SetEvent:
    id: str | None
    event: str
    data: dict[str, Any]


@dataclass
class Read:
    status: int
    events: list[SetEvent] = field(default_factory=list)
    ended_by_server: bool = False

    @property
    def cursor(self) -> str | None:
        return next((e.id for e in reversed(self.events) if e.id is not None), None)


def read_set(base: str, path: str, *, cursor: str | None = None, stop: int | None = None,
             headers: dict[str, str] | None = None, timeout: float = 60,
             on_event: Callable[[Read], None] = lambda r: None) -> Read:
    """Read a set stream as the wire has it (ids kept as the opaque strings they are), until the server ends it
    or `stop` events have come."""
    sent = dict(headers or {})
    if cursor is not None:
        sent["Last-Event-ID"] = cursor
    with httpx.Client(base_url=base, timeout=httpx.Timeout(timeout)) as c, c.stream("GET", path, headers=sent) as r:
        read = Read(r.status_code)
        if r.status_code != 200:
            r.read()
            return read
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "":
                if "data" in fields:
                    read.events.append(SetEvent(fields.get("id"), fields.get("event", "message"),
                                                orjson.loads(fields["data"])))
                    on_event(read)
                    if stop is not None and len(read.events) >= stop:
                        return read
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        read.ended_by_server = True
        return read
