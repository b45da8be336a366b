"""The shapes of request bodies, and how their validation errors are reported."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

__all__ = ["SubmitRequest", "validation_details"]

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
    webhook: WebhookRequest | None = None


def validation_details(exc: ValidationError, root: str = "") -> list[dict[str, str]]:
    """Pydantic's errors as the contract's `[{path, message}]`, paths dotted from `root`."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        parts = [root] if root else []
        parts += [str(p) for p in err["loc"]]
        details.append({"path": ".".join(parts) or "(body)", "message": err["msg"]})
    return details
