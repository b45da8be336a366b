"""The `jobcast` command: `commands` (serve, worker, dev, and the app uvicorn's workers build) and
`terminal` (the client commands: submit, watch, list, ...). `jobcast.cli:main` and
`jobcast.cli:app_from_env` are the paths deployments name."""

from jobcast.cli.commands import app_from_env, main

__all__ = ["app_from_env", "main"]
