"""The `jobcast` command: a thin layer over the library. Every option has an environment variable.

Server side: `serve`, `worker`, `dev` (here). Client side: `submit`, `status`, `jobs`, `cancel`,
`retry` (`cli/terminal.py`, through `jobcast.Client`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from jobcast.cli.terminal import add_client_commands
from jobcast.cli.terminal import run as run_client_command
from jobcast.errors import ConfigError
from jobcast.logs import setup_logging
from jobcast.settings import ClientSettings, Settings
from jobcast.store.connections import RedisFactory
from jobcast.web.metrics import fresh_multiprocess_dir

__all__ = ["app_from_env", "main"]

log = logging.getLogger("jobcast.cli")


def _factory(settings: Settings) -> RedisFactory:
    return RedisFactory(settings.redis_target)


def _serve(settings: Settings, factory: RedisFactory, workers: int = 1) -> None:
    import uvicorn

    from jobcast.web.app import create_app

    if workers > 1:
        os.environ.setdefault("REDIS_URL", factory.url or "")
        with contextlib.ExitStack() as stack:
            # /metrics adds up the processes' own figures through files in one directory (web/metrics.py),
            # which must start empty: figures of earlier runs would be added in.
            path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if not path:
                path = stack.enter_context(tempfile.TemporaryDirectory(prefix="jobcast-metrics-"))
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
            fresh_multiprocess_dir(path)
            uvicorn.run("jobcast.cli:app_from_env", factory=True, host=settings.host, port=settings.port,
                        workers=workers, log_level=settings.log_level, log_config=None,
                        forwarded_allow_ips=settings.forwarded_allow_ips, timeout_graceful_shutdown=5)
        return
    # log_config=None: uvicorn's loggers go through ours (logs.py), JSON lines included.
    config = uvicorn.Config(create_app(settings, factory), host=settings.host, port=settings.port,
                            log_level=settings.log_level, log_config=None,
                            forwarded_allow_ips=settings.forwarded_allow_ips, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


def app_from_env() -> object:
    """The app for `uvicorn --factory jobcast.cli:app_from_env` (and `jobcast serve --workers N`)."""
    from jobcast.web.app import create_app

    settings = Settings.from_env()
    setup_logging(settings)  # a fresh process of uvicorn's: its logging is not set up yet
    return create_app(settings, _factory(settings))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.with_(host=args.host or settings.host, port=args.port or settings.port)
    _serve(settings, _factory(settings), args.workers or settings.api_workers)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from jobcast.worker import SimpleWorker, Worker, run_worker
    from jobcast.worker.runtime import Runtime

    queues = [q.strip() for q in (args.queues or f"{settings.queue},{settings.webhook_queue}").split(",") if q.strip()]
    simple = args.simple or settings.worker_simple
    return run_worker(Runtime.build(settings, _factory(settings)), SimpleWorker if simple else Worker,
                      name=args.name or settings.worker_name, queues=queues, burst=args.burst or settings.worker_burst,
                      logging_level=settings.log_level.upper())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def embedded_redis() -> Iterator[RedisFactory]:
    """A private Redis for `jobcast dev`: a `redis-server` child if one is installed, else in memory."""
    binary = shutil.which("redis-server")
    if binary is None:
        import fakeredis

        log.warning("no redis-server installed: using an in-memory Redis inside this process (data is lost on exit)")
        yield RedisFactory(fake_server=fakeredis.FakeServer())
        return
    with tempfile.TemporaryDirectory(prefix="jobcast-redis-") as tmp:
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        factory = RedisFactory(f"redis://127.0.0.1:{port}/0")
        client = factory.sync()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ConfigError(f"the private redis-server ({binary}) did not start on port {port}") from None
                time.sleep(0.05)
        log.info("started a private redis-server on 127.0.0.1:%d", port)
        try:
            yield factory
        finally:
            client.close()
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.contextmanager
def fake_llm_server() -> Iterator[str]:
    """The stand-in model (`jobcast.llm.fake`) on a free port in a thread; yields its base URL."""
    import uvicorn

    from jobcast.llm.fake import create_fake_llm

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_fake_llm(), host="127.0.0.1", port=port, log_level="warning",
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="stand-in-model", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def _llm_types(settings: Settings) -> list[str]:
    from jobcast.registry import load_job_types

    return [t.name for t in load_job_types(settings.job_modules) if t.requires_model]


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from jobcast.worker import ThreadWorker, make_worker
    from jobcast.worker.runtime import Runtime

    settings = settings.with_(host=args.host or settings.host, port=args.port or settings.port)
    with contextlib.ExitStack() as stack:
        factory = RedisFactory(settings.redis_url) if settings.redis_url else stack.enter_context(embedded_redis())
        stand_in = not settings.model  # a configured model always wins (or says what it still lacks)
        if stand_in:
            settings = settings.with_(openai_base_url=stack.enter_context(fake_llm_server()), model="stand-in",
                                      openai_api_key="not-needed", stand_in_model=True)
        workers = settings.dev_workers if args.workers is None else args.workers
        for i in range(workers):
            worker = make_worker(Runtime.build(settings, factory), ThreadWorker, name=f"dev-{os.getpid()}-{i}",
                                 queues=[settings.queue, settings.webhook_queue])
            threading.Thread(target=worker.work, kwargs={"logging_level": settings.log_level.upper()},
                             name=worker.name, daemon=True).start()
        print(f"jobcast is running at http://{settings.host}:{settings.port}/ with {workers} workers "
              f"(Ctrl-C stops it)", flush=True)
        if stand_in:
            print(f"STAND-IN MODEL: the LLM job types ({', '.join(_llm_types(settings))}) run on a stand-in with "
                  "made-up answers, paced like a real model. For a real one set JOBCAST_MODEL, and OPENAI_API_KEY "
                  "or OPENAI_BASE_URL (Ollama, vLLM, ...).", flush=True)
        if factory.url is not None:
            if not (settings.dashboard_user and settings.dashboard_password):
                # The dashboard is never open without credentials: make up a pair for this run.
                settings = settings.with_(dashboard_user="jobcast", dashboard_password=secrets.token_urlsafe(12))
            print(f"rq-dashboard: http://{settings.host}:{settings.port}/dashboard/ (user {settings.dashboard_user!r}, "
                  f"password {settings.dashboard_password!r})", flush=True)
        _serve(settings, factory)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobcast", description="Background jobs with live progress.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (uvicorn)")
    _bind_options(serve)
    serve.add_argument("--workers", type=int, help="API processes (JOBCAST_API_WORKERS, default 1)")
    serve.set_defaults(run=cmd_serve)

    worker = sub.add_parser("worker", help="run an RQ worker for jobcast jobs")
    worker.add_argument("--queues", help="comma-separated queues to work on, first first (default: JOBCAST_QUEUE "
                                         "and its webhook queue, 'default,default-webhooks')")
    worker.add_argument("--burst", action="store_true",
                        help="quit once the queue is empty (JOBCAST_WORKER_BURST=1)")
    worker.add_argument("--simple", action="store_true",
                        help="run jobs in the worker process instead of a forked one (JOBCAST_WORKER_SIMPLE=1)")
    worker.add_argument("--name",
                        help="the worker's name (JOBCAST_WORKER_NAME, default RQ's)")
    worker.set_defaults(run=cmd_worker)

    dev = sub.add_parser("dev", help="run everything in one process, with a private Redis if REDIS_URL is unset "
                                     "and a stand-in model with made-up answers if JOBCAST_MODEL is unset")
    _bind_options(dev)
    dev.add_argument("--workers", type=int, help="in-process workers (JOBCAST_DEV_WORKERS, default 2)")
    dev.set_defaults(run=cmd_dev)

    add_client_commands(sub, ClientSettings.from_env())
    return parser


def _bind_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (JOBCAST_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (JOBCAST_PORT, default 8000)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(args, "client_command"):  # submit, status, jobs, cancel, retry: a client of a running API
        return run_client_command(args.client_command, args)
    try:
        settings = Settings.from_env()
        setup_logging(settings)
        code: int = args.run(settings, args)
        return code
    except ConfigError as exc:
        print(f"jobcast: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly and re-raised it
        return 0


if __name__ == "__main__":
    sys.exit(main())
