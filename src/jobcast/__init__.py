"""jobcast: background jobs with live progress.

What a job author imports: `job_type` to register a function, `JobContext` (and
its `Scope`, `Tracker`) to report through, and the exceptions that end a job.
What a caller imports: `Client` (or `AsyncClient`) to submit and watch jobs.
"""

from jobcast.client import ApiError, AsyncClient, Client, Event
from jobcast.context import JobCanceled, JobContext, JobFailed, Scope, Tracker
from jobcast.registry import job_type
from jobcast.schemas import Job

__all__ = [
    "ApiError", "AsyncClient", "Client", "Event", "Job", "JobCanceled", "JobContext", "JobFailed", "Scope",
    "Tracker", "job_type",
]
