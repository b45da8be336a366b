"""The API with a second route for a job's stream, `/sse-starlette/jobs/{id}/events`, built on sse-starlette's
`EventSourceResponse` (the design card's package) and fed the same pre-encoded bytes from the same hub as
`web/sse.py`'s own: what `bench/idle_streams.py` and `bench/fanout.py` measure beside ours.

Run as `python -m bench.sse_starlette_variant` in place of `jobcast serve` (same settings, one process, the
same uvicorn options). The variant is the hot path only: retry, the snapshot, live events from the hub's
ring, pings; a stream that falls behind the ring ends (its client resumes), where ours catches up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobcast.settings import Settings
from jobcast.store.connections import RedisFactory
from jobcast.web.app import create_app
from jobcast.web.hub import Entry, Hub, Listener
from jobcast.web.sse import backlog, rebase

PATH = "/sse-starlette/jobs/{job_id}/events"


async def _events(hub: Hub, listener: Listener, first: tuple[int, list[Entry], bool], base: bytes,
                  retry_ms: int) -> AsyncIterator[bytes]:
    last, entries, _ = first
    try:
        yield b"retry: %d\n\n" % retry_ms
        while True:
            out = []
            for entry in entries:
                if entry.seq > last:
                    out.append(rebase(entry, base))
                    last = entry.seq
                    if entry.terminal:
                        yield b"".join(out)
                        return
            if out:
                yield b"".join(out)
            listener.last = last
            await listener.wait()
            ring = hub.after(listener, last)
            if listener.closed or ring is None:
                return
            entries = ring
    finally:
        await hub.unlisten(listener)


async def job_events(request: Request) -> Response:
    svc = request.app.state.services
    job_id = request.path_params["job_id"]
    head = await svc.store.head(job_id)
    if head is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no job {job_id}"}}, status_code=404)
    listener = await svc.hub.listen(job_id, head[0], "")
    first = await backlog(svc.store, svc.encode, job_id, None)
    if first is None:  # (deleted meanwhile)
        await svc.hub.unlisten(listener)
        return JSONResponse({"error": {"code": "not_found", "message": f"no job {job_id}"}}, status_code=404)
    base = str(request.base_url).rstrip("/").encode()
    return EventSourceResponse(_events(svc.hub, listener, first, base, svc.settings.sse_retry_ms), sep="\n",
                               ping=svc.settings.ping_interval_s,
                               ping_message_factory=lambda: ServerSentEvent(comment="ping", sep="\n"))


def main() -> None:
    import uvicorn

    from jobcast.logs import setup_logging

    settings = Settings.from_env()
    setup_logging(settings)
    app = create_app(settings, RedisFactory(settings.redis_target))
    app.router.routes.insert(0, Route(PATH, job_events))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            log_config=None, forwarded_allow_ips=settings.forwarded_allow_ips,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
