"""jobcast: background jobs with live progress.

What a job author imports: `job_type` to register a function, `JobContext` (and
its `Scope`, `Tracker`) to report through, the exceptions that end a job, and
`PartResults`, what a batch's join gets (`ctx.parts`).
What a caller imports: `Client` (or `AsyncClient`) to submit and watch jobs over HTTP, or `submit` (and
`submit_sync`) to submit from code that shares jobcast's Redis; `create_app` to run or mount the API.
"""

from jobcast.batches import PartResults
from jobcast.client import ApiError, AsyncClient, Client, Event
from jobcast.context import JobCanceled, JobContext, JobFailed, Scope, Tracker
from jobcast.registry import job_type
from jobcast.schemas import Job
from jobcast.settings import Settings
from jobcast.submission import submit, submit_sync
from jobcast.web.app import create_app

__all__ = [
    "ApiError", "AsyncClient", "Client", "Event", "Job", "JobCanceled", "JobContext", "JobFailed", "PartResults",
    "Scope", "Settings", "Tracker", "create_app", "job_type", "submit", "submit_sync",
]
