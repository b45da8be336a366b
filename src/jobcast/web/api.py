"""The HTTP endpoints of the contract (`shared/api-contract.md`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from jobcast import submission, transitions, webhooks
from jobcast.errors import (
    Conflict,
    InvalidJson,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from jobcast.schemas import SubmitRequest, validation_details
from jobcast.states import STATUSES, TERMINAL, Status
from jobcast.store import Snapshot
from jobcast.store.record import part_ids
from jobcast.store.writer import owner_entry
from jobcast.web.jobsets import JobSet, parse_tags, set_link
from jobcast.web.metrics import render as render_metrics
from jobcast.web.services import Services
from jobcast.web.sse import EventStream, backlog

__all__ = [
    "JSON", "base_url", "cancel_job", "check_stream_limits", "delete_job", "get_job", "healthz", "job_events",
    "job_types", "list_jobs", "metrics", "owner_of", "readyz", "retry_job", "submit_job",
]

CLAIM_WAIT_MS = 5000
"""How long a request waits for the job of an Idempotency-Key claimed by another request that is still creating it."""
STAND_IN_NOTE = ("Runs on a STAND-IN model with made-up answers (`jobcast dev` without `JOBCAST_MODEL`), "
                 "paced like a real one.")
LIST_SCAN_LIMIT = 5000
"""A filtered listing reads at most this many of the owner's jobs per page, then hands back a cursor."""

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_EVENT_ID = re.compile(r"^[0-9]{1,18}$")
_CURSOR = re.compile(r"^\d{15}:[0-9a-f]{32}$")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def owner_of(request: Request) -> str:
    """Who is asking, by API key (`anonymous` while auth is off); 401 without a valid key."""
    return _services(request).auth.owner_for_key(request.headers.get("authorization"))


def base_url(request: Request) -> str:
    """The API's URL as this request's client reaches it, the base of every link handed out:
    `JOBCAST_PUBLIC_URL`, else the request's scheme (a trusted proxy's `X-Forwarded-Proto`, which the
    server applies), `Host` (which `HostGuard` has checked) and mount prefix (`root_path`)."""
    public = _services(request).settings.public_url
    if public is not None:
        return public
    url = request.url
    return f"{url.scheme}://{url.netloc}{request.scope.get('root_path', '')}"


def _with_links(request: Request, obj: dict[str, Any]) -> dict[str, Any]:
    obj["links"] = _services(request).encode.links(obj["id"], base_url(request))
    return obj


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and re.fullmatch(r"[0-9]{1,18}", declared) and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit} (JOBCAST_MAX_BODY).")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes (JOBCAST_MAX_BODY).")
    return bytes(body)


def _not_found(job_id: str) -> NotFound:
    shown = job_id if len(job_id) <= 64 else job_id[:64] + "..."
    return NotFound(f"no job {shown!r} (unknown, expired, deleted, or not yours).")


def _viewer(request: Request, job_id: str, token_ok: bool) -> str | None:
    """Who may look at `job_id`, checked before anything is looked up (so a bad key is a 401, never a 404).

    The owner of the API key, or None when a stream token for this very job
    (where `token_ok`) vouches for the request instead.
    """
    token = _stream_token(request) if token_ok else None
    if token is None:
        return owner_of(request)
    _services(request).auth.check_token(token, job_id)  # 401 unless it is this job's token, unexpired
    return None


def _stream_token(request: Request) -> str | None:
    """The stream token a request comes with, where one counts (auth on), or None: it then needs a key."""
    return request.query_params.get("token") if _services(request).auth.enabled else None


async def _owned_snapshot(request: Request, job_id: str, token_ok: bool = False) -> Snapshot:
    viewer = _viewer(request, job_id, token_ok)
    snap = await _services(request).store.snapshot(job_id) if _JOB_ID.match(job_id) else None
    if snap is None or (viewer is not None and snap.owner != viewer):
        raise _not_found(job_id)
    return snap


async def submit_job(request: Request) -> Response:
    svc = _services(request)
    owner = owner_of(request)  # before the body is read: a request without a valid key costs nothing
    _require_json(request)
    body = await _read_body(request, svc.settings.max_body_bytes)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON ({exc}); send a JSON object such as "
                          '{"type": "demo", "payload": {}}.') from None
    if not isinstance(data, dict):
        raise InvalidJson(f"the body is JSON {type(data).__name__}, not an object; send "
                          '{"type": "demo", "payload": {}}.')
    try:
        req = SubmitRequest.model_validate(_whole_floats_as_ints(data))
    except ValidationError as exc:
        raise ValidationFailed("the submission does not fit; see details.", validation_details(exc)) from None
    accepted = submission.accept(svc.registry, svc.settings, owner, req)
    rate_key = await _check_submit_rate(svc, owner)  # before the webhook's DNS look-up, which can be slow
    if accepted.webhook_url is not None:
        await run_in_threadpool(webhooks.check_url, accepted.webhook_url, svc.settings)
    job_id = uuid.uuid4().hex
    idem = _idempotency_key(request)
    if idem is not None:
        claim_key = svc.store.keys.idempotency(owner, hashlib.sha256(idem.encode()).hexdigest())
        body_hash = hashlib.sha256(body).hexdigest()
        replay = await _claim(request, claim_key, f"{job_id} {body_hash}", body_hash)
        if replay is not None:
            return replay
    try:
        return await _create(request, owner, job_id, accepted, claim_key if idem else "", rate_key)
    except Exception:  # not on cancellation: the create may still finish in its thread
        if idem is not None:
            await svc.store.release(claim_key)
        raise


MAX_DEPTH = 64
"""How deeply a submission's JSON may nest (objects and arrays)."""


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"send the body as JSON with `Content-Type: application/json` (got "
                                   f"{media_type or 'none'!r}).")


def _whole_floats_as_ints(data: dict[str, Any]) -> dict[str, Any]:
    """`3.0` is the integer 3 in JSON (and JSON Schema); the strict models take only ints for integers.

    Changes `data` in place, walking it without recursion; 422 past `MAX_DEPTH` levels of nesting.
    """
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise submission.invalid("(body)", f"the JSON nests deeper than {MAX_DEPTH} levels; flatten it")
        keys = node.keys() if isinstance(node, dict) else range(len(node))
        for key in keys:
            value = node[key]  # type: ignore[index]
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
                node[key] = int(value)  # type: ignore[index]
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
    return data


async def _check_submit_rate(svc: Services, owner: str) -> str | None:
    """429 once the owner has had `JOBCAST_SUBMIT_RATE` jobs accepted this minute; else the key that
    counts them, which the creation adds to (a rejected request counts for nothing)."""
    limit = svc.settings.submit_rate_per_min
    if limit <= 0:
        return None
    now = time.time()
    key = svc.store.keys.submit_rate(owner, int(now // 60))
    if await svc.store.submissions(key) >= limit:
        retry_after = str(max(1, 60 - int(now % 60)))
        raise RateLimited(f"over the limit of {limit} submissions a minute (JOBCAST_SUBMIT_RATE); "
                          f"try again in {retry_after} s.", headers={"Retry-After": retry_after})
    return key


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise submission.invalid("Idempotency-Key", "must be 1 to 255 printable ASCII characters")
    return key


async def _claim(request: Request, claim_key: str, claim: str, body_hash: str) -> Response | None:
    """Claim an Idempotency-Key for a new job; if it is taken, the response for the job that took it."""
    svc = _services(request)
    if await svc.store.claim(claim_key, claim):
        return None
    held = await svc.store.claimed(claim_key)
    if held is None:  # the first request failed and let go of the key just now: take it
        return await _claim(request, claim_key, claim, body_hash)
    holder, age_ms = held
    job_id, _, first_hash = holder.partition(" ")
    if first_hash != body_hash:
        raise Conflict("this Idempotency-Key was used with a different request body in the last 24 h; "
                       "use a new key for a different job.")
    # A request that claimed the key under 5 s ago may still be creating its job: wait for it that long.
    deadline = time.monotonic() + max(0, CLAIM_WAIT_MS - age_ms) / 1000
    while (snap := await svc.store.snapshot(job_id)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if snap is None:
        # The request that claimed the key died before its job existed, or the job is gone (deleted):
        # drop that claim (unless another request already replaced it) and claim the key afresh.
        await svc.store.release(claim_key, holder)
        return await _claim(request, claim_key, claim, body_hash)
    obj = _with_links(request, snap.job_object())
    return JSON(obj, status_code=202, headers={"Location": obj["links"]["self"], "Idempotent-Replayed": "true"})


async def _create(request: Request, owner: str, job_id: str, accepted: submission.Accepted, idem_key: str,
                  rate_key: str | None) -> Response:
    svc = _services(request)
    # (counted with the creation: a refused request counts for nothing)
    obj = await run_in_threadpool(submission.create, svc.sync_store, owner, accepted, job_id=job_id,
                                  idem_key=idem_key, count_in=rate_key)
    obj = _with_links(request, obj)
    return JSON(obj, status_code=202, headers={"Location": obj["links"]["self"]})


async def cancel_job(request: Request) -> Response:
    svc = _services(request)
    snap = await _owned_snapshot(request, request.path_params["job_id"])
    if snap.status in TERMINAL:
        raise Conflict(f"the job is already {snap.status}; only a queued or running job can be canceled.")
    outcome = await run_in_threadpool(transitions.cancel, svc.sync_store, snap.record["id"])
    if outcome in TERMINAL and outcome != Status.CANCELED:
        raise Conflict(f"the job became {outcome} before the cancel reached it.")
    return await get_job(request, status_code=202)


async def retry_job(request: Request) -> Response:
    """Run a failed or canceled job again; a retry counts against the owner's submit rate like a submission."""
    svc = _services(request)
    snap = await _owned_snapshot(request, request.path_params["job_id"])
    await _refuse_for_a_part(svc, snap, "retried", "retry the batch, which runs again its parts that did not "
                             "complete", ever=True)
    rate_key = await _check_submit_rate(svc, snap.owner)
    outcome = await run_in_threadpool(transitions.retry, svc.sync_store, snap.record["id"])
    if outcome == "missing":
        raise _not_found(snap.record["id"])
    if outcome == "parts":
        raise Conflict("some of the batch's parts have not ended yet (a cancel stops them within seconds); "
                       "retry it once they have.")
    if outcome != "ok":
        raise Conflict(f"the job is {outcome}; only a failed or canceled job can be retried.")
    if rate_key is not None:
        await svc.store.count_submission_now(rate_key)
    return await get_job(request, status_code=202)


async def _refuse_for_a_part(svc: Services, snap: Snapshot, what: str, instead: str, *, ever: bool) -> None:
    """A `409` for a part of a batch (`ever`), or of one that has not ended: it is not `what` on its own;
    `instead` says what to do."""
    parent = snap.record.get("parent_id")
    if not parent:
        return
    head = await svc.store.head(parent)
    if ever or (head is not None and head[1] not in TERMINAL):
        raise Conflict(f"the job is part {int(snap.record['part']) + 1} of the batch {parent}; a part is not "
                       f"{what} on its own: {instead} (/jobs/{parent}).")


async def delete_job(request: Request) -> Response:
    svc = _services(request)
    snap = await _owned_snapshot(request, request.path_params["job_id"])
    await _refuse_for_a_part(svc, snap, "deleted", "delete the batch (once it has ended), which deletes its parts",
                             ever=False)
    outcome = await run_in_threadpool(transitions.delete, svc.sync_store, snap.record["id"], snap.owner)
    if outcome == "missing":
        raise _not_found(snap.record["id"])
    if outcome == "parts":
        raise Conflict("some of the batch's parts have not ended yet (a cancel stops them within seconds); "
                       "delete it once they have.")
    if outcome != "ok":
        raise Conflict(f"the job is {outcome}; only a finished job (completed, failed or canceled) can be "
                       "deleted. Cancel it first.")
    return Response(status_code=204)


async def get_job(request: Request, status_code: int = 200) -> Response:
    """The job object; with `If-None-Match` of its current ETag, `304` and no body (for pollers)."""
    snap = await _owned_snapshot(request, request.path_params["job_id"], token_ok=True)
    body = orjson.dumps(_with_links(request, snap.job_object(webhook_url=_stream_token(request) is None)))
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if status_code == 200 and etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {t.strip().removeprefix("W/") for t in header.split(",")}


def _last_event_id(request: Request) -> int | None:
    """The id to resume after: the header (as EventSource sends it), else the parameter; both must be ids."""
    found = []
    # An empty header means "no id" (as EventSource would send it); an empty parameter is a mistake.
    for name, raw in (("Last-Event-ID", request.headers.get("last-event-id")),
                      ("last_event_id", request.query_params.get("last_event_id"))):
        if raw is not None and (raw.strip() != "" or name == "last_event_id"):
            if not _EVENT_ID.match(raw.strip()):
                raise submission.invalid(name, f"{raw!r} is not an event id; event ids are whole numbers "
                                               "(1, 2, 3, ...)")
            found.append(int(raw))
    return found[0] if found else None


def check_stream_limits(svc: Services, owner: str, token: str | None, poll: str) -> None:
    """A `429` when the owner (or the stream token) holds as many open streams on this server as allowed;
    `poll` names what to poll instead."""
    limit = svc.settings.max_streams_per_owner
    if limit and svc.hub.streams_by_owner.get(owner, 0) >= limit:
        raise RateLimited(f"this owner already holds {limit} open event streams on this server "
                          f"(JOBCAST_MAX_STREAMS_PER_OWNER); close some, or poll {poll}.",
                          headers={"Retry-After": "5"})
    per_token = svc.settings.max_streams_per_token
    if token is not None and per_token and svc.hub.streams_by_token.get(token, 0) >= per_token:
        raise RateLimited(f"this stream token already holds {per_token} open event streams on this server "
                          "(JOBCAST_MAX_STREAMS_PER_TOKEN); close some.", headers={"Retry-After": "5"})


async def job_events(request: Request) -> Response:
    svc = _services(request)
    job_id = request.path_params["job_id"]
    viewer = _viewer(request, job_id, token_ok=True)
    token = _stream_token(request)  # (if there is one, `_viewer` has just checked it)
    after = _last_event_id(request)
    head = await svc.store.head(job_id) if _JOB_ID.match(job_id) else None
    if head is None or (viewer is not None and head[0] != viewer):
        raise _not_found(job_id)
    _, status, seq = head
    if after is not None and status in TERMINAL and after >= seq:
        return Response(status_code=204)
    check_stream_limits(svc, head[0], token, "GET /jobs/{id}")
    listener = await svc.hub.listen(job_id, head[0], token or "")
    try:
        first = await backlog(svc.store, svc.encode, job_id, after)
    except BaseException:
        await svc.hub.unlisten(listener)
        raise
    if first is None:
        await svc.hub.unlisten(listener)
        raise _not_found(job_id)
    # A stream opened with a token ends when the token does: the client comes back, gets 401, and asks
    # with its key for a fresh link (jobcast.js does), so a token's reach never outlives it.
    ends_at = svc.auth.token_expiry(token) if token is not None else None
    return EventStream(svc.hub, svc.store, svc.encode, svc.settings, listener, first, base_url=base_url(request),
                       ends_at=ends_at)


def _list_params(request: Request) -> tuple[str | None, str | None, list[tuple[str, str]], int, str | None]:
    allowed = {"status", "type", "tag", "limit", "cursor", "parent"}
    params = request.query_params
    for name in params:
        if name not in allowed:
            raise submission.invalid(name, f"unknown query parameter; use {', '.join(sorted(allowed))}")
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise submission.invalid("status", f"{status!r} is not a status; use one of {', '.join(STATUSES)}")
    tags = parse_tags(params)
    raw_limit = params.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,3}", raw_limit) or not 1 <= int(raw_limit) <= 500:
        raise submission.invalid("limit", f"{raw_limit!r} is not a whole number from 1 to 500")
    cursor = params.get("cursor")
    if cursor is not None and not _CURSOR.match(cursor):
        raise submission.invalid("cursor", "not a cursor this API handed out; pass next_cursor from the previous page")
    parent = params.get("parent")
    if parent is not None and not _JOB_ID.match(parent):
        raise submission.invalid("parent", f"{parent[:40]!r} is not a job id (32 hexadecimal digits)")
    return status, params.get("type"), tags, int(raw_limit), cursor


def _matches(head: tuple[str, str, str | None], status: str | None, jtype: str | None,
             tags: list[tuple[str, str]]) -> bool:
    job_status, job_type, job_tags_json = head
    if (status and job_status != status) or (jtype and job_type != jtype):
        return False
    if tags:
        job_tags = orjson.loads(job_tags_json or "{}")
        return all(job_tags.get(k) == v for k, v in tags)
    return True


async def _list_parts(request: Request, status: str | None, jtype: str | None, tags: list[tuple[str, str]],
                      limit: int, cursor: str | None) -> Response:
    """`GET /jobs?parent=<id>`: the parts of a batch in part order (the other filters narrow them). The cursor
    has the shape of the owner's list's, and names the last part of the page before (a cursor of no part of
    this batch: an empty page)."""
    svc = _services(request)
    parent = await _owned_snapshot(request, request.query_params["parent"])
    ids = part_ids(parent.record)
    after = cursor.split(":", 1)[1] if cursor else None
    at = 0 if after is None else ids.index(after) + 1 if after in ids else len(ids)
    jobs: list[dict[str, Any]] = []
    while at < len(ids) and len(jobs) < limit:
        for snap in await svc.store.snapshots(ids[at:at + limit]):
            at += 1
            if snap is not None and _matches((snap.status, snap.record["type"], snap.record.get("tags")),
                                             status, jtype, tags):
                jobs.append(_with_links(request, snap.job_object()))
                if len(jobs) == limit:
                    break
    next_cursor = owner_entry(int(parent.record["created_ms"]), ids[at - 1]) if at < len(ids) else None
    return JSON({"jobs": jobs, "next_cursor": next_cursor})


async def list_jobs(request: Request) -> Response:
    svc = _services(request)
    owner = owner_of(request)
    status, jtype, tags, limit, cursor = _list_params(request)
    if "parent" in request.query_params:
        return await _list_parts(request, status, jtype, tags, limit, cursor)
    filtered = bool(status or jtype or tags)
    jobs: list[dict[str, Any]] = []
    scanned = 0
    while True:
        entries = await svc.store.owner_page(owner, cursor, limit - len(jobs) if not filtered else 200)
        if not entries:
            cursor = None
            break
        ids = [e.split(":", 1)[1] for e in entries]
        # A filter reads each job's status, type and tags first, and whole jobs (their output too) only
        # for the ones that match: a page may look through thousands.
        heads = await svc.store.summaries(ids) if filtered else [None] * len(ids)
        wanted = [i for i, head in enumerate(heads)
                  if not filtered or (head is not None and _matches(head, status, jtype, tags))]
        snaps = dict(zip(wanted, await svc.store.snapshots([ids[i] for i in wanted]), strict=True))
        gone = [e for i, e in enumerate(entries) if (heads[i] is None if filtered else snaps.get(i) is None)]
        await svc.store.forget_owner_entries(owner, gone)
        for i, entry in enumerate(entries):
            cursor = entry
            snap = snaps.get(i)
            if snap is None or (filtered and not _matches((snap.status, snap.record["type"], snap.record.get("tags")),
                                                          status, jtype, tags)):
                continue
            jobs.append(_with_links(request, snap.job_object()))
            if len(jobs) == limit:
                break
        scanned += len(entries)
        if len(jobs) == limit or scanned >= LIST_SCAN_LIMIT:
            break
    if cursor is not None and not await svc.store.owner_page(owner, cursor, 1):
        cursor = None
    answer: dict[str, Any] = {"jobs": jobs, "next_cursor": cursor}
    if svc.auth.enabled:  # the stream of the same set, with a token a page can hand to EventSource
        answer["links"] = {"events": set_link(svc.auth, JobSet(owner, None, tuple(tags), jtype), base_url(request))}
    return JSON(answer)


async def job_types(request: Request) -> Response:
    owner_of(request)
    settings = _services(request).settings
    types = []
    for t in _services(request).registry:
        reason = settings.model_unavailable() if t.requires_model else None
        stand_in = t.requires_model and settings.stand_in_model
        types.append({
            "name": t.name,
            "description": f"{t.description} {STAND_IN_NOTE}" if stand_in else t.description,
            "stand_in": stand_in,
            "schema": t.schema(),
            "available": reason is None,
            "unavailable_reason": reason,
            "max_attempts": t.max_attempts,
            "timeout_s": t.timeout_s,
        })
    return JSON({"job_types": types})


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def metrics(request: Request) -> Response:
    svc = _services(request)
    queues = [svc.settings.queue, svc.settings.webhook_queue]
    models = [svc.settings.model] if svc.settings.model else []  # (every call of it takes a lease and a turn)
    body = await render_metrics(svc.store, svc.settings.queue, queues, models)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def readyz(request: Request) -> Response:
    svc = _services(request)
    await svc.store.ping()
    if not svc.hub.connected:
        raise Unavailable("Redis answers, but this process's event subscription is still reconnecting; retry shortly.")
    alive = await svc.store.workers_alive(svc.settings.queue)
    return JSON({"status": "ready", "redis": "ok", "queue": svc.settings.queue, "workers": alive})
