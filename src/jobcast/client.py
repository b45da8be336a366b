"""The Python client: `Client` and its async twin `AsyncClient`, over the HTTP API.

    from jobcast import Client

    with Client() as jc:                       # JOBCAST_URL, JOBCAST_API_KEY
        job = jc.submit("demo", {"steps": 5})
        for event in jc.watch(job):            # live over SSE; resumes; polls if it must
            print(event.event, event.data)
        print(jc.get(job.id).result)

`watch()` yields every event of the job once, in order, and ends after the
terminal one. A dropped connection, an API restart or a Redis outage (5xx) is
ridden out: it tries again with back-off (honouring `Retry-After`) and resumes
with `Last-Event-ID`, so nothing is missed or repeated. When the stream cannot
be had (too many open streams: 429; a proxy that answers something else; 5
failures in a row) it polls `GET /jobs/{id}` instead, riding out the same
troubles, and yields a `snapshot` event for each change it sees. Any other API
error raises `ApiError` with the contract's code and message.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from jobcast.schemas import Job, JobList, JobTypeInfo, JobTypes, Status
from jobcast.settings import ClientSettings
from jobcast.states import TERMINAL

__all__ = ["ApiError", "AsyncClient", "Client", "Event"]

STREAM_READ_TIMEOUT_S = 60.0
"""Longer than the server's longest ping interval (15 s): a quiet stream this long is a dead one."""
STREAM_FAILURES_BEFORE_POLLING = 5


class ApiError(Exception):
    """The API answered with an error (`code`, `message` as the contract lists them), or could not be reached."""

    def __init__(self, status: int | None, code: str, message: str, details: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details, self.retry_after = details, retry_after


@dataclass(frozen=True)
class Event:
    """One event of a job's stream: `snapshot`, `state`, `output`, or a terminal one."""

    id: int
    event: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL

    @property
    def job(self) -> Job | None:
        """The whole job, for `snapshot` and terminal events (their data is the job object)."""
        return Job.model_validate(self.data) if self.event == "snapshot" or self.terminal else None


# -- what both clients share: requests in, typed results out ---------------------


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    env = ClientSettings.from_env()
    url = (base_url or env.url).rstrip("/")
    key = api_key if api_key is not None else env.api_key
    return url, ({"Authorization": f"Bearer {key}"} if key else {})


def _submit_body(type_: str, payload: Mapping[str, Any] | None, tags: Mapping[str, str] | None,
                 webhook_url: str | None, **limits: int | None) -> dict[str, Any]:
    """The `POST /jobs` body; `limits`: `max_attempts`, `timeout_s`, `max_tokens_total`, when given."""
    body: dict[str, Any] = {"type": type_, "payload": dict(payload or {})}
    if tags:
        body["tags"] = dict(tags)
    if webhook_url:
        body["webhook"] = {"url": webhook_url}
    return body | {name: value for name, value in limits.items() if value is not None}


def _list_params(status: Status | None, type_: str | None, tags: Mapping[str, str] | None, limit: int,
                 cursor: str | None) -> list[tuple[str, str]]:
    params = [("limit", str(limit))]
    params += [(k, v) for k, v in (("status", status), ("type", type_), ("cursor", cursor)) if v]
    params += [("tag", f"{k}:{v}") for k, v in (tags or {}).items()]
    return params


def _error(response: httpx.Response) -> ApiError:
    retry_after = response.headers.get("retry-after")
    try:
        err = response.json()["error"]
        code, message, details = err["code"], err["message"], err.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:200] or response.reason_phrase, None
    return ApiError(response.status_code, code, message, details,
                    float(retry_after) if retry_after and retry_after.isdigit() else None)


def _unreachable(url: str, exc: httpx.HTTPError | httpx.InvalidURL) -> ApiError:
    return ApiError(None, "unreachable", f"could not reach jobcast at {url} ({exc}); is it running? "
                                         "(JOBCAST_URL sets the address)")


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise _error(response)
    try:
        return response.json()
    except ValueError:
        raise ApiError(response.status_code, "invalid_response", f"the answer from {response.url} is not JSON "
                       "(is JOBCAST_URL a jobcast API, not a proxy's page?)") from None


def _transient(exc: ApiError) -> bool:
    """Worth asking again: the API unreachable, busy, or its Redis briefly away."""
    return exc.status is None or exc.status == 429 or exc.status >= 500


def _pause(exc: ApiError, failures: int) -> float:
    return exc.retry_after if exc.retry_after is not None else min(5.0, 0.25 * 2 ** failures)


def _job_id(job: Job | str) -> str:
    return job.id if isinstance(job, Job) else job


def _events_path(job: Job | str, keyed: bool) -> str:
    """With a key, the plain path (a stream token would expire); without, the job's link and its token."""
    return job.links.events if isinstance(job, Job) and not keyed else f"/jobs/{_job_id(job)}/events"


def _stream_usable(response: httpx.Response) -> bool | None:
    """True: read it; None: nothing left (204); False: poll instead (the stream is refused, or is not one).

    Raises ApiError for an error: a transient one (5xx, unreachable) is tried again by the caller.
    """
    if response.status_code == 204:
        return None
    if response.status_code == 200:
        content_type: str = response.headers.get("content-type", "")
        return content_type.startswith("text/event-stream")
    if response.status_code == 429:
        return False
    raise _error(response)  # the caller has read the body


def _event(sse_id: str, name: str, data: str) -> Event:
    return Event(int(sse_id), name, orjson.loads(data))


def _poll_event(job: Job) -> Event:
    return Event(job.last_event_id, job.status if job.status in TERMINAL else "snapshot",
                 job.model_dump(mode="json"))


class _Resume:
    """What `watch()` carries from one try to the next, sync or async: the last event id, failures in a row."""

    def __init__(self, last: int) -> None:
        self.last, self.failures = last, 0

    @property
    def streaming(self) -> bool:
        """Whether to try the stream again (else poll)."""
        return self.failures < STREAM_FAILURES_BEFORE_POLLING

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last)} if self.last else {}

    def take(self, sse: ServerSentEvent) -> Event | None:
        """The stream's event, unless it was seen already."""
        if not sse.id or int(sse.id) <= self.last:
            return None
        event = _event(sse.id, sse.event, sse.data)
        self.last, self.failures = event.id, 0
        return event

    def polled(self, job: Job) -> Event | None:
        """A `snapshot` (or terminal) event for a polled job, if it changed since the last one."""
        self.failures = 0
        if job.last_event_id <= self.last:
            return None
        self.last = job.last_event_id
        return _poll_event(job)

    def failed(self, exc: ApiError) -> float:
        """Count a failed try and say how long to wait before the next; raise `exc` if trying again cannot help."""
        if not _transient(exc):
            raise exc
        self.failures += 1
        return _pause(exc, self.failures)


class _SetResume:
    """What `watch_many()` carries from one try to the next: the stream's cursor, each job's last event id,
    and failures in a row (a set stream is tried again for as long as its errors are transient)."""

    def __init__(self, ids: Sequence[str] | None, tags: Mapping[str, str] | None, type_: str | None,
                 cursor: str | None) -> None:
        self.params = [("job", i) for i in ids or ()] + [("tag", f"{k}:{v}") for k, v in (tags or {}).items()]
        self.params += [("type", type_)] if type_ else []
        self.fixed = ids is not None
        self.cursor, self.failures = cursor, 0
        self.seen: dict[str, int] = {}
        self.ended: dict[str, bool] = {}

    @property
    def all_ended(self) -> bool:
        """Whether every job of a list seen so far has ended (the stream then ends, and a 204 tells it is over)."""
        return self.fixed and bool(self.ended) and all(self.ended.values())

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.cursor} if self.cursor else {}

    def take(self, sse: ServerSentEvent) -> tuple[str, Event] | None:
        """The stream's event as (job id, event), unless that job's event was seen already."""
        if sse.id:
            self.cursor = sse.id
        self.failures = 0
        if not sse.data:
            return None  # (the `retry:` a stream starts with)
        data = orjson.loads(sse.data)
        job_id, seq = data["job_id"], int(data["seq"])
        if seq <= self.seen.get(job_id, 0):
            return None
        self.seen[job_id] = seq
        event = Event(seq, sse.event, data)
        self.ended[job_id] = event.terminal or (event.event == "snapshot" and data.get("status") in TERMINAL)
        return job_id, event

    def failed(self, exc: ApiError) -> float:
        if not _transient(exc):
            raise exc
        self.failures += 1
        return _pause(exc, self.failures)


STREAM_TIMEOUT = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)
ENDED_EARLY = ApiError(None, "stream_ended", "the stream ended before the job did")


_Method = Literal["GET", "POST", "DELETE"]


class Client:
    """A blocking client. `base_url` defaults to `JOBCAST_URL`, `api_key` to `JOBCAST_API_KEY`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 10.0,
                 poll_interval_s: float = 1.0) -> None:
        self.base_url, headers = _settings(base_url, api_key)
        self.poll_interval_s = poll_interval_s
        self._keyed = bool(headers)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: _Method, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _unreachable(self.base_url, exc) from None

    def submit(self, type: str, payload: Mapping[str, Any] | None = None, *, tags: Mapping[str, str] | None = None,
               webhook_url: str | None = None, max_attempts: int | None = None, timeout_s: int | None = None,
               max_tokens_total: int | None = None, idempotency_key: str | None = None) -> Job:
        body = _submit_body(type, payload, tags, webhook_url, max_attempts=max_attempts, timeout_s=timeout_s,
                            max_tokens_total=max_tokens_total)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(_json(self._call("POST", "/jobs", json=body, headers=headers)))

    def get(self, job: Job | str) -> Job:
        return Job.model_validate(_json(self._call("GET", f"/jobs/{_job_id(job)}")))

    def list(self, *, status: Status | None = None, type: str | None = None, tags: Mapping[str, str] | None = None,
             limit: int = 50, cursor: str | None = None) -> JobList:
        params = _list_params(status, type, tags, limit, cursor)
        return JobList.model_validate(_json(self._call("GET", "/jobs", params=params)))

    def cancel(self, job: Job | str) -> Job:
        return Job.model_validate(_json(self._call("POST", f"/jobs/{_job_id(job)}/cancel")))

    def retry(self, job: Job | str) -> Job:
        return Job.model_validate(_json(self._call("POST", f"/jobs/{_job_id(job)}/retry")))

    def delete(self, job: Job | str) -> None:
        response = self._call("DELETE", f"/jobs/{_job_id(job)}")
        if response.status_code >= 400:
            raise _error(response)

    def job_types(self) -> builtins.list[JobTypeInfo]:
        return JobTypes.model_validate(_json(self._call("GET", "/job-types"))).job_types

    def wait(self, job: Job | str) -> Job:
        """Watch the job to its end; the final job object."""
        for event in self.watch(job):
            if event.terminal:
                return Job.model_validate(event.data)
        return self.get(job)

    def watch(self, job: Job | str, *, last_event_id: int = 0) -> Iterator[Event]:
        """The job's events after `last_event_id`, live, each once, ending after the terminal one."""
        state = _Resume(last_event_id)
        while state.streaming:
            try:
                with self._http.stream("GET", _events_path(job, self._keyed), headers=state.headers(),
                                       timeout=STREAM_TIMEOUT) as response:
                    if response.status_code >= 400:
                        response.read()
                    usable = _stream_usable(response)
                    if usable is None:
                        return
                    if not usable:
                        break
                    for sse in EventSource(response).iter_sse():
                        if (event := state.take(sse)) is not None:
                            yield event
                            if event.terminal:
                                return
                failure = ENDED_EARLY
            except ApiError as exc:
                failure = exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                failure = _unreachable(self.base_url, exc)
            time.sleep(state.failed(failure))  # dropped, refused for now, or ended early: resume after the last
        yield from self._poll(job, state)

    def watch_many(self, *, ids: Sequence[str] | None = None, tags: Mapping[str, str] | None = None,
                   type: str | None = None, cursor: str | None = None) -> Iterator[tuple[str, Event]]:
        """Events of a set of jobs over one stream (`GET /events`), as (job id, event), each once and in order,
        resuming by its cursor after a drop: the listed `ids` (it ends once all of them have ended), or every
        job carrying `tags` (or all of them), later ones too, for as long as it is read."""
        state = _SetResume(ids, tags, type, cursor)
        while True:
            try:
                with self._http.stream("GET", "/events", params=tuple(state.params), headers=state.headers(),
                                       timeout=STREAM_TIMEOUT) as response:
                    if response.status_code >= 400:
                        response.read()
                    usable = _stream_usable(response)
                    if usable is None:
                        return
                    if not usable:
                        raise ApiError(response.status_code, "stream_refused", "the set's stream was refused for "
                                       "now (too many open), or is no event stream")
                    for sse in EventSource(response).iter_sse():
                        if (item := state.take(sse)) is not None:
                            yield item
                if state.all_ended:
                    continue  # a list's stream ends after its last job has: asked again, it answers 204
                failure = ENDED_EARLY
            except ApiError as exc:
                failure = exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                failure = _unreachable(self.base_url, exc)
            time.sleep(state.failed(failure))

    def _poll(self, job: Job | str, state: _Resume) -> Iterator[Event]:
        while True:
            try:
                current = self.get(job)
            except ApiError as exc:
                time.sleep(state.failed(exc))
                continue
            if (event := state.polled(current)) is not None:
                yield event
                if event.terminal:
                    return
            time.sleep(self.poll_interval_s)


class AsyncClient:
    """The asyncio twin of `Client`: the same methods, awaited; `watch()` is an async iterator."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 10.0,
                 poll_interval_s: float = 1.0) -> None:
        self.base_url, headers = _settings(base_url, api_key)
        self.poll_interval_s = poll_interval_s
        self._keyed = bool(headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: _Method, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kw)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _unreachable(self.base_url, exc) from None

    async def submit(self, type: str, payload: Mapping[str, Any] | None = None, *,
                     tags: Mapping[str, str] | None = None, webhook_url: str | None = None,
                     max_attempts: int | None = None, timeout_s: int | None = None,
                     max_tokens_total: int | None = None, idempotency_key: str | None = None) -> Job:
        body = _submit_body(type, payload, tags, webhook_url, max_attempts=max_attempts, timeout_s=timeout_s,
                            max_tokens_total=max_tokens_total)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(_json(await self._call("POST", "/jobs", json=body, headers=headers)))

    async def get(self, job: Job | str) -> Job:
        return Job.model_validate(_json(await self._call("GET", f"/jobs/{_job_id(job)}")))

    async def list(self, *, status: Status | None = None, type: str | None = None,
                   tags: Mapping[str, str] | None = None, limit: int = 50, cursor: str | None = None) -> JobList:
        params = _list_params(status, type, tags, limit, cursor)
        return JobList.model_validate(_json(await self._call("GET", "/jobs", params=params)))

    async def cancel(self, job: Job | str) -> Job:
        return Job.model_validate(_json(await self._call("POST", f"/jobs/{_job_id(job)}/cancel")))

    async def retry(self, job: Job | str) -> Job:
        return Job.model_validate(_json(await self._call("POST", f"/jobs/{_job_id(job)}/retry")))

    async def delete(self, job: Job | str) -> None:
        response = await self._call("DELETE", f"/jobs/{_job_id(job)}")
        if response.status_code >= 400:
            raise _error(response)

    async def job_types(self) -> builtins.list[JobTypeInfo]:
        return JobTypes.model_validate(_json(await self._call("GET", "/job-types"))).job_types

    async def wait(self, job: Job | str) -> Job:
        async with contextlib.aclosing(self.watch(job)) as events:
            async for event in events:
                if event.terminal:
                    return Job.model_validate(event.data)
        return await self.get(job)

    async def watch(self, job: Job | str, *, last_event_id: int = 0) -> AsyncGenerator[Event, None]:
        state = _Resume(last_event_id)
        while state.streaming:
            try:
                async with self._http.stream("GET", _events_path(job, self._keyed), headers=state.headers(),
                                             timeout=STREAM_TIMEOUT) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    usable = _stream_usable(response)
                    if usable is None:
                        return
                    if not usable:
                        break
                    async for sse in EventSource(response).aiter_sse():
                        if (event := state.take(sse)) is not None:
                            yield event
                            if event.terminal:
                                return
                failure = ENDED_EARLY
            except ApiError as exc:
                failure = exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                failure = _unreachable(self.base_url, exc)
            await asyncio.sleep(state.failed(failure))
        async for event in self._poll(job, state):
            yield event

    async def watch_many(self, *, ids: Sequence[str] | None = None, tags: Mapping[str, str] | None = None,
                         type: str | None = None, cursor: str | None = None
                         ) -> AsyncGenerator[tuple[str, Event], None]:
        state = _SetResume(ids, tags, type, cursor)
        while True:
            try:
                async with self._http.stream("GET", "/events", params=tuple(state.params), headers=state.headers(),
                                             timeout=STREAM_TIMEOUT) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    usable = _stream_usable(response)
                    if usable is None:
                        return
                    if not usable:
                        raise ApiError(response.status_code, "stream_refused", "the set's stream was refused for "
                                       "now (too many open), or is no event stream")
                    async for sse in EventSource(response).aiter_sse():
                        if (item := state.take(sse)) is not None:
                            yield item
                if state.all_ended:
                    continue
                failure = ENDED_EARLY
            except ApiError as exc:
                failure = exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                failure = _unreachable(self.base_url, exc)
            await asyncio.sleep(state.failed(failure))

    async def _poll(self, job: Job | str, state: _Resume) -> AsyncGenerator[Event, None]:
        while True:
            try:
                current = await self.get(job)
            except ApiError as exc:
                await asyncio.sleep(state.failed(exc))
                continue
            if (event := state.polled(current)) is not None:
                yield event
                if event.terminal:
                    return
            await asyncio.sleep(self.poll_interval_s)
