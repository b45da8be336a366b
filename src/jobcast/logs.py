"""Log set-up for every jobcast process: text for people, or one JSON object per line.

`JOBCAST_LOG_FORMAT=json` writes `{"ts", "level", "logger", "message", "job_id"?, "exc"?}`
per line. A line gets `job_id` when it is written while a job runs (the
runner sets `current_job`), or when it names a job id (jobcast's own "job
<id>: ..." lines, RQ's lines about its jobs, uvicorn's access lines for
`/jobs/<id>`), so `job_id == "..."` finds everything about one job across the
API, the workers and RQ.

No line shows a secret: credentials in URLs (`redis://:password@host`,
`https://user:pass@hook.example`) and the values of `token=`, `key=`,
`secret=`, `password=` and similar query parameters (stream tokens in
uvicorn's access lines) are masked in every line, whoever wrote it.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

from jobcast.settings import Settings

__all__ = ["JsonFormatter", "TextFormatter", "current_job", "redact", "setup_logging"]

current_job: ContextVar[str | None] = ContextVar("jobcast_current_job", default=None)
"""The id of the job this thread (or task) is running, for its log lines."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:[a-z_]*token|[a-z_]*key|secret|password|passwd|pwd|sig|signature)=)"
                           r"[^&#\s\"']+")


def redact(text: str) -> str:
    """`text` with URL credentials and secret-looking query values masked (`***`)."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


class TextFormatter(logging.Formatter):
    """The text format, secrets masked (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

_JOB_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{32})(?![0-9a-f])")


def job_id_of(record: logging.LogRecord, message: str) -> str | None:
    explicit = getattr(record, "job_id", None)
    if isinstance(explicit, str):
        return explicit
    running = current_job.get()
    if running is not None:
        return running
    found = _JOB_ID.search(message)
    return found.group(1) if found else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the job id when the line is about a job; secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        job_id = job_id_of(record, message)
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line).decode())


def setup_logging(settings: Settings) -> None:
    """Send every logger (jobcast's, RQ's, uvicorn's) to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
