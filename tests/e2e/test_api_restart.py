"""Stopping or killing the API mid-stream: streams close promptly, and a client that resumes misses nothing."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.e2e.harness import Stack, Stream, count_events, read_stream


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_api_stopped_mid_stream_then_restarted_resume_is_gapless(make_stack, sig: int) -> None:
    st: Stack = make_stack(workers=1)
    job = st.submit({"steps": 40, "interval_ms": 100, "emit_output": True})
    before = read_stream(st.url, job["links"]["events"], stop=count_events(6))

    held: list[Stream] = []
    reader = threading.Thread(target=lambda: held.append(read_stream(st.url, job["links"]["events"])))
    if sig == signal.SIGTERM:
        reader.start()
        while st.redis.r.pubsub_numsub(f"{st.prefix}:ch:{{{job['id']}}}")[0][1] < 1:
            time.sleep(0.01)

    t0 = time.monotonic()
    st.stop_api(sig)
    stopped_in = time.monotonic() - t0
    if sig == signal.SIGTERM:
        reader.join(timeout=10)
        print(f"API stopped {stopped_in:.2f}s after SIGTERM with a stream open")
        assert stopped_in < 3 and not reader.is_alive() and held[0].ended_by_server

    st.start_api()
    after = read_stream(st.url, job["links"]["events"], headers={"Last-Event-ID": str(before.events[-1].id)})
    ids = [e.id for e in before.events + after.events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert after.events[-1].event == "completed"
    steps = [e.data["item"]["step"] for e in before.events + after.events if e.event == "output"]
    assert [i["step"] for i in before.events[0].data["output"]["items"]] + steps == list(range(1, 41))
