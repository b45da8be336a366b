"""In process (TestClient, fakeredis): absolute links, jobcast mounted under a prefix, and submitting from
Python code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import fakeredis
import orjson
import pytest
from redis import Redis
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import jobcast
from jobcast.errors import ValidationFailed
from jobcast.settings import Settings
from jobcast.store.connections import RedisFactory

DEMO = {"type": "demo", "payload": {"steps": 2}}
KEY = "k" * 16


def _app(server: fakeredis.FakeServer, **settings: object) -> jobcast.web.app.JobcastApp:
    return jobcast.create_app(Settings(prefix="t", **settings), RedisFactory(fake_server=server))  # type: ignore[arg-type]


@pytest.fixture
def host_app(server: fakeredis.FakeServer) -> Iterator[TestClient]:
    """An app of its own, with jobcast mounted at /jobcast and jobcast's lifespan run by it."""
    jobcast_app = _app(server)
    host = Starlette(routes=[Mount("/jobcast", jobcast_app)], lifespan=jobcast_app.lifespan)
    with TestClient(host, base_url="http://localhost:8123") as client:
        yield client


def test_links_and_location_are_absolute_urls_of_the_request(server: fakeredis.FakeServer) -> None:
    with TestClient(_app(server), base_url="http://localhost:8123") as c:
        r = c.post("/jobs", json=DEMO)
        job = r.json()
        assert r.headers["location"] == f"http://localhost:8123/jobs/{job['id']}" == job["links"]["self"]
        assert job["links"] == {"self": f"http://localhost:8123/jobs/{job['id']}",
                                "events": f"http://localhost:8123/jobs/{job['id']}/events",
                                "cancel": f"http://localhost:8123/jobs/{job['id']}/cancel"}
        assert c.get("/jobs").json()["jobs"][0]["links"] == job["links"]
        assert c.get(job["links"]["self"]).json()["links"] == job["links"]


def test_the_public_url_wins_over_the_request(server: fakeredis.FakeServer) -> None:
    with TestClient(_app(server, public_url="https://jobs.example.com/api"), base_url="http://localhost") as c:
        r = c.post("/jobs", json=DEMO)
    assert r.headers["location"] == f"https://jobs.example.com/api/jobs/{r.json()['id']}"


def test_mounted_under_a_prefix_links_carry_it_and_they_work(host_app: TestClient) -> None:
    r = host_app.post("/jobcast/jobs", json=DEMO)
    assert r.status_code == 202
    job = r.json()
    assert job["links"]["self"] == f"http://localhost:8123/jobcast/jobs/{job['id']}"
    assert host_app.get(job["links"]["self"]).json()["status"] == "queued"
    assert host_app.post(job["links"]["cancel"]).json()["status"] == "canceled"
    # the stream's own events carry the prefix too (the terminal event ends it at once)
    with host_app.stream("GET", job["links"]["events"]) as s:
        body = b"".join(s.iter_bytes())
    data = orjson.loads(body.split(b"data: ")[-1])
    assert data["status"] == "canceled" and data["links"] == job["links"]


def test_mounted_the_page_and_its_scripts_load_from_under_the_prefix(host_app: TestClient) -> None:
    page = host_app.get("/jobcast/").text
    assert 'src="static/page.js"' in page and 'href="static/page.css"' in page  # relative: under any prefix
    assert "./jobcast.js" in host_app.get("/jobcast/static/page.js").text
    assert host_app.get("/jobcast/static/jobcast.js").status_code == 200
    assert host_app.get("/jobcast/job-types").status_code == 200
    assert host_app.get("/jobs").status_code == 404  # nothing of jobcast's outside its mount


def test_submit_sync_creates_the_job_as_post_jobs_does(server: fakeredis.FakeServer, redis: Redis) -> None:
    keys = {"api_keys": {KEY: "u-17"}, "secret": "s" * 16}
    job = jobcast.submit_sync(redis, "demo", {"steps": 3}, owner="u-17", tags={"project": "p-1"},
                              base_url="/jobcast/", settings=Settings(prefix="t", **keys))  # type: ignore[arg-type]
    assert job.status == "queued" and job.type == "demo" and job.tags == {"project": "p-1"}
    assert job.links.events.startswith(f"/jobcast/jobs/{job.id}/events?token=")
    assert redis.exists(f"rq:job:{job.id}")  # enqueued with RQ
    with TestClient(_app(server, **keys), base_url="http://localhost") as c:
        seen = c.get(f"/jobs/{job.id}", headers={"Authorization": f"Bearer {KEY}"}).json()
        # the stream token it handed out opens the job for a browser
        assert c.get(f"/jobs/{job.id}?token={job.links.events.split('token=')[1]}").status_code == 200
    assert seen["tags"] == {"project": "p-1"} and seen["queue_position"] == job.queue_position == 0


def test_submit_in_async_code(redis: Redis) -> None:
    job = asyncio.run(jobcast.submit(redis, "demo", {"steps": 1}, settings=Settings(prefix="t")))
    assert job.status == "queued" and job.links.self == f"/jobs/{job.id}"


@pytest.mark.parametrize(("kwargs", "path"), [
    ({"type": "nope"}, "type"),
    ({"type": "demo", "payload": {"steps": "many"}}, "payload.steps"),
    ({"type": "demo", "tags": {"k": "v" * 200}}, "tags.k"),
    ({"type": "demo", "max_attempts": 99}, "max_attempts"),
    ({"type": "demo", "owner": "has spaces"}, "owner"),
    ({"type": "demo", "webhook_url": "https://example.com/hook"}, "webhook"),
])
def test_submit_sync_refuses_bad_input_with_the_apis_errors_and_writes_nothing(
        redis: Redis, kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        jobcast.submit_sync(redis, settings=Settings(prefix="t"), **kwargs)  # type: ignore[arg-type]
    assert raised.value.status == 422 and raised.value.details[0]["path"] == path
    assert redis.keys("*") == []


def test_submit_sync_says_which_connection_it_needs() -> None:
    with pytest.raises(TypeError, match=r"needs a redis.Redis connection .* redis.Redis.from_url"):
        jobcast.submit_sync(fakeredis.FakeAsyncRedis(), "demo")  # type: ignore[arg-type]
