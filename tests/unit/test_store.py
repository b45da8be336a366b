"""The atomic changes of a job (`Store.emit`, one script per kind in lua/) and the record they keep; a job's
model usage (`Store.add_usage`)."""

from __future__ import annotations

from dataclasses import replace

import orjson

from jobcast.settings import Settings
from jobcast.store import Store, logged_data
from jobcast.store.record import job_object, now_iso
from jobcast.transitions import promote, start
from tests.unit.conftest import events


def test_create_writes_the_record_and_a_first_queued_event(store: Store, new_job) -> None:
    job = new_job(running=False)
    assert job["seq"] == "1" and job["message"] == "Queued (0 ahead)" and job["queue_position"] == "0"
    [(seq, name, data)] = events(store, job["id"])
    assert (seq, name) == (1, "state")
    assert data["status"] == "queued" and data["message"] == "Queued (0 ahead)" and data["queue_position"] == 0


def test_create_counts_the_jobs_ahead_in_the_rq_queue(store: Store, new_job) -> None:
    store.redis.rpush("rq:queue:default", "a", "b")
    assert new_job(running=False)["message"] == "Queued (2 ahead)"


def test_each_change_gets_the_next_id_and_is_published(store: Store, new_job) -> None:
    job = new_job()
    pubsub = store.redis.pubsub()
    pubsub.subscribe(store.keys.channel(job["id"]))
    pubsub.get_message(timeout=1)
    r1 = store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "10", "message": "a"})
    r2 = store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":{"n":1}}', raw=b'{"n":1}')
    assert (r1.seq, r2.seq) == (3, 4) and r1.outcome == r2.outcome == "ok"
    messages = [pubsub.get_message(timeout=1)["data"] for _ in range(2)]
    assert messages[0].startswith(b"3 state {") and messages[1] == b'4 output {"kind":"item","item":{"n":1}}'
    assert [e[0] for e in events(store, job["id"])] == [1, 2, 3, 4]
    assert store.redis.lrange(store.keys.items(job["id"]), 0, -1) == [b'{"n":1}']
    pubsub.close()


def test_the_log_keeps_a_state_event_compact_and_reads_it_back_as_published(store: Store, new_job) -> None:
    job = new_job()
    pubsub = store.redis.pubsub()
    pubsub.subscribe(store.keys.channel(job["id"]))
    pubsub.get_message(timeout=1)
    fields = {"progress": "12.5", "message": 'Persona "Ada" / 2 — ünï\tcode', "stage": "gen", "eta_s": "7"}
    store.emit(job["id"], "state", ts=now_iso(), fields=fields)
    published = pubsub.get_message(timeout=1)["data"].split(b" ", 2)[2]
    stored = store.redis.xrevrange(store.keys.events(job["id"]), count=1)[0][1][b"d"]
    assert stored.startswith(b"[") and len(stored) < len(published) * 0.6
    assert orjson.loads(logged_data(b"state", stored)) == orjson.loads(published)
    assert orjson.loads(published)["message"] == fields["message"] and orjson.loads(published)["progress"] == 12.5
    pubsub.close()


def test_log_entries_of_earlier_versions_still_read_back() -> None:
    full = b'{"status":"queued","progress":0,"message":"Queued","stage":null,"attempt":1,"queue_position":0,'
    full += b'"eta_s":null,"ts":"2026-11-25T12:00:00.120Z"}'
    assert logged_data(b"state", full) == full  # whole objects, as the first version logged them
    iso_array = b'["queued",0,"Queued",null,1,0,null,"2026-11-25T12:00:00.120Z"]'  # arrays with an ISO time
    assert orjson.loads(logged_data(b"state", iso_array)) == orjson.loads(full)
    digits = b'["queued",0,"Queued",null,1,0,null,20261125120000120]'
    assert orjson.loads(logged_data(b"state", digits)) == orjson.loads(full)


def test_progress_never_goes_down_within_an_attempt(store: Store, new_job) -> None:
    job = new_job()
    store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "50"})
    lower = store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "30"})
    assert lower.outcome == "same"
    mixed = store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "20", "message": "still going"})
    assert mixed.outcome == "ok"
    assert events(store, job["id"])[-1][2]["progress"] == 50
    assert store.load(job["id"])["progress"] == "50"


def test_a_stale_writer_is_refused_and_changes_nothing(store: Store, new_job) -> None:
    job = new_job()
    before = store.load(job["id"])
    refused = store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "90"}, guard_status=("queued",))
    assert refused.outcome == "refused" and refused.seq == int(before["seq"])
    other_attempt = store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "90"}, guard_attempt=2)
    assert other_attempt.outcome == "refused"
    assert store.load(job["id"]) == before
    assert store.emit("nope", "state", ts=now_iso(), fields={"progress": "1"}).outcome == "missing"


def test_the_cancel_flag_comes_back_with_every_emit(store: Store, new_job) -> None:
    job = new_job()
    assert not store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "1"}).cancel
    store.redis.hset(store.keys.job(job["id"]), "cancel", "1")
    assert store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "2"}).cancel
    assert store.cancel_requested(job["id"])


def test_deltas_are_joined_into_the_record(store: Store, new_job) -> None:
    job = new_job()
    for part in ("Hel", "lo, ", "wörld"):
        store.emit(job["id"], "delta", event="output", data=orjson.dumps({"kind": "delta", "text": part}), raw=part)
    assert store.load(job["id"])["text"] == "Hello, wörld"


def test_the_end_puts_the_id_first_and_sets_the_ttl(store: Store, new_job, settings) -> None:
    job = new_job()
    res = store.emit(job["id"], "end", event="completed", data=b'"id":"x","status":"completed"}',
                     fields={"status": "completed"})
    [*_, (seq, name, data)] = events(store, job["id"])
    assert (seq, name, data) == (res.seq, "completed", {"last_event_id": res.seq, "id": "x", "status": "completed"})
    for key in (store.keys.job(job["id"]), store.keys.events(job["id"])):
        assert 0 < store.redis.ttl(key) <= settings.job_ttl_s


def test_a_new_attempt_clears_the_previous_output(store: Store, new_job) -> None:
    job = new_job()
    store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":1}', raw=b"1")
    store.emit(job["id"], "delta", event="output", data=b'{"kind":"delta","text":"x"}', raw="x")
    store.redis.hset(store.keys.job(job["id"]), mapping={"status": "queued", "attempt": "2"})
    store.emit(job["id"], "start", ts=now_iso(), fields={"status": "running", "attempt": "2", "progress": "0"})
    assert store.redis.exists(store.keys.items(job["id"])) == 0
    assert store.load(job["id"])["text"] == ""


def test_the_log_keeps_at_least_the_configured_number_of_events(store: Store, new_job, settings) -> None:
    job = new_job()
    for i in range(settings.events_kept + 300):
        store.emit(job["id"], "state", ts=now_iso(), fields={"message": f"m{i}"})
    log = events(store, job["id"])
    assert len(log) >= settings.events_kept
    assert log[-1][0] == settings.events_kept + 302


def test_jobs_at_the_front_of_the_queue_are_told_their_new_place(store: Store, new_job) -> None:
    queue = "rq:queue:default"
    jobs = [new_job(running=False) for _ in range(3)]
    store.redis.rpush(queue, *[j["id"] for j in jobs])
    assert store.tell_positions("default") == 2  # the 2nd and 3rd were created with fewer ahead
    store.redis.lpop(queue)  # a worker takes the first
    assert store.tell_positions("default") == 2
    for job, position in zip(jobs[1:], (0, 1), strict=True):
        *_, (seq, name, data) = events(store, job["id"])
        assert (name, data["queue_position"], data["message"]) == ("state", position, f"Queued ({position} ahead)")
        assert store.load(job["id"])["seq"] == str(seq)
    assert store.tell_positions("default") == 0  # nothing moved: nothing said


def test_an_emit_sent_again_after_a_lost_reply_is_not_applied_twice(store: Store, new_job) -> None:
    job = new_job()
    first = store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":1}', raw=b"1", op="w-1")
    again = store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":1}', raw=b"1", op="w-1")
    assert (again.seq, again.outcome) == (first.seq, "ok")
    assert store.output_items(job["id"]) == [b"1"]
    other = store.emit(job["id"], "item", event="output", data=b'{"kind":"item","item":2}', raw=b"2", op="w-2")
    assert other.seq == first.seq + 1


def test_usage_adds_up_per_attempt_and_in_all_priced_and_a_new_attempt_starts_afresh(redis, new_job) -> None:
    store = Store(redis, replace(Settings(prefix="t", max_running_per_owner=0), model_prices={"m": (1.0, 2.0)}))
    job = new_job()
    assert store.add_usage(job["id"], 1, None, "m", 100, 10, False) is not None
    assert store.add_usage(job["id"], 1, None, "m", 50, 5, True) is not None
    assert store.add_usage(job["id"], 2, None, "m", 1, 1, False) is None  # (an attempt that is not the job's)
    redis.hset(f"t:job:{{{job['id']}}}", mapping={"status": "queued", "attempt": "2"})
    start(store, store.load(job["id"]) or {}, 1)  # the next attempt starts
    store.add_usage(job["id"], 2, None, "m", 10, 1, False)
    usage = job_object(store.load(job["id"]) or {}, [], None)["usage"]
    assert usage == {"calls": 3, "prompt_tokens": 160, "completion_tokens": 16, "estimated": True,
                     "cost_usd": round((160 * 1 + 16 * 2) / 1e6, 6),
                     "attempt": {"calls": 1, "prompt_tokens": 10, "completion_tokens": 1, "estimated": False,
                                 "cost_usd": round((10 + 2) / 1e6, 6)}}


def test_a_state_event_after_a_model_call_carries_the_usage_as_the_job_object_does(redis, new_job) -> None:
    store = Store(redis, replace(Settings(prefix="t", max_running_per_owner=0), model_prices={"m": (1.5, 2.0)}))
    job = new_job()
    live = redis.pubsub()
    live.subscribe(store.keys.channel(job["id"]))
    assert live.get_message(timeout=1)["type"] == "subscribe"
    store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "10"})
    store.add_usage(job["id"], 1, None, "m", 100, 10, False)
    # the usage alone is a change a client sees: a state event, though progress, message and stage stay
    assert store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "10"}).outcome == "ok"
    assert store.emit(job["id"], "state", ts=now_iso(), fields={"progress": "10"}).outcome == "same"
    logged = events(store, job["id"])
    published = [orjson.loads(m["data"].split(b" ", 2)[2]) for m in iter(lambda: live.get_message(timeout=0.2), None)]
    usage = job_object(store.load(job["id"]) or {}, [], None)["usage"]
    assert logged[-1][1] == "state" and logged[-1][2]["usage"] == usage and logged[-1][2]["progress"] == 10
    assert published[-1] == logged[-1][2], "what the log keeps is what was sent live"
    assert usage["cost_usd"] == round((100 * 1.5 + 10 * 2) / 1e6, 6)
    assert "usage" not in logged[-2][2] and "usage" not in published[-2], "no usage before any model call"


def test_an_end_says_how_many_of_the_owners_jobs_wait_for_a_slot(redis, new_job) -> None:
    limited = Store(redis, Settings(prefix="t", max_running_per_owner=1))  # (new_job's store: same keys)
    first, second, third = (new_job(running=False) for _ in range(3))
    outcomes = [start(limited, job, 1)[0].outcome for job in (first, second, third)]
    assert outcomes == ["ok", "parked", "parked"]

    def end(job: dict[str, str]) -> int:
        fields = {"status": "completed", "ended_at": now_iso()}
        return limited.emit(job["id"], "end", owner="anonymous", event="completed", data=b'"id":"x"}',
                            fields=fields, guard_status=("running", "queued")).waiting

    assert end(second) == 1  # (a waiting job that ends leaves its place in line)
    assert end(first) == 1
    promote(limited, "anonymous")  # the third gets the slot: to RQ again, on its next trip
    third = limited.load(third["id"]) or {}
    assert start(limited, third, int(third["run"]))[0].outcome == "ok"
    assert end(third) == 0  # nobody waits: the end's caller promotes nobody (no round trips)
