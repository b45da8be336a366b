"""The job record as Redis holds it, and the job object the contract shows for it.

A record is a flat hash of strings; an empty string stands for `null`. The
fields that hold JSON (`tags`, `payload`, `result`, `error`, `webhook`) are
stored as JSON text and passed through to clients without being parsed again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from jobcast.states import TERMINAL, Stage, Status

__all__ = [
    "PART_COUNTS",
    "Part",
    "QUEUED_MESSAGE",
    "WAITING_MESSAGE",
    "decode",
    "format_progress",
    "job_object",
    "now_iso",
    "now_ms",
    "part_ids",
    "part_of",
    "pending_webhook",
    "queued_message",
]

@dataclass(frozen=True, slots=True)
class Part:
    """A job that is part `index` (0-based) of the batch `parent`, counting `weight` in its progress."""

    parent: str
    index: int
    weight: float


def part_of(record: Mapping[str, str]) -> Part | None:
    """The batch a job's record says it is a part of, or None."""
    parent = record.get("parent_id")
    if not parent:
        return None
    return Part(parent, int(record["part"]), float(record.get("weight") or 1))


PART_COUNTS: Final = ("total", "queued", "running", "completed", "failed", "canceled")
"""A batch's `parts` counts, each a field `parts_<name>` of its record."""

def part_ids(record: Mapping[str, str]) -> list[str]:
    """The ids of a batch's parts in part order ([] for a job that is no batch)."""
    raw = record.get("part_ids")
    return list(orjson.loads(raw)) if raw else []


QUEUED_MESSAGE: Final = "Queued ({n} ahead)"
"""The message of a job waiting in its RQ queue; `{n}` is how many jobs are ahead."""

WAITING_MESSAGE: Final = "Waiting for a free slot ({n} ahead; at most {limit} of your jobs run at once)"
"""The message of a job waiting for one of its owner's slots; `{n}` is how many of the owner's jobs are ahead."""


def queued_message(ahead: int) -> str:
    return QUEUED_MESSAGE.replace("{n}", str(ahead))


def now_ms() -> int:
    """The current time in Unix milliseconds: the clock of every score and deadline jobcast keeps."""
    return time.time_ns() // 1_000_000


def now_iso() -> str:
    """The current time as the contract writes it: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_progress(pct: float) -> str:
    """Clamp to 0..100 and keep at most one decimal: `42`, `42.5`."""
    value = round(min(100.0, max(0.0, float(pct))), 1)
    return str(int(value)) if value.is_integer() else str(value)


def pending_webhook(url: str) -> str:
    """The `webhook` field of a job whose delivery is yet to be made."""
    return orjson.dumps({"url": url, "state": "pending", "attempts": 0, "last_status": None}).decode()


def decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A record as redis-py returns it (bytes) as text."""
    return {k.decode(): v.decode() for k, v in raw.items()}


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def _json(text: str | None) -> orjson.Fragment | None:
    return orjson.Fragment(text) if text else None


def _opt(text: str | None) -> str | None:
    return text or None


def job_object(
    record: Mapping[str, str],
    items: Sequence[bytes | str],
    queue_position: int | None,
    *,
    include_last_event_id: bool = True,
    webhook_url: bool = True,
) -> dict[str, Any]:
    """The contract's job object (without `links`, which depend on who asks).

    `queue_position` is the live count of jobs ahead in the RQ queue, or None;
    a job still waiting there gets its message from it, so the two agree.
    `webhook_url=False` leaves the webhook's URL out (it may carry a secret):
    for events, and for readers holding only a stream token.
    """
    status = record["status"]
    message = record["message"]
    if status != Status.QUEUED:
        queue_position = None
    elif record.get("stage") == Stage.QUEUED:
        # Off the RQ list but not started yet: a worker has just taken it, so nothing is ahead.
        queue_position = 0 if queue_position is None else queue_position
        message = queued_message(queue_position)
    elif record.get("stage") == Stage.WAITING and record.get("queue_position"):
        queue_position = int(record["queue_position"])
    eta = record.get("eta_s")
    obj: dict[str, Any] = {
        "id": record["id"],
        "type": record["type"],
        "status": status,
        "progress": _number(record["progress"]),
        "message": message,
        "stage": _opt(record.get("stage")),
        "attempt": int(record["attempt"]),
        "max_attempts": int(record["max_attempts"]),
        "queue_position": queue_position,
        "eta_s": int(eta) if eta and status not in TERMINAL else None,
        "tags": orjson.Fragment(record.get("tags") or "{}"),
        "created_at": record["created_at"],
        "started_at": _opt(record.get("started_at")),
        "ended_at": _opt(record.get("ended_at")),
    }
    if include_last_event_id:
        obj["last_event_id"] = int(record["seq"])
    obj["output"] = {"items": [orjson.Fragment(i) for i in items], "text": record.get("text", "")}
    obj["result"] = _json(record.get("result"))
    obj["error"] = _json(record.get("error"))
    hook = record.get("webhook")
    if hook and not webhook_url:
        obj["webhook"] = {k: v for k, v in orjson.loads(hook).items() if k != "url"}
    else:
        obj["webhook"] = _json(hook)
    obj["parent_id"] = record.get("parent_id") or None
    obj["parts"] = ({name: int(record.get(f"parts_{name}") or 0) for name in PART_COUNTS}
                    if record.get("parts_total") else None)
    obj["usage"] = _usage(record) if record.get("usage_calls") else None
    return obj


def _usage(record: Mapping[str, str]) -> dict[str, Any]:
    """A job's `usage` from its record: in all its attempts (`usage_*`) and in this one (`usage_a_*`)."""

    def figures(scope: str) -> dict[str, Any]:
        cost = record.get(f"{scope}cost")
        return {"calls": int(record.get(f"{scope}calls") or 0), "prompt_tokens": int(record.get(f"{scope}prompt") or 0),
                "completion_tokens": int(record.get(f"{scope}completion") or 0),
                "cost_usd": round(float(cost), 6) if cost else None, "estimated": bool(record.get(f"{scope}estimated"))}

    return {**figures("usage_"), "attempt": figures("usage_a_")}
