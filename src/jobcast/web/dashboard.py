"""rq-dashboard at `/dashboard/`, inside the API's own server, behind its own HTTP Basic credentials.

rq-dashboard is a Flask (WSGI) app; a2wsgi runs it inside the ASGI app. It shows
RQ's view of the same jobs: a job's first RQ job id is its jobcast id (later
trips through RQ are `{id}-{run}`). It is mounted only with credentials
(`JOBCAST_DASHBOARD_USER` / `_PASSWORD`; `jobcast dev` makes up a pair and
prints it), and three guards stand around it:

- HTTP Basic auth compared in constant time (rq-dashboard's own compares in
  plain time and registers on a module-level blueprint).
- Cross-site request forgery: a request that changes something (every method
  but GET and HEAD, and the GET routes that act) is refused unless the browser
  says it comes from the dashboard's own origin (`Sec-Fetch-Site:
  same-origin`, or an `Origin` of this host). Cached Basic credentials would
  otherwise let any page an operator visits empty a queue.
- A strict Content-Security-Policy: rq-dashboard renders job data (an
  exception's text, which may quote a payload) into the page unescaped, so its
  scripts run by a nonce given to the `<script>` tags of the page itself (which
  Jinja renders with escaping: no data can add one), no inline handler runs,
  and nothing loads from elsewhere. (`'unsafe-eval'` stays: its underscore.js
  templates compile with `new Function`; that runs template text, not data.)
  The worker also keeps markup out of the exception text it hands RQ
  (`worker/workers.py`).
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobcast.settings import Settings

__all__ = ["dashboard_app", "mount_path"]

_ACTING_GET = re.compile(r"^/requeue/")
"""rq-dashboard's GET routes that change something (relative to the mount)."""

_SCRIPT_TAG = re.compile(rb"<script(?=[\s>])")


def mount_path(scope: Scope) -> str:
    """The request's path relative to where the app serving it is mounted (its `root_path`)."""
    path: str = scope["path"]
    return path[len(scope.get("root_path", "")):]


async def _refuse(send: Send, status: int, message: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])]})
    await send({"type": "http.response.body", "body": message})


class _BasicAuth:
    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app = app
        self.expected = ("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope.get("headers", [])).get(b"authorization", b"")
        if scope["type"] == "http" and not hmac.compare_digest(given, self.expected):
            await _refuse(send, 401, b"The dashboard needs its own credentials (JOBCAST_DASHBOARD_USER / _PASSWORD).\n",
                          [(b"www-authenticate", b'Basic realm="jobcast dashboard"')])
            return
        await self.app(scope, receive, send)


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        return site == b"same-origin"
    origin = headers.get(b"origin")
    if origin is None:
        return False  # no word from a browser that it comes from here: not enough to act on
    return urlsplit(origin.decode("latin-1")).netloc.lower() == headers.get(b"host", b"").decode("latin-1").lower()


class _Guard:
    """Refuses cross-site requests that act, and gives every page a nonce-based CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        path = mount_path(scope)
        acts = scope["method"] not in ("GET", "HEAD") or bool(_ACTING_GET.match(path))
        if acts and not _same_origin(headers):
            await _refuse(send, 403, b"The dashboard only acts on requests from its own pages (cross-site request "
                                     b"refused).\n")
            return
        nonce = secrets.token_urlsafe(16)
        csp = (f"default-src 'self'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; style-src 'self' "
               f"'unsafe-inline'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
               f"base-uri 'none'; form-action 'self'").encode()
        start: Message | None = None
        html = False
        body = bytearray()

        async def send_guarded(message: Message) -> None:
            nonlocal start, html
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in kept)
                start = {**message, "headers": [*kept, (b"content-security-policy", csp)]}
                if not html:
                    await send(start)
                return
            if not html:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):  # the page is whole: give its own scripts the nonce
                page = _SCRIPT_TAG.sub(b'<script nonce="' + nonce.encode() + b'"', bytes(body))
                assert start is not None
                await send(start)
                await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, send_guarded)


def dashboard_app(settings: Settings) -> ASGIApp | None:
    """The dashboard to mount, or None: without credentials it is never mounted, nor without a Redis URL
    (the in-memory Redis of `jobcast dev` has no URL rq-dashboard could open)."""
    if settings.redis_url is None or not (settings.dashboard_user and settings.dashboard_password):
        return None
    from a2wsgi import WSGIMiddleware
    from rq_dashboard.cli import make_flask_app

    flask = make_flask_app(None, None, None, "")
    flask.config["RQ_DASHBOARD_REDIS_URL"] = [settings.redis_url]  # a list: it indexes it by instance number
    app: ASGIApp = WSGIMiddleware(flask)  # type: ignore[assignment]  # a2wsgi types its scopes more narrowly
    return _BasicAuth(_Guard(app), settings.dashboard_user, settings.dashboard_password)
