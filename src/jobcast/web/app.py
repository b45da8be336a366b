"""`create_app(settings)`: the Starlette application, its lifespan and its one error handler."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobcast.errors import JobcastError, Unavailable
from jobcast.registry import Registry, load_job_types
from jobcast.settings import Settings
from jobcast.store.connections import RedisFactory
from jobcast.web import api, sets
from jobcast.web.dashboard import dashboard_app, mount_path
from jobcast.web.metrics import process_exits
from jobcast.web.openapi import openapi_document
from jobcast.web.services import Services
from jobcast.web.sse import StreamTransport

__all__ = ["JobcastApp", "create_app"]

log = logging.getLogger("jobcast.app")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _jobcast_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobcastError)
    return api.JSON(exc.to_json(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {404: f"no route {request.url.path!r}; GET /openapi.json lists the API's routes.",
               405: f"{request.method} is not allowed on {request.url.path!r}."}.get(exc.status_code, str(exc.detail))
    body = {"error": {"code": code, "message": message, "details": None}}
    return api.JSON(body, status_code=exc.status_code, headers=exc.headers)


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("Redis unreachable while serving %s %s: %s", request.method, request.url.path, exc)
    return await _jobcast_error(request, Unavailable())


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client went away before its request body was in: nothing to answer, nothing wrong here."""
    log.info("client disconnected before sending the whole request body (%s %s); nothing done",
             request.method, request.url.path)
    return Response(status_code=400)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    body = {"error": {"code": "internal_error",
                      "message": "an unexpected error occurred; the server log has the details.",
                      "details": None}}
    return api.JSON(body, status_code=500)


def _end_streams_on_exit(services: Services) -> Callable[[], None]:
    """On SIGTERM or SIGINT, end every open event stream at once, then let the server stop.

    The server waits for open connections to close before it runs the lifespan's
    shutdown, so without this a stream could hold a stop until its time-out.
    Streams resume with Last-Event-ID, so ending them early loses nothing. Only
    possible in the main thread (where the server installed its handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(services.hub.close_all)
        chained = previous[signal.Signals(sig)]
        if callable(chained):
            chained(sig, frame)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore


STATIC = Path(__file__).parent / "static"


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _by_method(**endpoints: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """One route for a path with several methods, so that a 405's `Allow` lists all of them."""

    async def endpoint(request: Request) -> Response:
        return await endpoints["GET" if request.method == "HEAD" else request.method](request)

    return endpoint


class _Streaming:
    """An endpoint whose response can stay open for hours (an event stream), as a plain ASGI app.

    Starlette runs a function endpoint inside two more coroutines and an exception wrapper of its own
    (`request_response`), which an open stream keeps alive all along: 3.7 KiB of an idle stream's 21 (by
    tracemalloc). An error raised before the response starts reaches the app's exception handlers all the
    same, through Starlette's `ExceptionMiddleware`; the route still answers only its methods.
    """

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


async def _openapi(request: Request) -> Response:
    return api.JSON(request.app.state.openapi)


class JobcastApp(StreamTransport):
    """The API as an ASGI app; `lifespan` lets an app it is mounted in run its start and stop."""

    def lifespan(self, host: object = None) -> AbstractAsyncContextManager[None]:
        """jobcast's start-up and shutdown (Redis clients, the event hub, the janitor), for the app this
        one is mounted in, which Starlette does not run for it: `FastAPI(lifespan=jobcast_app.lifespan)`,
        or `async with jobcast_app.lifespan(): ...` inside a lifespan of your own."""
        return cast(AbstractAsyncContextManager[None], self.router.lifespan_context(self))


def create_app(settings: Settings | None = None, factory: RedisFactory | None = None,
               registry: Registry | None = None) -> JobcastApp:
    """The jobcast API for `settings` (default: the environment's); Redis comes from `factory` (default:
    `settings.redis_url`).

    Run it as it is (`jobcast serve`), or mount it in an app of your own, whose lifespan then runs
    jobcast's (`app.lifespan`): links, the page and `jobcast.js` carry the mount's prefix.

        jobcast_app = create_app()
        app = FastAPI(lifespan=jobcast_app.lifespan)
        app.mount("/jobcast", jobcast_app)
    """
    settings = settings or Settings.from_env()
    if factory is None:
        factory = RedisFactory(settings.redis_target)
    registry = registry or load_job_types(settings.job_modules)

    @asynccontextmanager
    async def lifespan(app: StreamTransport) -> AsyncIterator[None]:
        services = Services.build(settings, factory, registry)
        app.state.services = services
        await services.start()
        if not services.auth.enabled:
            log.warning("AUTH IS OFF: no JOBCAST_API_KEYS, so every request acts as 'anonymous' and sees every "
                        "job. Keep this server on 127.0.0.1 (the default JOBCAST_HOST), or set "
                        "JOBCAST_API_KEYS and JOBCAST_SECRET.")
        else:
            log.info("API keys on: %d owners", len(set(settings.api_keys.values())))
        restore = _end_streams_on_exit(services)
        try:
            yield
        finally:
            restore()
            await services.stop()
            process_exits()

    routes = [
        Route("/jobs", _by_method(GET=api.list_jobs, POST=api.submit_job), methods=["GET", "POST"]),
        Route("/jobs/{job_id}", _by_method(GET=api.get_job, DELETE=api.delete_job), methods=["GET", "DELETE"]),
        Route("/jobs/{job_id}/cancel", api.cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/retry", api.retry_job, methods=["POST"]),
        Route("/jobs/{job_id}/events", _Streaming(api.job_events), methods=["GET"]),
        Route("/events", _Streaming(sets.set_events), methods=["GET"]),
        Route("/job-types", api.job_types, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/", _page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    dashboard = dashboard_app(settings.with_(redis_url=factory.url))
    if dashboard is not None:
        routes.append(Mount("/dashboard", dashboard))
    handlers = {
        JobcastError: _jobcast_error,
        HTTPException: _http_error,
        RedisConnectionError: _redis_down,
        RedisTimeoutError: _redis_down,
        ConnectionError: _redis_down,
        ClientDisconnect: _client_gone,
        Exception: _internal_error,
    }
    middleware = [Middleware(HostGuard, allowed=settings.hosts_allowed()), Middleware(SecurityHeaders)]
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "If-None-Match"],
            expose_headers=["Location", "ETag", "Retry-After", "Idempotent-Replayed"], max_age=600,
        ))
    app = JobcastApp(routes=routes, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
    app.state.openapi = openapi_document(registry, settings)
    return app


SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class HostGuard:
    """Answers `400 invalid_host` (JSON) to a request whose `Host` is not one of `Settings.hosts_allowed()`.

    With auth off, this is what keeps a web page on a name of its own that resolves to this machine (DNS
    rebinding) from reading the server: the browser sends that name as `Host`. (Starlette's
    TrustedHostMiddleware does the same check, but answers in plain text.)
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.names = {h for h in allowed if not h.startswith("*.")}
        self.suffixes = tuple(h[1:] for h in allowed if h.startswith("*."))

    def allows(self, host_header: str) -> bool:
        host = host_header.lower()
        host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        return host in self.names or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        body = {"error": {"code": "invalid_host", "message": f"this server does not answer to the host {host!r}; "
                          "add it to JOBCAST_ALLOWED_HOSTS if it is one of its names.", "details": None}}
        response = api.JSON(body, status_code=400)
        await response(scope, receive, send)


class SecurityHeaders:
    """Adds the page's security headers to every response (harmless on JSON and event streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # The dashboard sets a CSP of its own (a nonce for its inline scripts: dashboard.py); the other headers still.
        headers = SECURITY_HEADERS[1:] if mount_path(scope).startswith("/dashboard") else SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
