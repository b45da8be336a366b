"""Webhooks: one signed POST when a job ends, delivered by an RQ job on its own queue.

The body is `{"type": "job.completed|job.failed|job.canceled", "data": <job object>}`,
signed with the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
`webhook-signature`) by the `standardwebhooks` package, with `JOBCAST_WEBHOOK_SECRET`.
A non-2xx answer or a time-out is tried again by RQ's scheduler after 1, 4, 16,
64 and 256 times `JOBCAST_WEBHOOK_RETRY_BASE_S` (15 s: about 85 minutes in all);
the job object's `webhook` field shows the state, the tries and the last status.
The delivery runs apart from the job, so a slow or dead receiver never holds
it up or fails it. URLs that resolve to loopback, private, link-local or other
non-public addresses are refused (at submit, and again before each try, as DNS
may change) unless `JOBCAST_WEBHOOK_ALLOW_PRIVATE=1`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from redis.client import Pipeline
from rq import Queue, Retry
from standardwebhooks.webhooks import Webhook

from jobcast.errors import ValidationFailed
from jobcast.record import job_object
from jobcast.settings import Settings
from jobcast.store import Store

__all__ = ["check_url", "deliver", "pending", "schedule", "webhook_queue"]

log = logging.getLogger("jobcast.webhooks")

RETRIES = 5
TIMEOUT_S = 10.0


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx; RQ tries again later."""


def webhook_queue(settings: Settings) -> str:
    return f"{settings.queue}-webhooks"


def check_url(url: str, settings: Settings) -> None:
    """ValidationFailed unless `url` is http(s) and (unless allowed) resolves to public addresses only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused(f"{url!r} is not an http(s) URL")
    if settings.webhook_allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except OSError:
        raise _refused(f"the host {parts.hostname!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise _refused(f"{parts.hostname!r} resolves to {address}, which is not a public address "
                           "(set JOBCAST_WEBHOOK_ALLOW_PRIVATE=1 to allow it)")


def _refused(why: str) -> ValidationFailed:
    return ValidationFailed(f"webhook.url: {why}", [{"path": "webhook.url", "message": why}])


def pending(url: str) -> str:
    """The `webhook` field of a job whose delivery is yet to be made."""
    return orjson.dumps({"url": url, "state": "pending", "attempts": 0, "last_status": None}).decode()


def schedule(store: Store, job_id: str, attempt: int) -> None:
    """Enqueue the delivery of `job_id`'s webhook for the end of attempt `attempt` (once per end)."""
    base = store.settings.webhook_retry_base_s
    Queue(webhook_queue(store.settings), connection=store.redis).enqueue_call(
        "jobcast.webhooks.deliver", args=(job_id, attempt), timeout=int(TIMEOUT_S * 3),
        retry=Retry(max=RETRIES, interval=[int(base * 4 ** i) for i in range(RETRIES)]),
        description=f"webhook of {job_id} (attempt {attempt})", result_ttl=0, failure_ttl=store.settings.job_ttl_s,
    )


def deliver(job_id: str, attempt: int | None = None) -> None:
    """One try at delivering `job_id`'s webhook for the end of `attempt` (RQ's entry point; raises to be
    tried again). A delivery whose job has ended again since (a retried job) gives way to the new one.

    (`attempt` None: a delivery queued by an earlier version, for whatever attempt the job is on.)
    """
    from jobcast.runner import current_runtime  # the runner ends jobs, which schedules these: import late

    store = current_runtime().store
    record = store.load(job_id)
    if record is None or not record.get("webhook"):
        return
    if attempt is not None and int(record["attempt"]) != attempt:
        log.info("job %s: webhook for attempt %d dropped: the job is on attempt %s now, which has its own",
                 job_id, attempt, record["attempt"])
        return
    hook: dict[str, Any] = orjson.loads(record["webhook"])
    if hook.get("state") != "pending":
        return
    hook["attempts"] = int(hook.get("attempts") or 0) + 1
    items = store.output_items(job_id)
    body = orjson.dumps({"type": f"job.{record['status']}", "data": job_object(record, items, None)}).decode()
    msg_id = f"msg_{job_id}_{record['attempt']}"  # one message per attempt's end: its tries share it
    now = datetime.now(tz=UTC)
    signature = Webhook(store.settings.webhook_secret or "").sign(msg_id, now, body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature, "content-type": "application/json"}
    status: int | None = None
    try:
        check_url(hook["url"], store.settings)
        response = httpx.post(hook["url"], content=body, headers=headers, timeout=TIMEOUT_S)
        status = response.status_code
    except (httpx.HTTPError, ValidationFailed) as exc:
        log.warning("job %s: webhook try %d failed: %s", job_id, hook["attempts"], exc)
    hook["last_status"] = status
    ok = status is not None and 200 <= status < 300
    last_try = hook["attempts"] > RETRIES
    hook["state"] = "delivered" if ok else ("failed" if last_try else "pending")
    _record_try(store, job_id, record["attempt"], orjson.dumps(hook).decode())
    store.redis.hincrby(store.keys.stats, f"webhook|{'retrying' if hook['state'] == 'pending' else hook['state']}", 1)
    log.info("job %s: webhook try %d: %s (%s)", job_id, hook["attempts"], status, hook["state"])
    if not ok and not last_try:
        raise DeliveryFailed(f"the receiver answered {status}" if status else "the receiver could not be reached")


def _record_try(store: Store, job_id: str, attempt: str, hook: str) -> None:
    """Set the job's `webhook` field, unless the job has moved on to another attempt (and delivery) meanwhile."""
    key = store.keys.job(job_id)

    def write(pipe: Pipeline) -> None:
        if pipe.hget(key, "attempt") == attempt.encode():
            pipe.multi()
            pipe.hset(key, "webhook", hook)

    store.redis.transaction(write, key)
