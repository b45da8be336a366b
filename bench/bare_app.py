"""The baseline of `get_rps`: a bare Starlette endpoint that reads one job hash and returns it as JSON.

`uvicorn bench.bare_app:app` with REDIS_URL and BARE_KEY (the job hash to read) set.
"""

from __future__ import annotations

import os

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

redis = Redis.from_url(os.environ["REDIS_URL"])
KEY = os.environ["BARE_KEY"]


async def get_job(request: Request) -> Response:
    record = await redis.hgetall(KEY)
    body = orjson.dumps({k.decode(): v.decode() for k, v in record.items()})
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/jobs/{job_id}", get_job)])
