"""Who is asking: API keys (`Authorization: Bearer`), and short-lived stream tokens for one job.

With no `JOBCAST_API_KEYS`, auth is off and every request acts as `anonymous`.
With keys, every endpoint but `/healthz`, `/readyz` and the page needs one, and
an owner sees only its own jobs. A browser's EventSource cannot send a header,
so `links.events` carries a token: an HMAC (with `JOBCAST_SECRET`) of the job id
and an expiry, good for that one job's stream and its `GET /jobs/{id}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from jobcast.errors import Unauthorized
from jobcast.settings import Settings

__all__ = ["ANONYMOUS", "Auth"]

ANONYMOUS = "anonymous"


class Auth:
    @classmethod
    def from_settings(cls, settings: Settings) -> Auth:
        return cls(settings.api_keys, settings.secret, settings.stream_token_ttl_s)

    def __init__(self, api_keys: Mapping[str, str], secret: str | None, token_ttl_s: int) -> None:
        self._keys = [(key.encode(), owner) for key, owner in api_keys.items()]
        self._secret = (secret or "").encode()
        self.token_ttl_s = token_ttl_s

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner_for_key(self, authorization: str | None) -> str:
        """The owner of the Bearer key in an Authorization header; Unauthorized if there is none or it is wrong."""
        if not self.enabled:
            return ANONYMOUS
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("this API needs a key: send `Authorization: Bearer <key>`.")
        given = key.strip().encode()
        owner = None
        for known, known_owner in self._keys:  # every key compared, in constant time, whatever matches
            if hmac.compare_digest(given, known):
                owner = known_owner
        if owner is None:
            raise Unauthorized("the API key is not valid; check it, or ask for a new one.")
        return owner

    def _mac(self, job_id: str, expires: int) -> str:
        digest = hmac.new(self._secret, f"{job_id}.{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def token(self, job_id: str) -> str:
        """A stream token for `job_id`, good for `token_ttl_s`."""
        expires = int(time.time()) + self.token_ttl_s
        return f"{expires}.{self._mac(job_id, expires)}"

    def links(self, job_id: str, base: str = "") -> dict[str, str]:
        """The job's links under `base` (the API's URL; "": paths only); with auth on, `events` carries a
        stream token for the job."""
        job = f"{base}/jobs/{job_id}"
        events = f"{job}/events?token={self.token(job_id)}" if self.enabled else f"{job}/events"
        return {"self": job, "events": events, "cancel": f"{job}/cancel"}

    @staticmethod
    def token_expiry(token: str) -> float:
        """When a token that `check_token` accepted expires (Unix seconds)."""
        return float(token.partition(".")[0])

    def check_token(self, token: str, job_id: str) -> None:
        """Unauthorized unless `token` was made for `job_id` and has not expired."""
        expires_s, _, mac = token.partition(".")
        # (at most 12 digits: a year 33658 expiry, and Python's int() refuses to read thousands of them)
        if (not expires_s.isascii() or not expires_s.isdigit() or len(expires_s) > 12 or not mac.isascii()
                or not hmac.compare_digest(mac.encode(), self._mac(job_id, int(expires_s)).encode())):
            raise Unauthorized("the stream token is not valid for this job; GET /jobs/{id} with your API key "
                               "gives a fresh links.events.")
        if int(expires_s) < time.time():
            raise Unauthorized("the stream token has expired; GET /jobs/{id} with your API key gives a fresh "
                               "links.events.")

    # -- tokens for a set of jobs (`GET /events`): made for the owner and the set's filters ----------------

    def set_token(self, scope: str, owner: str) -> str:
        """A stream token for the set `scope` (`JobSet.scope`) of `owner`'s jobs, good for `token_ttl_s`."""
        expires = int(time.time()) + self.token_ttl_s
        who = base64.urlsafe_b64encode(owner.encode()).decode().rstrip("=")
        return f"{expires}.{who}.{self._mac(scope, expires)}"

    @staticmethod
    def set_token_owner(token: str) -> str:
        """Whose jobs a set's stream token says it is for (checked by `check_set_token`); Unauthorized if it
        is no set token."""
        parts = token.split(".")
        try:
            if len(parts) != 3 or len(parts[1]) > 200:
                raise ValueError
            return base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        except ValueError:
            raise Unauthorized("the stream token is not valid for this set of jobs; GET /jobs with your API key "
                               "gives a fresh links.events.") from None

    def check_set_token(self, token: str, scope: str) -> None:
        """Unauthorized unless `token` was made for the set `scope` and has not expired."""
        expires_s, _, rest = token.partition(".")
        mac = rest.rpartition(".")[2]
        if (not expires_s.isascii() or not expires_s.isdigit() or len(expires_s) > 12 or not mac.isascii()
                or not hmac.compare_digest(mac.encode(), self._mac(scope, int(expires_s)).encode())):
            raise Unauthorized("the stream token is not valid for this set of jobs; GET /jobs with your API key "
                               "gives a fresh links.events.")
        if int(expires_s) < time.time():
            raise Unauthorized("the stream token has expired; GET /jobs with your API key gives a fresh "
                               "links.events.")
