"""A running system upgraded to this version keeps its jobs: Redis data written by the version before the
core restructure (`upgrade/jobcast-c225538.rdb`, made by `upgrade_dump.py`: a job completed, one running
when its worker was SIGKILLed, one queued in RQ) is read and finished by today's API and worker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.harness import RedisServer, read_stream, running_stack

UPGRADE = Path(__file__).parent / "upgrade"
REV = "c225538"


def test_jobs_of_the_previous_version_are_read_and_finished_by_this_one(tmp_path: Path) -> None:
    fixture = json.loads((UPGRADE / f"jobcast-{REV}.json").read_text())
    ids = fixture["ids"]
    shutil.copy(UPGRADE / f"jobcast-{REV}.rdb", tmp_path / "dump.rdb")  # what redis-server loads at start
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with running_stack(redis, tmp_path / "stack", workers=1, **fixture["env"]) as st:
            with st.client() as c:
                listed = [j["id"] for j in c.get("/jobs").json()["jobs"]]
                assert listed == [ids["waiting"], ids["cut"], ids["done"]]  # newest first
                done = c.get(f"/jobs/{ids['done']}").json()
            assert done["status"] == "completed" and done["result"] == {"steps": 2}
            assert [i["step"] for i in done["output"]["items"]] == [1, 2]
            log = read_stream(st.url, done["links"]["events"], headers={"Last-Event-ID": "0"})
            assert [e.id for e in log.events] == list(range(1, done["last_event_id"] + 1))
            assert log.events[-1].event == "completed"

            # queued in RQ by the old API: the new worker runs it
            waiting = read_stream(st.url, f"/jobs/{ids['waiting']}/events", timeout=60).events[-1]
            assert waiting.event == "completed" and waiting.data["result"] == {"steps": 3}

            # running when its old worker died: lost, then retried and finished here
            cut = read_stream(st.url, f"/jobs/{ids['cut']}/events", headers={"Last-Event-ID": "0"}, timeout=90)
            end = cut.events[-1]
            assert end.event == "completed", end.data
            assert end.data["attempt"] == 2 and end.data["result"] == {"steps": 30}
            assert [e.id for e in cut.events] == list(range(1, end.id + 1))  # its whole log, old and new
            assert any(e.event == "state" and e.data.get("stage") == "retry" for e in cut.events)
    finally:
        redis.close()
