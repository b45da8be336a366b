"""One frozen `Settings` object, built from the environment and validated at start-up.

Every knob jobcast has is declared here once: its field, default, environment variable, how its text is
read and what it means (`knob(...)`); `Settings.from_env` reads them all from those declarations. The
README's configuration table is written from this file. `ClientSettings` holds the two a client reads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from jobcast.errors import ConfigError

__all__ = ["ClientSettings", "DEFAULT_REDIS_URL", "OWNER_PATTERN", "Settings"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Where a process looks for Redis without `REDIS_URL` (`jobcast dev` brings its own instead)."""

Reader = Callable[[str, str], Any]
"""How a variable's text becomes its value: `read(name, text)`, raising ConfigError with what to set."""


def knob(default: Any, env: str | None, read: Reader, doc: str, *, secret: bool = False) -> Any:
    """One setting: its default, its environment variable (None: set by code only), how its text is read
    (an empty or unset variable keeps the default), and what it means; a `secret` is never shown (repr)."""
    metadata = {"env": env, "read": read, "doc": doc}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


def integer(lo: int, hi: int, per: int = 1) -> Reader:
    """A whole number from `lo` to `hi`, divided by `per` (milliseconds read as seconds: `per=1000`)."""

    def read(name: str, raw: str) -> int | float:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number; set it to an integer from {lo} "
                              f"to {hi}.") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range; set it to an integer from {lo} to {hi}.")
        return value / per if per != 1 else value

    return read


def text(name: str, raw: str) -> str:
    return raw.strip()


def raw_text(name: str, raw: str) -> str:
    """The text as given (a secret, a URL): not even stripped."""
    return raw


def flag(name: str, raw: str) -> bool:
    """`1` is on; anything else off."""
    return raw == "1"


def items(lower: bool = False) -> Reader:
    """Comma-separated, blanks dropped."""

    def read(name: str, raw: str) -> tuple[str, ...]:
        return tuple((i.strip().lower() if lower else i.strip()) for i in raw.split(",") if i.strip())

    return read


def _prefix(name: str, raw: str) -> str:
    prefix = raw.strip()
    if any(c in prefix for c in " {}"):
        raise ConfigError(f"{name}={prefix!r} may not contain spaces or braces.")
    return prefix


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"{name}={level!r} is not a level; use debug, info, warning or error.")
    return level


def _log_format(name: str, raw: str) -> str:
    log_format = raw.strip().lower()
    if log_format not in {"text", "json"}:
        raise ConfigError(f"{name}={log_format!r} is not a format; use text or json.")
    return log_format


def _webhook_secret(name: str, raw: str) -> str:
    try:
        from standardwebhooks.webhooks import Webhook

        Webhook(raw)
    except Exception:
        raise ConfigError(f"{name} is not a Standard Webhooks secret: use 'whsec_' followed by base64, e.g. "
                          "whsec_$(openssl rand -base64 32).") from None
    return raw


OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
"""What an owner's name may be (in `JOBCAST_API_KEYS`, or given to `jobcast.submit`)."""


def _api_keys(name: str, raw: str) -> dict[str, str]:
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


def _owner_webhooks(name: str, raw: str) -> dict[str, str]:
    hooks: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",") if e.strip()):
        owner, sep, url = entry.partition("=")
        if not sep or not OWNER_PATTERN.match(owner) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"JOBCAST_OWNER_WEBHOOKS entry {entry!r} is not owner=http(s)://url.")
        hooks[owner] = url
    return hooks


def _prices(name: str, raw: str) -> dict[str, tuple[float, float]]:
    prices: dict[str, tuple[float, float]] = {}
    for entry in (e.strip() for e in raw.split(",") if e.strip()):
        model, sep, pair = entry.rpartition("=")
        given, _, taken = pair.partition("/")
        try:
            price = (float(given), float(taken))
        except ValueError:
            price = (-1.0, -1.0)
        if not sep or not model or min(price) < 0 or not all(map(math.isfinite, price)):
            raise ConfigError(f"{name} entry {entry!r} is not model=input/output (US dollars per million prompt "
                              "and completion tokens), e.g. gpt-4o-mini=0.15/0.60")
        prices[model] = price
    return prices


def _public_url(name: str, raw: str) -> str | None:
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

    redis_url: str | None = knob(None, "REDIS_URL", raw_text, f"""The Redis for jobs, events and RQ: `redis://`,
        `rediss://`, or Sentinel nodes and the primary's name, `redis+sentinel://host:26379,host:26379/name/db`;
        unset: `{DEFAULT_REDIS_URL}` (`jobcast dev`: a private Redis).""")
    prefix: str = knob("jc", "JOBCAST_PREFIX", _prefix, "The first part of every jobcast Redis key.")
    queue: str = knob("default", "JOBCAST_QUEUE", text,
                      "The RQ queue that jobs are enqueued on and workers listen to.")
    job_ttl_s: int = knob(86400, "JOBCAST_JOB_TTL", integer(1, 365 * 86400),
                          "How long a finished job, its events and output stay readable (s).")
    max_body_bytes: int = knob(256 * 1024, "JOBCAST_MAX_BODY", integer(1024, 64 * 1024 * 1024),
                               "The largest request body the API reads.")
    events_kept: int = knob(1000, "JOBCAST_EVENTS_KEPT", integer(1000, 1_000_000),
                            "At least this many of a job's latest events are kept for resuming.")
    items_kept: int = knob(1000, "JOBCAST_ITEMS_KEPT", integer(1000, 1_000_000),
                           "At least this many of a job's latest output items are kept.")
    feed_kept: int = knob(50_000, "JOBCAST_FEED_KEPT", integer(1000, 10_000_000),
                          "At least this many of an owner's latest events (of all its jobs) are kept for resuming "
                          "streams of many jobs (`GET /events`); a cursor older than that starts afresh.")
    sse_retry_ms: int = knob(2000, "JOBCAST_SSE_RETRY_MS", integer(100, 600_000),
                             "The reconnect delay the event stream tells browsers.")
    ping_interval_s: float = knob(15.0, "JOBCAST_PING_MS", integer(100, 15000, per=1000),
                                  "The longest an idle event stream goes without a `: ping` comment.")
    stream_max_lag_s: float = knob(10, "JOBCAST_STREAM_MAX_LAG_S", integer(1, 3600), """A stream whose client
        has not taken an event this long after it happened (a stalled or too slow reader) is closed; the
        client resumes from its last id once it reads again.""")
    progress_interval_s: float = knob(0.05, "JOBCAST_PROGRESS_INTERVAL_MS", integer(10, 10_000, per=1000),
                                      "Pure progress changes of one job are sent at most this often.")
    heartbeat_deadline_s: float = knob(20, "JOBCAST_HEARTBEAT_S", integer(2, 300),
                                       "A running job whose worker has not been heard from this long is lost.")
    cancel_grace_s: float = knob(3.0, "JOBCAST_CANCEL_GRACE_MS", integer(0, 60_000, per=1000),
                                 "How long canceled job code may take to stop by itself before it is stopped.")
    retry_base_s: float = knob(2.0, "JOBCAST_RETRY_BASE_MS", integer(0, 600_000, per=1000),
                               "The first automatic retry waits about this long, each next one twice as long.")
    model: str | None = knob(None, "JOBCAST_MODEL", raw_text,
                             "The model the LLM job types ask; without one they are unavailable.")
    stand_in_model: bool = knob(False, None, flag, """Set by `jobcast dev` (never from the environment) when no
        model is configured and it serves the LLM types from its stand-in (`jobcast.llm.fake`): `GET
        /job-types` and the page then say so.""")
    model_concurrency: int = knob(0, "JOBCAST_MODEL_CONCURRENCY", integer(0, 100_000), """The most calls to the
        model at once, across every worker on every machine (0: no limit). A call waits for a free one, its job's
        message saying so; owners take turns.""")
    model_rpm: int = knob(0, "JOBCAST_MODEL_RPM", integer(0, 10_000_000), """The most requests to the model in any
        minute, across every worker (0: no limit); a call waits for room, its job's message saying so.""")
    model_tpm: int = knob(0, "JOBCAST_MODEL_TPM", integer(0, 1_000_000_000), """The most tokens (prompt and answer)
        of the model's calls in any minute, across every worker (0: no limit). A call reserves its prompt (about 4
        characters a token) and its `max_tokens` before it goes, corrected to what the server reports after.""")
    model_lease_s: float = knob(60.0, "JOBCAST_MODEL_LEASE_MS", integer(1000, 3_600_000, per=1000), """How long a
        call's hold on one of those lasts unless renewed (its worker renews it while the call streams): the
        capacity a dead worker held comes back after this.""")
    model_prices: Mapping[str, tuple[float, float]] = knob({}, "JOBCAST_MODEL_PRICES", _prices, """Per model,
        US dollars per million prompt and completion tokens (`gpt-4o-mini=0.15/0.60`, comma-separated): a job's
        `usage.cost_usd`; null for a model without a price.""")
    openai_base_url: str | None = knob(None, "OPENAI_BASE_URL", raw_text, """An OpenAI-compatible server
        (Ollama, vLLM, llama.cpp, ...); default OpenAI's.""")
    openai_api_key: str | None = knob(None, "OPENAI_API_KEY", raw_text, "The model server's key (never logged).",
                                      secret=True)
    api_keys: Mapping[str, str] = knob({}, "JOBCAST_API_KEYS", _api_keys, """`key:owner` pairs
        (comma-separated), or the path of a file of them, one a line. None: auth is off and every request
        acts as `anonymous`.""", secret=True)
    secret: str | None = knob(None, "JOBCAST_SECRET", raw_text, """Signs stream tokens; required with API keys, the
        same in every API process.""", secret=True)
    stream_token_ttl_s: int = knob(900, "JOBCAST_STREAM_TOKEN_TTL", integer(1, 86400),
                                   "How long the token in `links.events` is good for.")
    webhook_secret: str | None = knob(None, "JOBCAST_WEBHOOK_SECRET", _webhook_secret, """The Standard Webhooks signing
        secret (`whsec_` + base64); needed for webhooks.""", secret=True)
    webhook_allow_private: bool = knob(False, "JOBCAST_WEBHOOK_ALLOW_PRIVATE", flag,
                                       "`1`: allow webhook URLs on loopback, private or link-local addresses.")
    webhook_retry_base_s: float = knob(15, "JOBCAST_WEBHOOK_RETRY_BASE_S", integer(1, 3600),
                                       "A failed delivery is tried again after 1, 4, 16, 64 and 256 times this.")
    owner_webhooks: Mapping[str, str] = knob({}, "JOBCAST_OWNER_WEBHOOKS", _owner_webhooks,
                                             "`owner=url` pairs, comma-separated: an owner's default webhook.")
    dashboard_user: str | None = knob(None, "JOBCAST_DASHBOARD_USER", raw_text,
                                      "With `_PASSWORD`, the HTTP Basic credentials of `/dashboard/`.")
    dashboard_password: str | None = knob(None, "JOBCAST_DASHBOARD_PASSWORD", raw_text,
                                          "See `JOBCAST_DASHBOARD_USER`.", secret=True)
    submit_rate_per_min: int = knob(6000, "JOBCAST_SUBMIT_RATE", integer(0, 10_000_000),
                                    "Submissions one owner may make a minute (0: no limit).")
    max_streams_per_token: int = knob(10, "JOBCAST_MAX_STREAMS_PER_TOKEN", integer(0, 1_000_000), """Event
        streams one stream token may hold open on one API process (0: no limit), so that a leaked token
        cannot use up its owner's streams.""")
    max_streams_per_owner: int = knob(200, "JOBCAST_MAX_STREAMS_PER_OWNER", integer(0, 1_000_000),
                                      "Event streams one owner may hold open on one API process (0: no limit).")
    allowed_hosts: tuple[str, ...] = knob((), "JOBCAST_ALLOWED_HOSTS", items(lower=True), """Comma-separated
        host names requests may be addressed to (`Host`), `*.example.com` for a domain's subdomains, `*` for
        any. Default with auth on: any; with auth off: the bind address, `localhost`, `127.0.0.1` and `::1`
        (a web page on a name that resolves to this machine, DNS rebinding, cannot talk to it).""")
    public_url: str | None = knob(None, "JOBCAST_PUBLIC_URL", _public_url, """The URL clients reach this API
        at (`https://jobs.example.com/jobcast`), the base of every link it hands out (`links`, `Location`).
        Unset: the URL each request came to (its scheme, `Host` and mount prefix), which is right unless a
        proxy rewrites the host or the path.""")
    forwarded_allow_ips: str = knob("127.0.0.1", "JOBCAST_FORWARDED_ALLOW_IPS", text, """Comma-separated
        addresses (or `*`) of proxies whose `X-Forwarded-Proto` and `X-Forwarded-For` `jobcast serve`
        believes (uvicorn's `--forwarded-allow-ips`).""")
    cors_origins: tuple[str, ...] = knob((), "JOBCAST_CORS_ORIGINS", items(),
                                         "Comma-separated origins whose pages may call this API (none by default).")
    max_running_per_owner: int = knob(3, "JOBCAST_MAX_RUNNING_PER_OWNER", integer(0, 100_000), """Started jobs
        one owner may have at once (a job keeps its slot between automatic retries); a start past it waits
        in the owner's line (0: no limit).""")
    job_modules: tuple[str, ...] = knob((), "JOBCAST_JOB_MODULES", items(),
                                        "Comma-separated modules to import for their `@job_type` functions.")
    host: str = knob("127.0.0.1", "JOBCAST_HOST", text, "The address `jobcast serve` and `jobcast dev` bind to.")
    port: int = knob(8000, "JOBCAST_PORT", integer(1, 65535), "The port `jobcast serve` and `jobcast dev` use.")
    api_workers: int = knob(1, "JOBCAST_API_WORKERS", integer(1, 64), "API processes `jobcast serve` runs.")
    dev_workers: int = knob(2, "JOBCAST_DEV_WORKERS", integer(0, 32), "In-process workers `jobcast dev` runs.")
    worker_burst: bool = knob(False, "JOBCAST_WORKER_BURST", flag,
                              "`1`: `jobcast worker` quits once its queues are empty (`--burst`).")
    worker_simple: bool = knob(False, "JOBCAST_WORKER_SIMPLE", flag, """`1`: `jobcast worker` runs jobs in its
        own process instead of a forked one (`--simple`).""")
    worker_name: str | None = knob(None, "JOBCAST_WORKER_NAME", text, "The worker's name (`--name`); RQ's.")
    log_level: str = knob("info", "JOBCAST_LOG_LEVEL", _log_level, "debug, info, warning or error.")
    log_format: str = knob("text", "JOBCAST_LOG_FORMAT", _log_format, """`text`, or `json` for one JSON object
        per line (with `job_id` on job lines).""")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default: the process environment); raise ConfigError on a bad one."""
        settings = cls(**_read(cls, os.environ if env is None else env))
        if settings.api_keys and (settings.secret is None or len(settings.secret) < 16):
            raise ConfigError("JOBCAST_API_KEYS is set, so stream tokens must be signed: set JOBCAST_SECRET to a "
                              "random string of at least 16 characters, the same in every API process.")
        return settings

    @property
    def webhook_queue(self) -> str:
        """The RQ queue webhook deliveries go to: `JOBCAST_QUEUE` + `-webhooks`."""
        return f"{self.queue}-webhooks"

    @property
    def redis_target(self) -> str:
        """`REDIS_URL`, or the default one."""
        return self.redis_url or DEFAULT_REDIS_URL

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


@dataclass(frozen=True)
class ClientSettings:
    """What `jobcast.Client` and the CLI's client commands read (nothing of the server's)."""

    url: str = knob("http://127.0.0.1:8000", "JOBCAST_URL", text, "Where the API is.")
    api_key: str | None = knob(None, "JOBCAST_API_KEY", raw_text, "The API key to send.", secret=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        return cls(**_read(cls, os.environ if env is None else env))


def _read(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """Each declared field's value from `env`: read by its knob, or its default when unset or blank."""
    values = {}
    for f in fields(cls):
        name = f.metadata.get("env")
        raw = env.get(name) if name else None
        if raw is not None and raw.strip() != "":
            values[f.name] = f.metadata["read"](name, raw)
    return values
