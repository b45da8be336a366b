"""Job types: a name, a payload schema and the function that does the work.

    from jobcast import JobContext, job_type
    from pydantic import BaseModel

    class Greet(BaseModel):
        name: str

    @job_type("greet", payload=Greet, description="Say hello.")
    def greet(ctx: JobContext, payload: Greet) -> dict:
        ctx.progress(50, "Thinking")
        return {"text": f"Hello, {payload.name}!"}

The API and the workers import the same modules (`JOBCAST_JOB_MODULES`), so both
know every type: the API validates payloads against the schema at submit time,
the worker validates again and calls the function.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from jobcast.errors import ConfigError, ValidationFailed
from jobcast.schemas import validation_details

if TYPE_CHECKING:
    from jobcast.batches import PartResults
    from jobcast.context import JobContext

__all__ = ["JobType", "Registry", "default_registry", "job_type", "load_job_types"]

JobFunction = Callable[["JobContext", Any], Any | Awaitable[Any]]
JoinFunction = Callable[["JobContext", Any, "PartResults"], Any]
F = TypeVar("F", bound=JobFunction)


@dataclass(frozen=True)
class JobType:
    name: str
    func: JobFunction
    payload_model: type[BaseModel]
    description: str
    max_attempts: int
    timeout_s: int
    requires_model: bool = False
    """An LLM type: unavailable until a model is configured (`Settings.model_unavailable`)."""
    join: JoinFunction | None = None
    """For a type whose jobs split into parts (`ctx.parts`): `join(ctx, payload, parts)` makes the job's result
    from the parts' (`batches.PartResults`)."""
    partial: bool = False
    """A batch of this type completes with what its completed parts gave; otherwise one failed part fails it."""
    max_tokens_total: int | None = None
    """Its jobs' default token budget (`POST /jobs`' `max_tokens_total`): None, no budget."""
    part_of: str | None = None
    """The type whose batches this one is the parts of, when it runs only as such: it is not listed (in
    `GET /job-types`, the OpenAPI description, the page) and not submitted on its own."""

    def schema(self) -> dict[str, Any]:
        return self.payload_model.model_json_schema()

    def validate(self, payload: Any) -> BaseModel:
        """The payload as the type's model; ValidationFailed with `payload.`-rooted paths if it does not fit."""
        try:
            return self.payload_model.model_validate(payload)
        except ValidationError as exc:
            raise ValidationFailed(
                f"The payload does not fit the schema of job type {self.name!r}; see details, "
                f"or GET /job-types for the schema.",
                validation_details(exc, "payload"),
            ) from None


class Registry:
    """The job types a process knows, by name."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def job_type(
        self,
        name: str,
        *,
        payload: type[BaseModel],
        description: str = "",
        max_attempts: int = 1,
        timeout_s: int = 3600,
        requires_model: bool = False,
        join: JoinFunction | None = None,
        partial: bool = False,
        part_of: str | None = None,
        max_tokens_total: int | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as the job type `name` (`join`, `partial`, `part_of`,
        `max_tokens_total`: see `JobType`)."""
        if not 1 <= max_attempts <= 10:
            raise ConfigError(f"job type {name!r}: max_attempts={max_attempts} must be from 1 to 10.")
        if not 1 <= timeout_s <= 86400:
            raise ConfigError(f"job type {name!r}: timeout_s={timeout_s} must be from 1 to 86400.")

        def register(func: F) -> F:
            existing = self._types.get(name)
            if existing is not None and existing.func is not func:
                raise ConfigError(
                    f"job type {name!r} is registered twice ({existing.func.__module__} and {func.__module__}); "
                    "rename one."
                )
            doc = description or inspect.getdoc(func) or ""
            self._types[name] = JobType(name, func, payload, doc, max_attempts, timeout_s, requires_model, join,
                                        partial, max_tokens_total, part_of)
            return func

        return register

    def get(self, name: str) -> JobType | None:
        """Any type by its name, a part type too."""
        return self._types.get(name)

    def __iter__(self) -> Iterator[JobType]:
        """The types one can submit, by name (a part type runs only as its batch's parts)."""
        return iter(sorted((t for t in self._types.values() if t.part_of is None), key=lambda t: t.name))

    def names(self) -> list[str]:
        """The names of the types one can submit."""
        return [t.name for t in self]


default_registry = Registry()
job_type = default_registry.job_type


def load_job_types(modules: tuple[str, ...] = ()) -> Registry:
    """Import the built-in job types and `modules` (which register theirs); return the default registry."""
    for name in ("jobcast.jobs", *modules):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import job module {name!r} (from JOBCAST_JOB_MODULES): {exc}") from exc
    return default_registry
