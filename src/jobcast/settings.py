"""One frozen `Settings` object, built from the environment and validated at start-up.

Every knob jobcast has is here, with its environment variable and default; the
README's configuration table is written from this file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from jobcast.errors import ConfigError

__all__ = ["OWNER_PATTERN", "Settings"]


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to an integer from {lo} to {hi}.") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; set it to an integer from {lo} to {hi}.")
    return value


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
"""What an owner's name may be (in `JOBCAST_API_KEYS`, or given to `jobcast.submit`)."""


def _api_keys(raw: str) -> dict[str, str]:
    raw = raw.strip()
    if not raw:
        return {}
    if os.path.isfile(raw):
        with open(raw, encoding="utf-8") as f:
            entries = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        where = f"the file {raw!r} (JOBCAST_API_KEYS)"
    else:
        entries = [e.strip() for e in raw.split(",") if e.strip()]
        where = "JOBCAST_API_KEYS"
    keys: dict[str, str] = {}
    for n, entry in enumerate(entries, 1):
        key, sep, owner = entry.rpartition(":")
        if not sep or len(key) < 16 or not OWNER_PATTERN.match(owner):
            # The entry itself is not shown: it holds a key.
            raise ConfigError(f"entry {n} of {where} is not `key:owner` with a key of at least 16 characters "
                              "and an owner of letters, digits, '_', '.', '@' or '-'.")
        keys[key] = owner
    return keys


def _owner_webhooks(raw: str) -> dict[str, str]:
    hooks: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",") if e.strip()):
        owner, sep, url = entry.partition("=")
        if not sep or not OWNER_PATTERN.match(owner) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"JOBCAST_OWNER_WEBHOOKS entry {entry!r} is not owner=http(s)://url.")
        hooks[owner] = url
    return hooks


def _public_url(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    url = urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise ConfigError(f"JOBCAST_PUBLIC_URL={raw!r} is not the http(s) URL of the API, such as "
                          "https://jobs.example.com or https://example.com/jobcast (no query, no fragment).")
    return raw.rstrip("/")


@dataclass(frozen=True)
class Settings:
    """What a jobcast process needs to know; see the README for each variable."""

    redis_url: str | None = None
    """`REDIS_URL`. `None` only in `jobcast dev`, which then brings its own Redis."""
    prefix: str = "jc"
    """`JOBCAST_PREFIX`: the first part of every jobcast Redis key."""
    queue: str = "default"
    """`JOBCAST_QUEUE`: the RQ queue that jobs are enqueued on and workers listen to."""
    job_ttl_s: int = 86400
    """`JOBCAST_JOB_TTL`: how long a finished job, its events and output stay readable."""
    max_body_bytes: int = 256 * 1024
    """`JOBCAST_MAX_BODY`: the largest request body the API reads."""
    events_kept: int = 1000
    """`JOBCAST_EVENTS_KEPT`: at least this many of a job's latest events are kept for resuming."""
    items_kept: int = 1000
    """`JOBCAST_ITEMS_KEPT`: at least this many of a job's latest output items are kept."""
    sse_retry_ms: int = 2000
    """`JOBCAST_SSE_RETRY_MS`: the reconnect delay the event stream tells browsers."""
    ping_interval_s: float = 15.0
    """`JOBCAST_PING_MS` (at most 15000): the longest an idle event stream goes without a `: ping` comment."""
    stream_max_lag_s: float = 10.0
    """`JOBCAST_STREAM_MAX_LAG_S`: a stream whose client has not taken an event this long after it happened
    (a stalled or too slow reader) is closed; the client resumes from its last id once it reads again."""
    progress_interval_s: float = 0.05
    """`JOBCAST_PROGRESS_INTERVAL_MS`: pure progress changes of one job are sent at most this often."""
    heartbeat_deadline_s: float = 20.0
    """`JOBCAST_HEARTBEAT_S`: a running job whose worker has not been heard from this long is lost."""
    cancel_grace_s: float = 3.0
    """`JOBCAST_CANCEL_GRACE_MS`: how long canceled job code may take to stop by itself before it is stopped."""
    retry_base_s: float = 2.0
    """`JOBCAST_RETRY_BASE_MS`: the first automatic retry waits about this long, each next one twice as long."""
    model: str | None = None
    """`JOBCAST_MODEL`: the model the LLM job types ask; without one they are unavailable."""
    stand_in_model: bool = False
    """Set by `jobcast dev` (never from the environment) when no model is configured and it serves the LLM
    types from its stand-in (`jobcast.fake_llm`): `GET /job-types` and the page then say so."""
    openai_base_url: str | None = None
    """`OPENAI_BASE_URL`: an OpenAI-compatible server (Ollama, vLLM, llama.cpp, ...); default OpenAI's."""
    openai_api_key: str | None = field(default=None, repr=False)
    """`OPENAI_API_KEY`: the model server's key (never logged)."""
    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    """`JOBCAST_API_KEYS`: `key:owner` pairs (comma-separated), or the path of a file of them, one a line.
    None: auth is off and every request acts as `anonymous`."""
    secret: str | None = field(default=None, repr=False)
    """`JOBCAST_SECRET`: signs stream tokens; required with API keys, the same in every API process."""
    stream_token_ttl_s: int = 900
    """`JOBCAST_STREAM_TOKEN_TTL`: how long the token in `links.events` is good for."""
    webhook_secret: str | None = field(default=None, repr=False)
    """`JOBCAST_WEBHOOK_SECRET`: the Standard Webhooks signing secret (`whsec_` + base64); needed for webhooks."""
    webhook_allow_private: bool = False
    """`JOBCAST_WEBHOOK_ALLOW_PRIVATE=1`: allow webhook URLs on loopback, private or link-local addresses."""
    webhook_retry_base_s: float = 15.0
    """`JOBCAST_WEBHOOK_RETRY_BASE_S`: a failed delivery is tried again after 1, 4, 16, 64 and 256 times this."""
    owner_webhooks: Mapping[str, str] = field(default_factory=dict)
    """`JOBCAST_OWNER_WEBHOOKS`: `owner=url` pairs, comma-separated: an owner's default webhook."""
    dashboard_user: str | None = None
    """`JOBCAST_DASHBOARD_USER`: with `_PASSWORD`, the HTTP Basic credentials of `/dashboard/`."""
    dashboard_password: str | None = field(default=None, repr=False)
    """`JOBCAST_DASHBOARD_PASSWORD`."""
    submit_rate_per_min: int = 6000
    """`JOBCAST_SUBMIT_RATE`: submissions one owner may make a minute (0: no limit)."""
    max_streams_per_token: int = 10
    """`JOBCAST_MAX_STREAMS_PER_TOKEN`: event streams one stream token may hold open on one API process (0: no
    limit), so that a leaked token cannot use up its owner's streams."""
    max_streams_per_owner: int = 200
    """`JOBCAST_MAX_STREAMS_PER_OWNER`: event streams one owner may hold open on one API process (0: no limit)."""
    allowed_hosts: tuple[str, ...] = ()
    """`JOBCAST_ALLOWED_HOSTS`: comma-separated host names requests may be addressed to (`Host`), `*.example.com`
    for a domain's subdomains, `*` for any. Default with auth on: any; with auth off: the bind address,
    `localhost`, `127.0.0.1` and `::1` (a web page on a name that resolves to this machine, DNS rebinding,
    cannot talk to it)."""
    public_url: str | None = None
    """`JOBCAST_PUBLIC_URL`: the URL clients reach this API at (`https://jobs.example.com/jobcast`), the base of
    every link it hands out (`links`, `Location`). Unset: the URL each request came to (its scheme, `Host` and
    mount prefix), which is right unless a proxy rewrites the host or the path."""
    forwarded_allow_ips: str = "127.0.0.1"
    """`JOBCAST_FORWARDED_ALLOW_IPS`: comma-separated addresses (or `*`) of proxies whose `X-Forwarded-Proto`
    and `X-Forwarded-For` `jobcast serve` believes (uvicorn's `--forwarded-allow-ips`)."""
    cors_origins: tuple[str, ...] = ()
    """`JOBCAST_CORS_ORIGINS`: comma-separated origins whose pages may call this API (none by default)."""
    max_running_per_owner: int = 3
    """`JOBCAST_MAX_RUNNING_PER_OWNER`: started jobs one owner may have at once (a job keeps its slot between
    automatic retries); a start past it waits in the owner's line (0: no limit)."""
    job_modules: tuple[str, ...] = ()
    """`JOBCAST_JOB_MODULES`: comma-separated modules to import for their `@job_type` functions."""
    host: str = "127.0.0.1"
    """`JOBCAST_HOST`: the address `jobcast serve` and `jobcast dev` bind to."""
    port: int = 8000
    """`JOBCAST_PORT`: the port `jobcast serve` and `jobcast dev` listen on."""
    api_workers: int = 1
    """`JOBCAST_API_WORKERS`: API processes `jobcast serve` runs."""
    dev_workers: int = 2
    """`JOBCAST_DEV_WORKERS`: in-process workers `jobcast dev` runs."""
    log_level: str = "info"
    """`JOBCAST_LOG_LEVEL`: debug, info, warning or error."""
    log_format: str = "text"
    """`JOBCAST_LOG_FORMAT`: `text`, or `json` for one JSON object per line (with `job_id` on job lines)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default: the process environment); raise ConfigError on a bad one."""
        env = os.environ if env is None else env
        log_level = _str(env, "JOBCAST_LOG_LEVEL", "info").lower()
        if log_level not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"JOBCAST_LOG_LEVEL={log_level!r} is not a level; use debug, info, warning or error.")
        log_format = _str(env, "JOBCAST_LOG_FORMAT", "text").lower()
        if log_format not in {"text", "json"}:
            raise ConfigError(f"JOBCAST_LOG_FORMAT={log_format!r} is not a format; use text or json.")
        prefix = _str(env, "JOBCAST_PREFIX", "jc")
        if any(c in prefix for c in " {}"):
            raise ConfigError(f"JOBCAST_PREFIX={prefix!r} may not contain spaces or braces.")
        modules = tuple(m.strip() for m in env.get("JOBCAST_JOB_MODULES", "").split(",") if m.strip())
        api_keys = _api_keys(env.get("JOBCAST_API_KEYS", ""))
        webhook_secret = env.get("JOBCAST_WEBHOOK_SECRET") or None
        if webhook_secret is not None:
            try:
                from standardwebhooks.webhooks import Webhook

                Webhook(webhook_secret)
            except Exception:
                raise ConfigError("JOBCAST_WEBHOOK_SECRET is not a Standard Webhooks secret: use 'whsec_' followed "
                                  "by base64, e.g. whsec_$(openssl rand -base64 32).") from None
        secret = env.get("JOBCAST_SECRET") or None
        if api_keys and (secret is None or len(secret) < 16):
            raise ConfigError("JOBCAST_API_KEYS is set, so stream tokens must be signed: set JOBCAST_SECRET to a "
                              "random string of at least 16 characters, the same in every API process.")
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            prefix=prefix,
            queue=_str(env, "JOBCAST_QUEUE", "default"),
            job_ttl_s=_int(env, "JOBCAST_JOB_TTL", 86400, 1, 365 * 86400),
            max_body_bytes=_int(env, "JOBCAST_MAX_BODY", 256 * 1024, 1024, 64 * 1024 * 1024),
            events_kept=_int(env, "JOBCAST_EVENTS_KEPT", 1000, 1000, 1_000_000),
            items_kept=_int(env, "JOBCAST_ITEMS_KEPT", 1000, 1000, 1_000_000),
            sse_retry_ms=_int(env, "JOBCAST_SSE_RETRY_MS", 2000, 100, 600_000),
            ping_interval_s=_int(env, "JOBCAST_PING_MS", 15000, 100, 15000) / 1000,
            stream_max_lag_s=_int(env, "JOBCAST_STREAM_MAX_LAG_S", 10, 1, 3600),
            progress_interval_s=_int(env, "JOBCAST_PROGRESS_INTERVAL_MS", 50, 10, 10_000) / 1000,
            heartbeat_deadline_s=_int(env, "JOBCAST_HEARTBEAT_S", 20, 2, 300),
            cancel_grace_s=_int(env, "JOBCAST_CANCEL_GRACE_MS", 3000, 0, 60_000) / 1000,
            retry_base_s=_int(env, "JOBCAST_RETRY_BASE_MS", 2000, 0, 600_000) / 1000,
            model=env.get("JOBCAST_MODEL") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            api_keys=api_keys,
            secret=secret,
            stream_token_ttl_s=_int(env, "JOBCAST_STREAM_TOKEN_TTL", 900, 1, 86400),
            webhook_secret=webhook_secret,
            webhook_allow_private=env.get("JOBCAST_WEBHOOK_ALLOW_PRIVATE") == "1",
            webhook_retry_base_s=_int(env, "JOBCAST_WEBHOOK_RETRY_BASE_S", 15, 1, 3600),
            owner_webhooks=_owner_webhooks(env.get("JOBCAST_OWNER_WEBHOOKS", "")),
            dashboard_user=env.get("JOBCAST_DASHBOARD_USER") or None,
            dashboard_password=env.get("JOBCAST_DASHBOARD_PASSWORD") or None,
            submit_rate_per_min=_int(env, "JOBCAST_SUBMIT_RATE", 6000, 0, 10_000_000),
            max_streams_per_owner=_int(env, "JOBCAST_MAX_STREAMS_PER_OWNER", 200, 0, 1_000_000),
            max_streams_per_token=_int(env, "JOBCAST_MAX_STREAMS_PER_TOKEN", 10, 0, 1_000_000),
            allowed_hosts=tuple(h.strip().lower() for h in env.get("JOBCAST_ALLOWED_HOSTS", "").split(",")
                                if h.strip()),
            public_url=_public_url(env.get("JOBCAST_PUBLIC_URL", "")),
            forwarded_allow_ips=_str(env, "JOBCAST_FORWARDED_ALLOW_IPS", "127.0.0.1"),
            cors_origins=tuple(o.strip() for o in env.get("JOBCAST_CORS_ORIGINS", "").split(",") if o.strip()),
            max_running_per_owner=_int(env, "JOBCAST_MAX_RUNNING_PER_OWNER", 3, 0, 100_000),
            job_modules=modules,
            host=_str(env, "JOBCAST_HOST", "127.0.0.1"),
            port=_int(env, "JOBCAST_PORT", 8000, 1, 65535),
            api_workers=_int(env, "JOBCAST_API_WORKERS", 1, 1, 64),
            dev_workers=_int(env, "JOBCAST_DEV_WORKERS", 2, 0, 32),
            log_level=log_level,
            log_format=log_format,
        )

    def hosts_allowed(self) -> tuple[str, ...]:
        """`JOBCAST_ALLOWED_HOSTS`, or its default (see `allowed_hosts`)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.api_keys:
            return ("*",)
        return tuple(dict.fromkeys((self.host.lower(), "localhost", "127.0.0.1", "::1")))

    def model_unavailable(self) -> str | None:
        """Why the LLM job types cannot run here, or None when they can."""
        if not self.model:
            return ("no model is configured: set JOBCAST_MODEL (and OPENAI_API_KEY, or OPENAI_BASE_URL for an "
                    "OpenAI-compatible server such as Ollama or vLLM)")
        if not self.openai_api_key and not self.openai_base_url:
            return "JOBCAST_MODEL is set but the model server is not: set OPENAI_API_KEY, or OPENAI_BASE_URL"
        return None

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed (for the CLI's flags and for tests)."""
        return replace(self, **changes)
