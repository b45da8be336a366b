"""The raw RQ baselines' jobs, in a module that imports nothing at its top (as light as a hand-written RQ task)."""


def noop() -> None:
    """Nothing, like the `bench_noop` job type."""
    return None


def publish_started(channel: str) -> None:
    """Tell `channel` at once that the job runs (the raw baseline of the first progress a client sees)."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.connection.publish(channel, b"started")
