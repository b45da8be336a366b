"""Webhooks: one signed POST when a job ends, delivered by an RQ job on its own queue.

The body is `{"type": "job.completed|job.failed|job.canceled", "data": <job object>}`,
signed with the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
`webhook-signature`) by the `standardwebhooks` package, with `JOBCAST_WEBHOOK_SECRET`.
A non-2xx answer or a time-out is tried again by RQ's scheduler after 1, 4, 16,
64 and 256 times `JOBCAST_WEBHOOK_RETRY_BASE_S` (15 s: about 85 minutes in all);
the job object's `webhook` field shows the state, the tries and the last status.
The delivery runs apart from the job, so a slow or dead receiver never holds
it up or fails it.

URLs whose host is, or resolves to, anything but public addresses (loopback,
private, link-local, and public-looking IPv6 that embeds such an IPv4:
mapped, NAT64, 6to4, Teredo, IPv4-compatible) are refused, at submit and
again before each try, unless `JOBCAST_WEBHOOK_ALLOW_PRIVATE=1`. The check is
the connection: the host is normalised as httpx sends it (IDNA 2008), resolved
once, every address vetted, and the POST goes to the vetted address itself
with the original `Host` and TLS server name, so a resolver that answers
differently the second time (DNS rebinding) is never asked again. A refusal
does not say what the name resolved to (the owner must not learn internal
DNS from it). The receiver's answer is read no further than its status line
and headers, within `DELIVERY_DEADLINE_S` in all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from jobcast.errors import ValidationFailed
from jobcast.settings import Settings
from jobcast.store.record import job_object
from jobcast.store.trips import DELIVERY_DEADLINE_S, DELIVERY_RETRIES
from jobcast.worker.runtime import current_runtime

__all__ = ["Target", "check_url", "deliver"]

log = logging.getLogger("jobcast.webhooks")

TIMEOUT_S = 10.0
"""Longest wait for any one step of a delivery: connecting, sending, each read of the answer."""


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx; RQ tries again later."""


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: `url` with a vetted address for its host, and the name to send (Host, SNI)."""

    url: httpx.URL
    host: str
    """The URL's host as httpx sends it (IDNA 2008, lower case), for the `Host` header and TLS."""

    @property
    def host_header(self) -> str:
        port = self.url.port
        return self.host if port is None else f"{self.host}:{port}"


def check_url(url: str, settings: Settings) -> Target:
    """Where to deliver to `url`; ValidationFailed unless it is http(s) and (unless allowed) public."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise _refused(f"{url!r} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise _refused(f"{url!r} is not an http(s) URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise _refused(f"port {port} is not a port (1..65535)")
    if settings.webhook_allow_private:
        return Target(parsed, host)
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise _refused(f"the host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or not all(_public(a) for a in addresses):
        raise _refused(f"{host!r} is not a public address, or resolves to one that is not "
                       "(set JOBCAST_WEBHOOK_ALLOW_PRIVATE=1 to allow private receivers)")
    pinned = addresses[0]
    return Target(parsed.copy_with(host=str(pinned)), host)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is public, and so is any IPv4 address it carries inside."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
        as_int = int(address)
        if as_int >> 32 == 0x64FF9B << 64 or as_int >> 32 == 0:  # NAT64 (64:ff9b::/96), IPv4-compatible (::/96)
            inner.append(ipaddress.IPv4Address(as_int & 0xFFFFFFFF))
        return all(v4 is None or v4.is_global for v4 in inner)
    return True


def _refused(why: str) -> ValidationFailed:
    return ValidationFailed(f"webhook.url: {why}", [{"path": "webhook.url", "message": why}])


def deliver(job_id: str, attempt: int | None = None) -> None:
    """One try at delivering `job_id`'s webhook for the end of `attempt` (RQ's entry point; raises to be
    tried again). A delivery whose job has ended again since (a retried job) gives way to the new one.

    (`attempt` None: a delivery queued by an earlier version, for whatever attempt the job is on.)
    """
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
        status = _post(check_url(hook["url"], store.settings), body, headers)
    except (httpx.HTTPError, ValidationFailed) as exc:
        log.warning("job %s: webhook try %d failed: %s", job_id, hook["attempts"], exc)
    hook["last_status"] = status
    ok = status is not None and 200 <= status < 300
    last_try = hook["attempts"] > DELIVERY_RETRIES
    hook["state"] = "delivered" if ok else ("failed" if last_try else "pending")
    store.set_webhook(job_id, record["attempt"], orjson.dumps(hook).decode())
    store.count(f"webhook|{'retrying' if hook['state'] == 'pending' else hook['state']}")
    log.info("job %s: webhook try %d: %s (%s)", job_id, hook["attempts"], status, hook["state"])
    if not ok and not last_try:
        raise DeliveryFailed(f"the receiver answered {status}" if status else "the receiver could not be reached")


def _post(target: Target, body: str, headers: dict[str, str]) -> int:
    """POST `body` to `target`'s address and return the status, reading nothing of the answer's body;
    the connection is cut if the whole exchange takes longer than `DELIVERY_DEADLINE_S`."""
    sockets: list[socket.socket] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            sockets.append(info["return_value"].get_extra_info("socket"))

    def cut() -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    extensions: dict[str, Any] = {"trace": trace}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.host
    deadline = threading.Timer(DELIVERY_DEADLINE_S, cut)
    deadline.start()
    try:
        # trust_env=False: a proxy from the environment would resolve the name again itself.
        with httpx.Client(timeout=TIMEOUT_S, trust_env=False, follow_redirects=False) as client:
            request = client.build_request("POST", target.url, content=body,
                                           headers={**headers, "host": target.host_header}, extensions=extensions)
            response = client.send(request, stream=True)
            response.close()
            status: int = response.status_code
            return status
    finally:
        deadline.cancel()

