"""The shapes of request and response bodies, and how validation errors are reported.

The response models describe what `record.job_object` and the endpoints write;
they are the source of `/openapi.json` and the typed results of the Python
client (`jobcast.client`), which reads them leniently (unknown fields ignored)
so that an older client keeps working against a newer server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

__all__ = [
    "ErrorBody", "Health", "Job", "JobList", "JobTypeInfo", "JobTypes", "Ready", "Status", "SubmitRequest",
    "validation_details",
]

Label = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=r"^https?://")]


class SubmitRequest(BaseModel):
    """The body of `POST /jobs`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    payload: dict[str, Any] = Field(default_factory=dict)
    tags: dict[Label, Annotated[str, StringConstraints(max_length=128)]] = Field(default_factory=dict, max_length=16)
    max_attempts: int | None = Field(default=None, ge=1, le=10)
    timeout_s: int | None = Field(default=None, ge=1, le=86400)
    max_tokens_total: int | None = Field(default=None, ge=1, le=1_000_000_000, description="The most model tokens "
                                         "the job may use in all (a batch's parts share it); default: its type's.")
    webhook: WebhookRequest | None = None


def validation_details(exc: ValidationError, root: str = "") -> list[dict[str, str]]:
    """Pydantic's errors as the contract's `[{path, message}]`, paths dotted from `root`."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        parts = [root] if root else []
        parts += [str(p) for p in err["loc"]]
        details.append({"path": ".".join(parts) or "(body)", "message": err["msg"]})
    return details


# -- responses ------------------------------------------------------------------

Status = Literal["queued", "running", "completed", "failed", "canceled"]


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class JobError(_Response):
    """Why a job failed (`worker_lost`, `timeout`, ...) or was canceled."""

    code: str
    message: str
    details: Any = Field(None, description="More about it, for some codes: `part_failed` names the part's `part_id`, "
                                           "its index `part` and its `error`.")


class WebhookState(_Response):
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None


class Output(_Response):
    items: list[Any] = Field(description="The attempt's output items in order (at least the last 1,000).")
    text: str = Field(description="The streamed text of the attempt so far.")


class Links(_Response):
    self: str
    events: str = Field(description="The event stream; carries a stream token when auth is on.")
    cancel: str


class PartCounts(_Response):
    """How many of a batch's parts stand where."""

    total: int = Field(ge=1)
    queued: int = Field(ge=0)
    running: int = Field(ge=0)
    completed: int = Field(ge=0)
    failed: int = Field(ge=0)
    canceled: int = Field(ge=0)


class UsageFigures(_Response):
    calls: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: float | None = Field(description="null when no price is configured for the model.")
    estimated: bool = Field(description="Some of the tokens are an estimate: the model server reported none.")


class Usage(UsageFigures):
    """What a job's model calls used, in all attempts (and in this `attempt`)."""

    attempt: UsageFigures


class Job(_Response):
    """The job object: every endpoint that returns a job returns this."""

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    type: str
    status: Status
    progress: int | float = Field(ge=0, le=100)
    message: str = Field(min_length=1)
    stage: str | None
    attempt: int = Field(ge=1)
    max_attempts: int = Field(ge=1)
    queue_position: int | None = Field(ge=0)
    eta_s: int | None
    tags: dict[str, str]
    created_at: str
    started_at: str | None
    ended_at: str | None
    last_event_id: int = Field(ge=1)
    output: Output
    result: Any
    error: JobError | None
    webhook: WebhookState | None
    parent_id: str | None = Field(description="For a part of a batch, the id of the job it belongs to.")
    parts: PartCounts | None = Field(description="For a job split into parts, where its parts stand.")
    usage: Usage | None = Field(description="For a job that called a model, what it used; null otherwise.")
    links: Links


class JobListLinks(_Response):
    events: str = Field(description="The stream of the same set of jobs (`GET /events` with the same `type` and "
                                    "`tag` filters; with API keys on, carrying a stream token).")


class JobList(_Response):
    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")
    links: JobListLinks | None = Field(None, description="With API keys on: the link to the stream of the same "
                                                         "set, with a stream token for it.")


class JobTypeInfo(_Response):
    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema of the payload.")
    available: bool
    unavailable_reason: str | None
    stand_in: bool = Field(False, description="Runs on the stand-in model of `jobcast dev` (made-up answers).")
    max_attempts: int
    timeout_s: int


class JobTypes(_Response):
    job_types: list[JobTypeInfo]


class ErrorDetail(_Response):
    code: str = Field(description="invalid_json, validation_error, payload_too_large, unauthorized, not_found, "
                                  "conflict, rate_limited, unavailable, ...")
    message: str = Field(description="What went wrong and how to fix it.")
    details: Any = Field(description="For validation_error: a list of {path, message}; else null.")


class ErrorBody(_Response):
    error: ErrorDetail


class Health(_Response):
    status: Literal["ok"]


class Ready(_Response):
    status: Literal["ready"]
    redis: Literal["ok"]
    queue: str
    workers: int = Field(ge=0, description="Workers alive on the job queue.")
