"""What runs jobs: `workers` (RQ's worker classes with jobcast's runtime, and `run_worker`), `runtime`
(what a worker process holds, and the one current while a job runs), `janitor` (the sweep that finds lost,
due, stranded and waiting jobs), `places` (telling a queue's front its places after each take).
`jobcast.worker.Worker` is the class deployments name (`rq worker -w jobcast.worker.Worker`)."""

from jobcast.worker.workers import SimpleWorker, ThreadWorker, Worker, make_worker, run_worker

__all__ = ["SimpleWorker", "ThreadWorker", "Worker", "make_worker", "run_worker"]
