"""The HTTP side: `app` (the Starlette app and its middleware), `api` (the endpoints), `sse` (the event
streams), `hub` (one pub/sub connection fanned out to every stream), `auth` (API keys and stream tokens),
`openapi`, `dashboard` (rq-dashboard, mounted and guarded), `metrics` (`/metrics`), `services` (what the API
process holds while it runs). `jobcast.create_app` is the way in."""

__all__ = ()
