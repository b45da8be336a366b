"""rq-dashboard at `/dashboard/`, inside the API's own server, behind its own HTTP Basic credentials.

rq-dashboard is a Flask (WSGI) app; a2wsgi runs it inside the ASGI app. It shows
RQ's view of the same jobs: a job's first RQ job id is its jobcast id (later
trips through RQ are `{id}-{run}`). Its own Basic auth is not used: it compares
passwords in plain time and registers on a module-level blueprint; this wrapper
compares in constant time.
"""

from __future__ import annotations

import base64
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from jobcast.settings import Settings

__all__ = ["dashboard_app"]


class _BasicAuth:
    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app = app
        self.expected = ("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope.get("headers", [])).get(b"authorization", b"")
        if scope["type"] == "http" and not hmac.compare_digest(given, self.expected):
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"www-authenticate", b'Basic realm="jobcast dashboard"'), (b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"The dashboard needs its own credentials "
                                                              b"(JOBCAST_DASHBOARD_USER / _PASSWORD).\n"})
            return
        await self.app(scope, receive, send)


def dashboard_app(settings: Settings) -> ASGIApp | None:
    """The dashboard to mount, or None when it must not be (auth on without dashboard credentials, or no Redis URL)."""
    if settings.redis_url is None:
        return None  # the in-memory Redis of `jobcast dev` has no URL rq-dashboard could open
    credentials = settings.dashboard_user and settings.dashboard_password
    if settings.api_keys and not credentials:
        return None
    from a2wsgi import WSGIMiddleware
    from rq_dashboard.cli import make_flask_app

    flask = make_flask_app(None, None, None, "")
    flask.config["RQ_DASHBOARD_REDIS_URL"] = [settings.redis_url]  # a list: it indexes it by instance number
    app: ASGIApp = WSGIMiddleware(flask)  # type: ignore[assignment]  # a2wsgi types its scopes more narrowly
    if credentials:
        app = _BasicAuth(app, settings.dashboard_user or "", settings.dashboard_password or "")
    return app
