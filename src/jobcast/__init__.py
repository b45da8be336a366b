"""jobcast: background jobs with live progress.

What a job author imports: `job_type` to register a function, `JobContext` (and
its `Scope`, `Tracker`) to report through, and the exceptions that end a job.
"""

from jobcast.context import JobCanceled, JobContext, JobFailed, Scope, Tracker
from jobcast.registry import job_type

__all__ = ["JobCanceled", "JobContext", "JobFailed", "Scope", "Tracker", "job_type"]
