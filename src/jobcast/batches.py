"""Batches: one job in many parts, run by any free worker, followed as one job.

Job code calls `ctx.parts(type, payloads, weights)`. `split` creates the parts,
jobs of their own (the parent's owner and tags, no webhook: the batch's fires
once; `parent_id`, their index and weight on each record), enqueued in one MULTI
with the parent's move to stage `parts` ("0/N parts done"). The parent then gives
its worker back (`context.PartsStarted`): it stays `running` with its attempt, out of the
running set (no code of its runs, so no heartbeat) and without one of its
owner's slots (the parts take them). Every change of a part changes its parent in
the same script (`to_parent` in `store/lua/lib.lua`): the parts' counts, the
progress (the parts' weighted sum over what was left when it split, never going
down), each item (with the part's index), "k/N parts done". The last part to end
moves the parent to stage `join`, due now in the delayed set; a worker then runs
the type's join with the parts' results in part order (`runner.Attempt`), and the
parent ends as any job does.

The moves that end a batch early are in `transitions.py`: a part that fails
after its own attempts fails the batch with `part_failed` and cancels the rest
(unless the type takes partial results: its join then gets what completed), and
canceling the batch cancels every part not ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from jobcast import transitions
from jobcast.context import JobCanceled
from jobcast.registry import JobType
from jobcast.states import TERMINAL, Outcome, Stage, Status
from jobcast.store import Store, trips
from jobcast.store.record import format_progress, now_iso, now_ms, part_ids
from jobcast.submission import stored_payload

__all__ = ["MAX_PARTS", "PartResults", "results", "resume", "split"]

MAX_PARTS = 1000
"""The most parts one batch may have."""


@dataclass(frozen=True)
class PartResults:
    """What a batch's join gets: each part's result in part order (None for a part that did not complete),
    the parts that did not, as `{"part", "id", "status", "error"}`, and the `state` the job split with."""

    results: list[Any]
    failed: list[dict[str, Any]]
    state: Any = None


def split(store: Store, record: Mapping[str, str], part_type: JobType, payloads: Sequence[BaseModel],
          weights: Sequence[float] | None, partial: bool, state: Any = None, progress: float = 0,
          items: Sequence[bytes] = ()) -> list[str]:
    """Create the parts of the running job `record` (at `progress` now, with output `items` of its own) and
    move it to stage `parts`; the parts' ids. Raises ValueError for weights that do not fit, JobCanceled when
    the job stopped meanwhile (a cancel), RuntimeError when its record kept changing."""
    n = len(payloads)
    if not 1 <= n <= MAX_PARTS:
        raise ValueError(f"a batch has from 1 to {MAX_PARTS} parts, not {n}")
    shares = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(shares) != n or any(not w > 0 for w in shares):
        raise ValueError(f"weights: one positive number per part ({n}), got {list(weights or [])!r}")
    parent, owner = record["id"], record["owner"]
    created_ms, ts = now_ms(), now_iso()
    parts = [{
        "id": uuid.uuid4().hex, "type": part_type.name, "owner": owner, "status": Status.QUEUED, "progress": "0",
        "stage": Stage.QUEUED, "attempt": "1", "max_attempts": str(part_type.max_attempts),
        "timeout_s": str(part_type.timeout_s), "tags": record.get("tags") or "{}",
        "payload": stored_payload(payload), "queue": record["queue"], "created_at": ts, "created_ms": str(created_ms),
        "idem_key": "", "webhook": "", "parent_id": parent, "part": str(i), "weight": repr(shares[i]),
    } for i, payload in enumerate(payloads)]
    ids = [p["id"] for p in parts]
    fields = {
        "stage": Stage.PARTS, "message": f"0/{n} parts done", "part_ids": orjson.dumps(ids).decode(),
        "partial": "1" if partial else "", "parts_total": str(n), "parts_queued": str(n), "parts_running": "0",
        "parts_completed": "0", "parts_failed": "0", "parts_canceled": "0", "parts_wsum": repr(sum(shares)),
        "parts_psum": "0", "parts_from": format_progress(progress),
        "parts_state": orjson.dumps(state).decode() if state is not None else "",
        "own_items": (b"[" + b",".join(items) + b"]").decode() if items else "",  # (a retry starts with them)
    }

    def move_parent(pipe: Any) -> None:
        store.emit(parent, "state", owner=owner, ts=ts, fields=fields, guard_status=(Status.RUNNING,),
                   guard_attempt=int(record["attempt"]), pipe=pipe)
        store.set_aside(owner, parent, pipe)

    for _ in range(5):
        outcome = trips.create_parts(store, parent, record["attempt"], parts, created_ms, ts, move_parent)
        if outcome == "ok":
            return ids
        if outcome == "stopped":
            raise JobCanceled("the job stopped (or was asked to cancel) before its parts were created")
    raise RuntimeError("the job's record kept changing while its parts were being created")


def results(store: Store, record: Mapping[str, str]) -> PartResults:
    """The parts' results of the batch `record`, in part order, and which parts did not complete."""
    out: list[Any] = []
    failed: list[dict[str, Any]] = []
    for i, part_id in enumerate(part_ids(record)):
        part = store.load(part_id)
        if part is not None and part["status"] == Status.COMPLETED:
            out.append(orjson.loads(part["result"]) if part.get("result") else None)
            continue
        out.append(None)
        status = part["status"] if part is not None else "gone"
        error = orjson.loads(part["error"]) if part is not None and part.get("error") else None
        failed.append({"part": i, "id": part_id, "status": status if status in TERMINAL else "gone",
                       "error": error})
    state = orjson.loads(record["parts_state"]) if record.get("parts_state") else None
    return PartResults(out, failed, state)


def resume(store: Store, record: Mapping[str, str]) -> None:
    """The next attempt of a batch (`POST /retry` of a failed or canceled one) runs again only its parts that
    did not complete, keeping the others' results, items and share of the progress.

    While its parts are retried one by one, the batch is in stage `retry` (their changes count, but none
    moves it to `join`) and in the running set, kept alive here: a worker lost meanwhile is noticed, and the
    attempt fails or is tried again as any attempt. Then, in one MULTI, stage `parts` and out of the running
    set; a cancel that came meanwhile ends it now, and when every part has ended by then, its join is due.
    """
    ids = part_ids(record)
    parts = dict(zip(ids, (store.load(i) for i in ids), strict=True))
    gone = [i for i, p in parts.items() if p is None]
    if gone:
        raise LookupError(f"{len(gone)} of its parts are gone (deleted, or past JOBCAST_JOB_TTL_S), {gone[0]} "
                          "first: submit the job again")
    left = [i for i, p in parts.items() if p is not None and p["status"] != Status.COMPLETED]
    job_id, owner, attempt = record["id"], record["owner"], int(record["attempt"])

    def move(fields: dict[str, str], pipe: Any = None) -> bool:
        res = store.emit(job_id, "state", owner=owner, ts=now_iso(), guard_status=(Status.RUNNING,),
                         guard_attempt=attempt, fields=fields, pipe=pipe)
        return res.outcome in (Outcome.OK, Outcome.SAME)

    if not move({"stage": Stage.RETRY, "parts_from": "0",
                 "message": f"Running again the {len(left)} parts that did not complete"}):
        return  # (it moved on meanwhile)
    own = orjson.loads(record["own_items"]) if record.get("own_items") else []
    store.append_items(job_id, [orjson.dumps(i) for i in own] +
                       [item for i in ids if i not in left for item in store.output_items(i)])
    for part_id in left:
        if store.cancel_requested(job_id) or not store.heartbeat(job_id, attempt):
            break
        transitions.retry(store, part_id)
    done = len(ids) - len(left)
    with store.multi() as pipe:
        move({"stage": Stage.PARTS, "message": f"{done}/{len(ids)} parts done"}, pipe)
        store.set_aside(owner, job_id, pipe)
        pipe.execute()
    transitions.promote(store, owner)
    now = store.load(job_id)
    if now is None or now["status"] != Status.RUNNING:
        return
    if now.get("cancel") == "1":
        transitions.cancel(store, job_id)  # (stage `parts` now: it ends at once, and so do its parts)
    elif sum(int(now.get(f"parts_{s}") or 0) for s in ("completed", "failed", "canceled")) >= len(ids):
        move({"stage": Stage.JOIN, "message": "Joining the parts' results"})
        store.due_now(job_id)
        transitions.requeue(store, job_id)
