"""Submitting a job: the checks every submission passes and its atomic creation, for `POST /jobs` and for
code in the same process (`jobcast.submit`, `jobcast.submit_sync`).

    import jobcast, redis

    job = jobcast.submit_sync(redis.Redis.from_url(url), "generate_personas", {"count": 30}, owner="u-17")
    job = await jobcast.submit(conn, "demo", {"steps": 5}, owner="u-17", tags={"project": "p-1"})

Both take the kind of connection RQ takes (a `redis.Redis`; the creation enqueues with RQ), check what
`POST /jobs` checks, raise the same typed errors (`jobcast.errors`, which the API maps to its JSON), and
return the same job object, links included (a `jobcast.Job`, as `jobcast.Client` returns). What only
HTTP has stays in `web/api.py`: the body's JSON, the `Idempotency-Key`, and the per-owner submit rate (code
in the process is trusted to pace itself).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from pydantic import BaseModel, ValidationError
from redis import Redis

from jobcast import webhooks
from jobcast.errors import ValidationFailed
from jobcast.registry import JobType, Registry, load_job_types
from jobcast.schemas import Job, SubmitRequest, validation_details
from jobcast.settings import OWNER_PATTERN, Settings
from jobcast.states import Stage, Status
from jobcast.store import Store, trips
from jobcast.store.record import job_object, now_iso, now_ms, pending_webhook
from jobcast.web.auth import ANONYMOUS, Auth

__all__ = ["Accepted", "accept", "create", "invalid", "stored_payload", "submit", "submit_sync"]


def invalid(path: str, message: str) -> ValidationFailed:
    """A `422 validation_error` about one place of the submission."""
    return ValidationFailed(f"{path}: {message}", [{"path": path, "message": message}])


@dataclass(frozen=True)
class Accepted:
    """A submission that passed the checks (`accept`): what `create` writes."""

    jtype: JobType
    request: SubmitRequest
    payload: BaseModel
    webhook_url: str | None
    """The request's webhook, else the owner's default (`JOBCAST_OWNER_WEBHOOKS`), else None."""


def accept(registry: Registry, settings: Settings, owner: str, request: SubmitRequest) -> Accepted:
    """The submission, checked: a known type that can run here, a payload that fits its schema, a webhook
    the server can sign. ValidationFailed otherwise. (The webhook's address is checked apart, by
    `webhooks.check_url`: it takes a DNS look-up.)"""
    jtype = registry.get(request.type)
    if jtype is None:
        raise invalid("type", f"unknown job type {request.type!r}; known types: {', '.join(registry.names())}")
    if jtype.part_of is not None:
        raise invalid("type", f"job type {jtype.name!r} runs only as the parts of a {jtype.part_of!r} job; submit "
                              f"{jtype.part_of!r}")
    unavailable = jtype.requires_model and settings.model_unavailable()
    if unavailable:
        raise invalid("type", f"job type {jtype.name!r} is unavailable: {unavailable}")
    payload = jtype.validate(request.payload)
    webhook_url = request.webhook.url if request.webhook is not None else settings.owner_webhooks.get(owner)
    if webhook_url is not None and not settings.webhook_secret:
        raise invalid("webhook", "webhooks need a signing secret on the server: set JOBCAST_WEBHOOK_SECRET")
    return Accepted(jtype, request, payload, webhook_url)


def stored_payload(payload: BaseModel) -> str:
    """The payload as sent, by alias: static defaults are left out (the worker's validation fills them in
    again, and a short record stays compact in Redis), values from default factories kept (every attempt
    sees the id or time the API saw)."""
    fields = type(payload).model_fields
    unset = {n for n, f in fields.items() if n not in payload.model_fields_set and f.default_factory is None}
    return payload.model_dump_json(exclude=unset, by_alias=True)


def create(store: Store, owner: str, accepted: Accepted, *, job_id: str | None = None, idem_key: str = "",
           count_in: str | None = None) -> dict[str, Any]:
    """Write the job's record and enqueue it with RQ in one MULTI (counting it in the owner's submit rate key
    `count_in`, if given); return the job object, without links. Blocks: call it from a thread in async code."""
    job_id = job_id or uuid.uuid4().hex
    jtype, req, settings = accepted.jtype, accepted.request, store.settings
    created_ms = now_ms()
    created_at = now_iso()
    fields = {
        "id": job_id, "type": jtype.name, "owner": owner, "status": Status.QUEUED, "progress": "0",
        "stage": Stage.QUEUED, "attempt": "1", "max_attempts": str(req.max_attempts or jtype.max_attempts),
        "timeout_s": str(req.timeout_s or jtype.timeout_s), "tags": orjson.dumps(req.tags).decode(),
        "payload": stored_payload(accepted.payload), "queue": settings.queue, "created_at": created_at,
        "created_ms": str(created_ms), "idem_key": idem_key,
        "webhook": pending_webhook(accepted.webhook_url) if accepted.webhook_url else "",
    }
    budget = req.max_tokens_total or jtype.max_tokens_total
    if budget:
        fields["max_tokens_total"] = str(budget)
    ahead = trips.create(store, fields, created_ms, created_at, count_in=count_in)
    record = {**fields, "seq": "1", "message": "", "queue_position": str(ahead)}
    return job_object(record, [], ahead)


def submit_sync(
    redis: Redis,
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    owner: str = ANONYMOUS,
    tags: Mapping[str, str] | None = None,
    max_attempts: int | None = None,
    timeout_s: int | None = None,
    max_tokens_total: int | None = None,
    webhook_url: str | None = None,
    base_url: str | None = None,
    settings: Settings | None = None,
    registry: Registry | None = None,
) -> Job:
    """Submit a job from this process, as `POST /jobs` would for `owner`; return its job object (as
    `jobcast.Client` returns it: `job.id`, `job.links.events`, ...).

    `redis` is the Redis the API and workers use; `settings` default to the environment's (the same
    `JOBCAST_*` the API reads), `registry` to the types of `JOBCAST_JOB_MODULES`. The links start with
    `base_url`, else `JOBCAST_PUBLIC_URL`, else they are paths (`/jobs/<id>`): pass where jobcast is
    mounted (`"/jobcast"`) or its full URL. Raises ValidationFailed (and the other `jobcast.errors`) as
    the API would answer 422 and the rest.
    """
    if not isinstance(redis, Redis):
        raise TypeError(f"jobcast.submit needs a redis.Redis connection (as RQ does: the job is enqueued with "
                        f"RQ), not {redis.__class__.__name__}; redis.Redis.from_url(url) makes one.")
    if not OWNER_PATTERN.match(owner):
        raise invalid("owner", "1 to 128 letters, digits, '_', '.', '@' or '-'")
    settings = settings or Settings.from_env()
    registry = registry or load_job_types(settings.job_modules)
    fields: dict[str, Any] = {"type": type, "payload": dict(payload or {}), "tags": dict(tags or {}),
                              "max_attempts": max_attempts, "timeout_s": timeout_s}
    if max_tokens_total is not None:
        fields["max_tokens_total"] = max_tokens_total
    if webhook_url is not None:
        fields["webhook"] = {"url": webhook_url}
    try:
        request = SubmitRequest.model_validate(fields)
    except ValidationError as exc:
        raise ValidationFailed("the submission does not fit; see details.", validation_details(exc)) from None
    accepted = accept(registry, settings, owner, request)
    if accepted.webhook_url is not None:
        webhooks.check_url(accepted.webhook_url, settings)
    job = create(Store(redis, settings), owner, accepted)
    job["links"] = Auth.from_settings(settings).links(
        job["id"], (base_url if base_url is not None else settings.public_url or "").rstrip("/"))
    return Job.model_validate_json(orjson.dumps(job))


async def submit(redis: Redis, type: str, payload: Mapping[str, Any] | None = None, **options: Any) -> Job:
    """`submit_sync` for async code: the same arguments, run in a worker thread (RQ's connection blocks)."""
    return await anyio.to_thread.run_sync(lambda: submit_sync(redis, type, payload, **options))
