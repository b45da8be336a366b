"""The error tree. Every error a client can see is a `JobcastError`.

    JobcastError                    500 internal_error
    ├── InvalidJson                 400 invalid_json
    ├── Unauthorized                401 unauthorized
    ├── NotFound                    404 not_found
    ├── Conflict                    409 conflict
    ├── PayloadTooLarge             413 payload_too_large
    ├── UnsupportedMediaType        415 unsupported_media_type
    ├── ValidationFailed            422 validation_error
    ├── RateLimited                 429 rate_limited
    └── Unavailable                 503 unavailable
    ConfigError                     a bad setting, raised at start-up (not an HTTP error)

`jobcast.app` maps each to the contract's JSON shape in one place:
`{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "Conflict",
    "InvalidJson",
    "JobcastError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what to set."""


class JobcastError(Exception):
    """Base of every error that reaches a client; carries its HTTP status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidJson(JobcastError):
    """The request body is not valid JSON, or not a JSON object."""

    status, code = 400, "invalid_json"


class Unauthorized(JobcastError):
    """No API key or stream token, or a wrong or expired one."""

    status, code = 401, "unauthorized"


class NotFound(JobcastError):
    """No such job for this owner (unknown, expired, deleted or someone else's), or no such route."""

    status, code = 404, "not_found"


class Conflict(JobcastError):
    """The action is not valid in the job's current state."""

    status, code = 409, "conflict"


class PayloadTooLarge(JobcastError):
    """The request body is over the configured limit."""

    status, code = 413, "payload_too_large"


class UnsupportedMediaType(JobcastError):
    """A request body not sent as JSON (a cross-site form or `text/plain` POST, which a browser sends
    without asking the server first)."""

    status, code = 415, "unsupported_media_type"


class ValidationFailed(JobcastError):
    """Well-formed JSON that breaks a schema, or a bad query parameter; details list `{path, message}`."""

    status, code = 422, "validation_error"

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message, details)


class RateLimited(JobcastError):
    """The owner is over a rate limit; `Retry-After` says when to try again."""

    status, code = 429, "rate_limited"


class Unavailable(JobcastError):
    """Redis cannot be reached; `Retry-After` says when to try again."""

    status, code = 503, "unavailable"

    def __init__(self, message: str = "Redis is unreachable; the job store is unavailable. Retry shortly.") -> None:
        super().__init__(message, headers={"Retry-After": "2"})
