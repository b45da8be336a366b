"""The job's state machine: every move from one status or attempt to another, one function each.

- submit (`submission.create`): -> queued; the API and `jobcast.submit`.
- start (`start`): queued -> running, or parked to wait for one of the owner's slots; the runner.
- report (`context.JobContext`, through `Store.emit` `state`, `item`, `delta`): running -> running; job code.
- retry later (`fail_attempt`): running -> queued as the next attempt, due later; the runner, `lose`.
- finish (`end_job`): -> completed, failed or canceled; the runner, `fail_attempt`, `cancel`, `reconcile`.
- lose (`lose`): running, no heartbeat -> as `fail_attempt` with `worker_lost`; the janitor.
- cancel (`cancel`): queued -> canceled at once; running -> asked to stop; the API.
- retry (`retry`): failed or canceled -> queued as the next attempt; the API.
- delete (`delete`): completed, failed or canceled -> gone; the API.
- promote (`promote`): waiting for a slot -> queued, and into RQ; an end, the janitor.
- requeue (`requeue`): due in the delayed set -> a new trip through RQ; `retry`, `promote`, the janitor.
- reconcile (`reconcile`): handed to RQ but lost there -> sent again, or failed; the janitor.
- split (`batches.split`): running -> running in stage `parts`, its parts queued; job code (`ctx.parts`).
- join (`start_join`): a batch whose parts all ended (stage `join`) -> its join runs; the runner.
- a part ends (`end_job`): its batch joins once all have; one that failed fails the batch (`fail_batch`).

Each is one guarded change of the store (one Lua script), so whichever path
comes first wins and the others are refused: every loss is reported once. A
failed attempt is retried while `attempt < max_attempts`: the job goes back
to `queued` with the next attempt number and a due time in the delayed set,
the one way back into RQ (`requeue`; `store.trips` makes each trip).
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Mapping
from typing import Any

import orjson

from jobcast.states import TERMINAL, Outcome, Stage, Status
from jobcast.store import EmitResult, Store, trips
from jobcast.store.record import job_object, now_iso, now_ms, part_ids, part_of, pending_webhook

__all__ = [
    "RQ_JOB_LOST", "batch_error_code", "cancel", "delete", "end_job", "error_json", "fail_attempt", "fail_batch",
    "lose", "part_failed_message", "promote", "reconcile", "requeue", "retry", "retry_delay", "start", "start_join",
]

log = logging.getLogger("jobcast.lifecycle")  # (the name its log lines have always had)

MAX_RETRY_DELAY_S = 300.0


def error_json(code: str, message: str, details: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message[:2000]}
    if details is not None:
        error["details"] = details
    return orjson.dumps(error).decode()


def start(store: Store, record: Mapping[str, str], run: int) -> tuple[EmitResult, dict[str, str]]:
    """Start the job's current attempt on its `run`-th trip through RQ: `running`, with its first heartbeat
    deadline; or, when its owner runs its limit of jobs already, `parked` to wait for a slot. Returns the
    outcome and the fields the record took (when it started)."""
    started = now_iso()
    fields = {"status": Status.RUNNING, "progress": "0", "message": "Starting", "stage": "", "queue_position": "",
              "eta_s": "", "started_at": started, "ended_at": "", "error": "",
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if record.get("usage_calls"):  # a new attempt's usage starts at nothing (the job's in all goes on)
        fields.update(usage_a_calls="0", usage_a_prompt="0", usage_a_completion="0", usage_a_cost="",
                      usage_a_estimated="")
    res = store.emit(record["id"], "start", owner=record["owner"], ts=started, fields=fields,
                     guard_status=(Status.QUEUED,), guard_attempt=int(record["attempt"]), guard_run=run,
                     heartbeat_ms=now_ms() + int(store.settings.heartbeat_deadline_s * 1000),
                     part=part_of(record))
    return res, fields


def start_join(store: Store, record: Mapping[str, str], run: int) -> EmitResult:
    """A batch whose parts have all ended starts its join on its `run`-th trip: back in the running set
    (its worker's heartbeat keeps it there), "Joining the parts' results"."""
    res = store.emit(record["id"], "state", owner=record["owner"], ts=now_iso(),
                     fields={"message": "Joining the parts' results", "stage": Stage.JOIN},
                     guard_status=(Status.RUNNING,), guard_attempt=int(record["attempt"]), guard_run=run)
    if res.outcome in (Outcome.OK, Outcome.SAME):
        store.joining(record["id"])
    return res


def batch_error_code(part_error: Mapping[str, Any] | None) -> str:
    """The code a batch fails with for a part that failed with `part_error`: `part_failed`, or
    `budget_exceeded` when the part ran out of the budget all the batch's parts share."""
    return "budget_exceeded" if (part_error or {}).get("code") == "budget_exceeded" else "part_failed"


def part_failed_message(failed: Mapping[str, Any], total: int) -> str:
    """The message of a batch that fails for its part `failed` (as `batches.PartResults.failed` has it)."""
    error = failed.get("error") or {}
    why = error.get("message") or failed["status"]
    return f"part {failed['part'] + 1} of {total} {failed['status']}: {why}"


def end_job(
    store: Store,
    record: Mapping[str, str],
    status: str,
    *,
    fields: Mapping[str, str],
    items: list[bytes],
    guard_status: tuple[str, ...],
) -> EmitResult:
    """Emit the terminal event: set `fields` on the record and publish the whole job object.

    A job with a webhook gets a delivery of its own for every terminal status
    an attempt reaches (a job that failed, then completed after `POST /retry`,
    sends both), and its `webhook` field starts again as that delivery's state.
    """
    hook = record.get("webhook")
    if hook:
        fields = {**fields, "webhook": pending_webhook(orjson.loads(hook)["url"])}
    final = {**record, **fields, "status": status, "ended_at": now_iso(), "eta_s": "", "queue_position": ""}
    # (without the webhook's URL: whoever holds a stream token reads this event)
    body = orjson.dumps(job_object(final, items, None, include_last_event_id=False, webhook_url=False))
    res = store.emit(
        record["id"],
        "end",
        owner=record["owner"],
        event=status,
        data=body[1:],
        fields={k: final[k] for k in ("status", "ended_at", "eta_s", "queue_position", *fields)},
        guard_status=guard_status,
        guard_attempt=int(record["attempt"]),
        part=part_of(record),
    )
    if res.outcome == Outcome.OK:
        if res.waiting:
            promote(store, record["owner"])  # the end freed a slot (or a place in the line) for them
        if hook:
            trips.enqueue_delivery(store, record["id"], int(record["attempt"]))
        if record.get("parent_id"):
            _part_ended(store, final, status)
        if record.get("part_ids") and status != Status.COMPLETED:
            _cancel_parts(store, record, f"its batch {record['id']} was {status}")
    return res


def _part_ended(store: Store, part: Mapping[str, str], status: str) -> None:
    """After a part's end: its batch joins once every part has ended (the end's script moved it to `join`,
    due now: send it on at once); a part that did not complete fails a batch that takes no partial results."""
    parent = store.load(part["parent_id"])
    if parent is None or parent["status"] != Status.RUNNING:
        return
    if parent.get("stage") == Stage.JOIN:
        requeue(store, parent["id"])
    elif status != Status.COMPLETED and not parent.get("partial") and parent.get("stage") == Stage.PARTS:
        fail_batch(store, parent, part, status)


def fail_batch(store: Store, parent: Mapping[str, str], part: Mapping[str, str], status: str) -> EmitResult:
    """A part of the batch `parent` ended `status` (failed after its own attempts, or canceled): the batch
    fails with `part_failed` (the part's id and error in `details`), and its other parts are canceled."""
    error = orjson.loads(part["error"]) if part.get("error") else None
    failed = {"part": int(part["part"]), "id": part["id"], "status": status, "error": error}
    message = part_failed_message(failed, int(parent.get("parts_total") or 0))
    log.info("job %s: %s; the batch fails", parent["id"], message)
    code = batch_error_code(error)
    return end_job(store, parent, Status.FAILED, items=store.output_items(parent["id"]),
                   guard_status=(Status.RUNNING,),
                   fields={"message": f"Failed: {message}"[:200],
                           "error": error_json(code, message,
                                               {"part_id": part["id"], "part": int(part["part"]), "error": error})})


def _cancel_parts(store: Store, parent: Mapping[str, str], reason: str) -> None:
    """Cancel every part of a batch that has not ended (a queued one ends at once, a running one stops)."""
    for part_id in part_ids(parent):
        cancel(store, part_id, reason)


def promote(store: Store, owner: str) -> None:
    """Send the owner's waiting jobs that now have a slot to RQ, and tell the rest their new place."""
    for job_id in store.promote(owner):  # each is in the delayed set, due now
        log.info("job %s: got a slot of %s's", job_id, owner)
        requeue(store, job_id)
    store.tell_waiting(owner)


def retry_delay(base_s: float, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: exponential from `base_s`, with ±20% jitter, at most 5 minutes."""
    return float(min(MAX_RETRY_DELAY_S, base_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))


def fail_attempt(
    store: Store,
    record: Mapping[str, str],
    code: str,
    message: str,
    *,
    items: list[bytes],
    fields: Mapping[str, str] | None = None,
    retryable: bool = True,
    details: Any = None,
) -> EmitResult:
    """The running attempt failed: schedule the next one while attempts remain, else end the job `failed`.

    A job that was asked to cancel ends `canceled` instead, however its code failed on the way out.
    """
    attempt, max_attempts = int(record["attempt"]), int(record["max_attempts"])
    if store.cancel_requested(record["id"]):
        return end_job(store, record, Status.CANCELED, items=items, guard_status=(Status.RUNNING,),
                       fields={**(fields or {}), "message": "Canceled",
                               "error": error_json("canceled", f"canceled by request (then: {message})")})
    if retryable and attempt < max_attempts:
        delay = retry_delay(store.settings.retry_base_s, attempt)
        when = f"{delay:.0f}" if delay >= 10 else f"{delay:.1f}"
        next_fields = {
            "status": Status.QUEUED, "attempt": str(attempt + 1), "progress": "0", "stage": Stage.RETRY,
            "message": f"Retrying in {when} s (attempt {attempt + 1} of {max_attempts}) after: {message}"[:200],
            "queue_position": "", "eta_s": "", "started_at": "",
        }
        res = store.emit(record["id"], "again", owner=record["owner"], ts=now_iso(), fields=next_fields,
                         guard_status=(Status.RUNNING,), guard_attempt=attempt,
                         retry_at_ms=now_ms() + int(delay * 1000), part=part_of(record))
        log.info("job %s: attempt %d failed (%s); retry in %.1fs (%s)", record["id"], attempt, code, delay, res.outcome)
        return res
    res = end_job(store, record, Status.FAILED, items=items, guard_status=(Status.RUNNING,),
                  fields={**(fields or {}), "message": f"Failed: {message}"[:200],
                          "error": error_json(code, message, details)})
    log.info("job %s: failed (%s) after attempt %d of %d (%s)", record["id"], code, attempt, max_attempts, res.outcome)
    return res


def cancel_queued(store: Store, record: Mapping[str, str], items: list[bytes], reason: str) -> EmitResult:
    res = end_job(store, record, Status.CANCELED, items=items, guard_status=(Status.QUEUED,),
                  fields={"message": "Canceled", "error": error_json("canceled", reason)})
    if res.outcome == Outcome.OK and record.get("rq_id"):
        trips.remove(store, record["queue"], record["rq_id"])
        store.tell_positions(record["queue"])
    return res


def requeue(store: Store, job_id: str) -> bool:
    """Send a queued job whose time has come (`{p}:delayed`) to RQ; False if it must wait for another round.

    The delayed set is the one way back into RQ (for retries, manual or automatic,
    and for jobs that got a slot), so a crash between deciding and enqueueing
    leaves the job there for the janitor to pick up, never lost.
    """
    done, record = trips.send_again(store, job_id)
    if record is None or record["status"] != Status.QUEUED:  # (a batch's join goes as it is)
        return done
    store.emit(job_id, "state", owner=record["owner"], ts=now_iso(),
               fields={"stage": Stage.QUEUED, "message": "Queued"}, guard_status=(Status.QUEUED,),
               guard_attempt=int(record["attempt"]))
    store.tell_positions(record["queue"])
    return True


RQ_JOB_LOST = "rq_job_lost"


def reconcile(store: Store, job_id: str) -> str:
    """Check that a job handed to RQ is still in RQ's hands, and set it right if it is not.

    A worker killed between RQ's dequeue and the job's start, an operator
    emptying the queue (rq-dashboard, `rq empty`) or a Redis restored from an
    older dump leaves a record saying `queued` that no worker will ever take.
    If RQ still has the trip's RQ job but no live worker holds it and it is in
    no queue, the job goes to RQ again (same attempt, a new trip); if RQ's job
    is gone, the job ends `failed` with `rq_job_lost` (the operator removed it;
    `POST /retry` runs it again). Returns `in_rq`, `requeued`, `failed`,
    `left` (no longer queued in RQ's hands) or `busy` (it changed meanwhile).
    """
    where, record = trips.check(store, job_id)
    if record is None or where == "in_rq":
        return where
    if record["status"] == Status.RUNNING and where == "gone":  # a batch's join trip, lost: send another
        log.warning("job %s: the RQ job of its join is gone; sending the join again", job_id)
        store.due_now(job_id)
        requeue(store, job_id)
        return "requeued"
    rq_id = record.get("rq_id") or job_id
    if where == "dropped":
        log.warning("job %s: RQ job %s was taken by no live worker and is in no queue (its worker died before "
                    "starting it?); enqueued again", job_id, rq_id)
        store.tell_positions(record["queue"])
        return "requeued"
    log.warning("job %s: RQ job %s is gone (queue emptied, or Redis lost it); the job fails", job_id, rq_id)
    message = (f"its RQ job {rq_id} disappeared before any worker started it (the queue was emptied, in "
               "rq-dashboard or with `rq empty`, or Redis lost it); POST /jobs/{id}/retry runs it again")
    res = end_job(store, record, Status.FAILED, items=store.output_items(job_id), guard_status=(Status.QUEUED,),
                  fields={"message": "Failed: its RQ job disappeared before it started",
                          "error": error_json(RQ_JOB_LOST, message.replace("{id}", job_id))})
    return "failed" if res.outcome == Outcome.OK else "busy"


def lose(store: Store, job_id: str) -> None:
    """The worker running `job_id` stopped sending heartbeats: the attempt failed with `worker_lost`."""
    record = store.load(job_id)
    deadline = store.heartbeat_deadline(job_id)
    if record is None or record["status"] != Status.RUNNING:
        store.forget_running(job_id)
        return
    if deadline is not None and deadline > now_ms():
        return  # a heartbeat came in just now
    if record.get("stage") == Stage.PARTS:  # (a batch running its parts needs no heartbeat)
        store.forget_running(job_id)
        return
    if record.get("stage") == Stage.JOIN:  # its join's worker died: the join runs again, the parts stay
        log.warning("job %s: the worker joining its parts was lost; joining again", job_id)
        store.forget_running(job_id)
        store.due_now(job_id)
        requeue(store, job_id)
        return
    items = store.output_items(job_id)
    log.warning("job %s: worker lost (no heartbeat for %ss)", job_id, store.settings.heartbeat_deadline_s)
    fail_attempt(store, record, "worker_lost",
                 "the worker running this job stopped responding (its process died or was killed)", items=items)


def cancel(store: Store, job_id: str, reason: str = "canceled by request") -> str:
    """Cancel a job: a queued one ends `canceled` at once, a running one is asked to stop; a batch running
    its parts ends `canceled` at once, and so do its parts (`end_job`).

    Returns `canceled`, `stopping` (the worker ends it within the cancel grace
    period), the terminal status it already had, or `missing`.
    """
    for _ in range(5):  # the job may move from queued to running under us: look again
        record = store.load(job_id)
        if record is None:
            return "missing"
        status = record["status"]
        if status == Status.QUEUED:
            res = cancel_queued(store, record, store.output_items(job_id), reason)
            if res.outcome == Outcome.OK:
                return "canceled"
        elif status == Status.RUNNING and record.get("stage") in (Stage.PARTS, Stage.JOIN):
            res = end_job(store, record, Status.CANCELED, items=store.output_items(job_id),
                          guard_status=(Status.RUNNING,),
                          fields={"message": "Canceled", "error": error_json("canceled", reason)})
            if res.outcome == Outcome.OK:
                return "canceled"
        elif status == Status.RUNNING:
            res = store.emit(job_id, "state", owner=record["owner"], ts=now_iso(),
                             fields={"cancel": "1", "message": "Canceling"},
                             guard_status=(Status.RUNNING,), guard_attempt=int(record["attempt"]))
            if res.outcome in (Outcome.OK, Outcome.SAME):
                return "stopping"
        else:
            return status
    return "missing"


def retry(store: Store, job_id: str) -> str:
    """Run a failed or canceled job again as its next attempt; returns `ok`, `missing`, `parts` (a batch some of
    whose parts are still stopping), or the blocking status."""
    record = store.load(job_id)
    if record is None:
        return "missing"
    if record["status"] not in (Status.FAILED, Status.CANCELED):
        return record["status"]
    if _parts_stopping(store, record):
        return "parts"
    attempt = int(record["attempt"]) + 1
    fields = {"status": Status.QUEUED, "attempt": str(attempt), "progress": "0", "message": "Queued",
              "stage": Stage.QUEUED, "queue_position": "", "eta_s": "", "started_at": "", "ended_at": "",
              "result": "", "error": "", "cancel": ""}
    res = store.emit(job_id, "again", owner=record["owner"], ts=now_iso(), fields=fields,
                     guard_status=(Status.FAILED, Status.CANCELED),
                     guard_attempt=attempt - 1, retry_at_ms=now_ms(), part=part_of(record))
    if res.outcome != Outcome.OK:
        return retry(store, job_id) if res.outcome == Outcome.REFUSED else "missing"
    log.info("job %s: retried by request as attempt %d", job_id, attempt)
    requeue(store, job_id)  # or, should this fail, the janitor's next round
    return "ok"


def _parts_stopping(store: Store, record: Mapping[str, str]) -> bool:
    """Whether some parts of an ended batch have not ended yet (a cancel stops running ones within seconds)."""
    return any((part := store.load(i)) is not None and part["status"] not in TERMINAL for i in part_ids(record))


def delete(store: Store, job_id: str, owner: str) -> str:
    """Forget a finished job and the RQ jobs of its runs, and a batch's parts with it; returns `ok`,
    `missing`, `parts` (a batch some of whose parts are still stopping), or the status that keeps it."""
    record = store.load(job_id)
    if record is not None and _parts_stopping(store, record):
        return "parts"
    parts = part_ids(record) if record is not None else []
    outcome = store.delete(job_id, owner)
    if outcome == "ok" and record is not None:
        trips.delete_runs(store, job_id, int(record.get("run") or 1))
        for part_id in parts:
            delete(store, part_id, owner)
    return outcome
