"""`GET /openapi.json`: the OpenAPI 3.1 description of the API, built from the models in `schemas.py`.

The job payloads differ by type; their JSON Schemas are served by `GET /job-types`
(and the description of `POST /jobs` names the types this server has).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from jobcast.registry import Registry
from jobcast.schemas import ErrorBody, Health, Job, JobList, JobTypes, Ready, SubmitRequest
from jobcast.settings import Settings
from jobcast.states import STATUSES, TERMINAL

__all__ = ["openapi_document"]

_MODELS: list[type[BaseModel]] = [SubmitRequest, Job, JobList, JobTypes, ErrorBody, Health, Ready]

_ERRORS = {
    400: "The body is not valid JSON, or not a JSON object (`invalid_json`).",
    401: "Missing or wrong API key or stream token (`unauthorized`).",
    404: "No such job for this owner: unknown, expired, deleted or someone else's (`not_found`).",
    409: "Not possible in the job's current state (`conflict`).",
    413: "The body is over the configured limit (`payload_too_large`).",
    415: "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`).",
    422: "Unknown job type, a payload or field that breaks its schema, or a bad parameter (`validation_error`).",
    429: "Over a rate or stream limit (`rate_limited`); `Retry-After` says when to try again.",
    503: "Redis is unreachable (`unavailable`); `Retry-After` says when to try again.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ref(model)}}}
    if headers:
        response["headers"] = headers
    return response


def _responses(ok: dict[int, dict[str, Any]], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {str(code): response for code, response in ok.items()}
    for code in errors:
        out[str(code)] = _json(ErrorBody, _ERRORS[code], _RETRY_AFTER if code in (429, 503) else None)
    return out


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "description": "The job's id (32 hex characters).",
           "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
_TOKEN = {"name": "token", "in": "query", "required": False,
          "description": "The stream token from `links.events` (instead of an API key; for browsers).",
          "schema": {"type": "string"}}
_JOB = _json(Job, "The job object.")
_EVENT_ID = {"type": "string", "pattern": "^[0-9]{1,18}$"}
_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"enum": ["snapshot", "state", "output", *(s for s in STATUSES if s in TERMINAL)]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "One line of JSON: the job object (snapshot and terminal events), the state, "
                                "or an output item or text delta."},
    },
}


_SET_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^c[0-9]+$",
               "description": "The cursor; the first events of a stream opened without one have none but the "
                              "last of them (only from there on is a cursor true for every job of the set)."},
        "event": _EVENT["properties"]["event"],  # type: ignore[index]
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "As on a job's own stream, with `job_id` and `seq` added."},
    },
}


def _operation(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
               public: bool = False, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": summary.lower().replace(" ", "_").replace("'", ""),
                          "responses": responses, **extra}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _submit_variants(registry: Registry, settings: Settings, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """`SubmitRequest` once per type this server can run now, with `type` fixed and the type's payload schema."""
    variants = []
    base = schemas["SubmitRequest"]
    for t in registry:
        if t.requires_model and settings.model_unavailable():
            continue
        name = f"Payload_{t.name}"
        payload = t.payload_model.model_json_schema(ref_template=f"#/components/schemas/{name}_{{model}}")
        for def_name, definition in payload.pop("$defs", {}).items():
            schemas[f"{name}_{def_name}"] = definition
        schemas[name] = payload
        properties = {**base["properties"], "type": {"const": t.name},
                      "payload": {"$ref": f"#/components/schemas/{name}"}}
        if not settings.webhook_secret:
            del properties["webhook"]  # refused without a signing secret
        variant = {**base, "title": f"Submit {t.name}", "properties": properties}
        schemas[f"Submit_{t.name}"] = variant
        variants.append({"$ref": f"#/components/schemas/Submit_{t.name}"})
    return variants


def openapi_document(registry: Registry, settings: Settings) -> dict[str, Any]:
    """The description of this server: its job types, and API-key security only when keys are on."""
    _, top = models_json_schema([(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top["$defs"]
    submit = {"oneOf": _submit_variants(registry, settings, schemas)}
    types = ", ".join(f"`{t.name}`" for t in registry)
    paths: dict[str, Any] = {
        "/jobs": {
            "post": _operation(
                "Submit a job",
                _responses({202: _json(Job, "Accepted: the job, `queued`.", {
                    "Location": {"description": "The job's URL.", "schema": {"type": "string"}},
                    "Idempotent-Replayed": {"description": "`true` when an earlier request with the same "
                                            "Idempotency-Key made this job.", "schema": {"type": "string"}},
                })}, 400, 401, 409, 413, 415, 422, 429, 503),
                description=f"Job types here: {types}. Each one's payload schema is in `GET /job-types`.",
                params=[{"name": "Idempotency-Key", "in": "header", "required": False,
                         "description": "The same key and owner get the same job for 24 h; a different body "
                                        "with the same key is a 409.",
                         "schema": {"type": "string", "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"}}],
                requestBody={"required": True, "content": {"application/json": {"schema": submit}}},
            ),
            "get": _operation(
                "List jobs",
                _responses({200: _json(JobList, "The owner's jobs, newest first.")}, 401, 404, 422, 503),
                params=[
                    {"name": "status", "in": "query", "schema": {
                        "type": "string", "enum": list(STATUSES)}},
                    {"name": "type", "in": "query", "schema": {"type": "string"}},
                    {"name": "tag", "in": "query", "description": "`key:value`; repeat to require several.",
                     "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:.*$"}},
                     "style": "form", "explode": True},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                                "default": 50}},
                    {"name": "cursor", "in": "query", "description": "`next_cursor` of the previous page.",
                     "schema": {"type": "string", "pattern": "^[0-9]{15}:[0-9a-f]{32}$"}},
                    {"name": "parent", "in": "query", "description": "A batch's id: its parts, in part order "
                                                                     "(404 for no batch of yours).",
                     "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
                ],
            ),
        },
        "/jobs/{job_id}": {
            "get": _operation(
                "Get a job",
                _responses({200: _json(Job, "The job object (the polling fallback).", {
                    "ETag": {"description": "Send back as If-None-Match to get a 304 while nothing changed.",
                             "schema": {"type": "string"}}}),
                    304: {"description": "Not modified since the ETag given in If-None-Match."}}, 401, 404, 503),
                params=[_JOB_ID, _TOKEN, {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
            ),
            "delete": _operation("Delete a job", _responses({204: {"description": "Forgotten."}}, 401, 404, 409, 503),
                                 params=[_JOB_ID]),
        },
        "/jobs/{job_id}/events": {
            "get": _operation(
                "Stream a job's events",
                _responses({
                    200: {"description": "Server-sent events: `retry:` first, then a `snapshot` (or the events "
                                         "after Last-Event-ID), then `state`, `output` and one terminal event "
                                         "(`completed`, `failed`, `canceled`); `: ping` comments keep it open. "
                                         "The schema is that of one event.",
                          "content": {"text/event-stream": {"schema": _EVENT}}},
                    204: {"description": "The job has ended and the client has seen its last event."},
                }, 401, 404, 422, 429, 503),
                params=[_JOB_ID, _TOKEN,
                        {"name": "Last-Event-ID", "in": "header", "description": "Resume after this event id.",
                         "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"}},
                        {"name": "last_event_id", "in": "query", "description": "As the header, for clients that "
                         "cannot send one.", "schema": _EVENT_ID}],
            ),
        },
        "/events": {
            "get": _operation(
                "Stream many jobs' events",
                _responses({
                    200: {"description": "Server-sent events of a set of the owner's jobs: `retry:` first, then a "
                                         "`snapshot` of each job already in the set (or, after Last-Event-ID, "
                                         "what came since), then every job's events as they happen; each "
                                         "event's data carries `job_id` and `seq` (that job's own event id), "
                                         "and its id is an opaque cursor. Jobs created later join (`tag=` and "
                                         "all jobs) with a snapshot; a `job=` list ends after its last "
                                         "terminal event. The schema is that of one event.",
                          "content": {"text/event-stream": {"schema": _SET_EVENT}}},
                    204: {"description": "A `job=` list with nothing more to send: all of it has ended."},
                }, 401, 422, 429, 503),
                params=[
                    {"name": "job", "in": "query", "description": "A job to follow; repeat for up to 100. "
                     "Unknown and foreign ids are left out.",
                     "schema": {"type": "array", "maxItems": 100, "items": {"type": "string",
                                                                            "pattern": "^[0-9a-f]{32}$"}},
                     "style": "form", "explode": True},
                    {"name": "tag", "in": "query", "description": "`key:value`: jobs carrying all of them.",
                     "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:.*$"}},
                     "style": "form", "explode": True},
                    {"name": "type", "in": "query", "schema": {"type": "string", "minLength": 1}},
                    _TOKEN,
                    {"name": "Last-Event-ID", "in": "header", "description": "Resume after this cursor.",
                     "schema": {"type": "string", "pattern": "^(c[0-9]{1,18})?$"}},
                    {"name": "last_event_id", "in": "query", "description": "As the header, for clients that "
                     "cannot send one.", "schema": {"type": "string", "pattern": "^c[0-9]{1,18}$"}},
                ],
            ),
        },
        "/jobs/{job_id}/cancel": {"post": _operation(
            "Cancel a job", _responses({202: _JOB}, 401, 404, 409, 503), params=[_JOB_ID])},
        "/jobs/{job_id}/retry": {"post": _operation(
            "Retry a job", _responses({202: _JOB}, 401, 404, 409, 503), params=[_JOB_ID])},
        "/job-types": {"get": _operation(
            "List job types", _responses({200: _json(JobTypes, "The registered types.")}, 401, 503))},
        "/healthz": {"get": _operation("Health", {"200": _json(Health, "The process is up.")}, public=True)},
        "/readyz": {"get": _operation("Readiness", _responses({200: _json(Ready, "Ready to serve.")}, 503),
                                      public=True)},
        "/metrics": {"get": _operation("Metrics", {"200": {
            "description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            public=True)},
        "/openapi.json": {"get": _operation("This description", {"200": {
            "description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}},
            public=True)},
        "/": {"get": _operation("The page", {"200": {
            "description": "A page that submits jobs and shows their live progress.",
            "content": {"text/html": {"schema": {"type": "string"}}}}}, public=True)},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "jobcast",
            "version": version("jobcast"),
            "description": "Background jobs with live progress. Every error is "
                           "`{\"error\": {\"code\", \"message\", \"details\"}}`. rq-dashboard is at `/dashboard/` "
                           "behind its own credentials.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if settings.api_keys:
        document["components"]["securitySchemes"] = {"apiKey": {
            "type": "http", "scheme": "bearer", "description": "An API key from JOBCAST_API_KEYS."}}
        document["security"] = [{"apiKey": []}]
    else:
        for item in paths.values():
            for op in item.values():
                op.pop("security", None)
    return document
