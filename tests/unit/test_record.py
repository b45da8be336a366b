from __future__ import annotations

import orjson
import pytest

from jobcast.store.record import format_progress, job_object, now_iso


@pytest.mark.parametrize(("value", "text"), [(0, "0"), (42, "42"), (42.5, "42.5"), (42.56, "42.6"), (33.333, "33.3"),
                                             (-3, "0"), (100.04, "100"), (250, "100")])
def test_progress_is_clamped_with_at_most_one_decimal(value: float, text: str) -> None:
    assert format_progress(value) == text


def test_times_are_iso_utc_with_milliseconds() -> None:
    ts = now_iso()
    assert len(ts) == 24 and ts[10] == "T" and ts.endswith("Z") and ts[19] == "."


def _record(**over: str) -> dict[str, str]:
    return {"id": "j1", "type": "demo", "status": "queued", "progress": "0", "message": "Queued (5 ahead)",
            "stage": "queued", "attempt": "1", "max_attempts": "3", "created_at": "2026-01-01T00:00:00.000Z",
            "seq": "4", "tags": '{"a":"b"}', **over}


def test_a_waiting_job_says_its_live_position() -> None:
    obj = job_object(_record(), [], 2)
    assert obj["queue_position"] == 2 and obj["message"] == "Queued (2 ahead)"


def test_position_is_null_unless_queued_and_eta_null_when_terminal() -> None:
    obj = job_object(_record(status="completed", stage="", eta_s="5", result='{"x":1}'), [b'{"n":1}'], 3)
    assert obj["queue_position"] is None and obj["eta_s"] is None and obj["stage"] is None
    assert orjson.loads(orjson.dumps(obj)) == {
        "id": "j1", "type": "demo", "status": "completed", "progress": 0, "message": "Queued (5 ahead)",
        "stage": None, "attempt": 1, "max_attempts": 3, "queue_position": None, "eta_s": None, "tags": {"a": "b"},
        "created_at": "2026-01-01T00:00:00.000Z", "started_at": None, "ended_at": None, "last_event_id": 4,
        "output": {"items": [{"n": 1}], "text": ""}, "result": {"x": 1}, "error": None, "webhook": None,
        "parent_id": None, "parts": None, "usage": None,  # (v3: batches, model usage)
    }


def test_the_response_models_status_is_the_one_list_of_statuses() -> None:
    from typing import get_args

    from jobcast.schemas import Status as ResponseStatus
    from jobcast.states import STATUSES

    assert get_args(ResponseStatus) == STATUSES
