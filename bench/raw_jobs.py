"""The raw RQ baseline's job, in a module that imports nothing (as light as a hand-written RQ task)."""


def noop() -> None:
    """Nothing, like the `bench_noop` job type."""
    return None
