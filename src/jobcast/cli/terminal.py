"""The client commands of `jobcast`: submit (and watch with a live bar), status, jobs, cancel, retry.

They talk to a running API through `jobcast.Client` (`JOBCAST_URL`, `JOBCAST_API_KEY`).
What a script reads goes to stdout: the job object as JSON, or the `jobs` table
(`--json` for JSON). The bar, status lines and errors go to stderr. Job
messages are shown as they are (never read as rich markup).

Exit codes: 0 done (or the watched job completed), 1 the watched job failed,
2 the watched job was canceled, 3 the command itself failed (bad arguments, bad
input, the API said no or could not be reached), 130 stopped watching with
Ctrl-C (the job goes on).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, NoReturn

import httpx
import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from jobcast.client import ApiError, Client
from jobcast.schemas import Job
from jobcast.settings import ClientSettings
from jobcast.states import STATUSES

__all__ = ["add_client_commands", "run"]

EXIT_FOR_STATUS = {"completed": 0, "failed": 1, "canceled": 2}
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130

err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """A line on stderr, printed as is."""
    err.print(text, markup=False)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.api_key)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ApiError(None, "invalid_json",
                       f"{what} is not valid JSON ({exc}); e.g. --payload '{{\"steps\": 5}}'") from None
    if not isinstance(value, dict):
        raise ApiError(None, "invalid_json", f"{what} must be a JSON object, e.g. --payload '{{\"steps\": 5}}'")
    return value


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            key, sep, value = pair.partition(":")
        if not sep or not key:
            raise ApiError(None, "validation_error", f"--tag {pair!r} is not key=value")
        tags[key] = value
    return tags


def _line(job: Job) -> str:
    extra = f" [{job.stage}]" if job.stage else ""
    return f"{job.status}{extra} {job.progress:g}% {job.message}"


def watch(client: Client, job: Job) -> int:
    """A live bar with the message and stage until the job ends; the end's exit code."""
    columns = (TextColumn("{task.fields[status]:<9}", markup=False), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[stage]}", markup=False), TextColumn("{task.description}", markup=False))
    final = job
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(job.message, total=100, status=job.status, stage=job.stage or "")
        bar.update(task, completed=job.progress)
        for event in client.watch(job):
            data = event.data
            if event.event in ("snapshot", "state") or event.terminal:
                bar.update(task, completed=float(data["progress"]), description=data["message"],
                           status=data["status"], stage=data.get("stage") or "")
            if event.terminal:
                final = Job.model_validate(data)
    say(f"{final.status}: {final.message}{_usage(final)}")
    _print_json(final.model_dump(mode="json"))
    return EXIT_FOR_STATUS[final.status]


def _usage(job: Job) -> str:
    """` (1,234 tokens in 3 calls, $0.0012)` for a job that called a model; `~` when estimated."""
    u = job.usage
    if u is None:
        return ""
    cost = f", ${u.cost_usd:.4f}" if u.cost_usd is not None else ""
    return f" ({'~' if u.estimated else ''}{u.prompt_tokens + u.completion_tokens:,} tokens in {u.calls} " \
           f"call{'s' * (u.calls != 1)}{cost})"


def cmd_watch(args: argparse.Namespace) -> int:
    """One live bar per job of a set: the listed ids (until all have ended; the exit code of the worst end),
    or the jobs with the given tags (or all), new ones joining, until Ctrl-C."""
    if args.id and args.tag:
        raise ApiError(None, "validation_error", "give job ids or --tag, not both")
    columns = (TextColumn("{task.fields[job]}", markup=False), TextColumn("{task.fields[status]:<9}", markup=False),
               BarColumn(), TaskProgressColumn(), TextColumn("{task.description}", markup=False))
    tasks: dict[str, Any] = {}
    ends: dict[str, str] = {}
    with _client(args) as client, Progress(*columns, console=err, transient=False) as bar:
        for job_id, event in client.watch_many(ids=args.id or None, tags=_tags(args.tag), type=args.type):
            data = event.data
            if event.event == "output":
                continue
            if job_id not in tasks:
                tasks[job_id] = bar.add_task("", total=100, job=job_id[:8], status="")
            bar.update(tasks[job_id], completed=float(data["progress"]), description=data["message"],
                       status=data["status"])
            if data["status"] in EXIT_FOR_STATUS:
                ends[job_id] = data["status"]
            else:
                ends.pop(job_id, None)  # (running again, after a retry)
    if not args.id:
        return 0
    say(f"{len(ends)} jobs ended: " + ", ".join(f"{n} {s}" for s, n in sorted(Counter(ends.values()).items())))
    return max((EXIT_FOR_STATUS[s] for s in ends.values()), default=0)


def cmd_submit(args: argparse.Namespace) -> int:
    payload = _json_object(args.payload, "--payload")
    with _client(args) as client:
        job = client.submit(args.type, payload, tags=_tags(args.tag), max_attempts=args.max_attempts,
                            timeout_s=args.timeout_s, max_tokens_total=args.max_tokens_total,
                            idempotency_key=args.idempotency_key)
        say(f"submitted {job.type} job {job.id}: {job.message}")
        if args.watch:
            return watch(client, job)
    _print_json(job.model_dump(mode="json"))
    return 0


def _show(job: Job) -> int:
    """A one-line status on stderr, the job object on stdout."""
    say(_line(job))
    _print_json(job.model_dump(mode="json"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _show(client.get(args.id))


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.list(status=args.status, type=args.type, tags=_tags(args.tag), limit=args.limit)
    if args.json:
        _print_json(page.model_dump(mode="json"))
        return 0
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=32)
    for name in ("type", "status", "progress", "message", "created"):
        table.add_column(name)
    for job in page.jobs:
        table.add_row(*(Text(cell) for cell in (job.id, job.type, job.status, f"{job.progress:g}%", job.message,
                                                 job.created_at)))
    Console(highlight=False).print(table)
    if page.next_cursor:
        say(f"(more: GET /jobs?cursor={page.next_cursor})")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _show(client.cancel(args.id))


def cmd_retry(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.retry(args.id)
        if not args.watch:
            return _show(job)
        say(_line(job))
        return watch(client, job)


def run(command: Any, args: argparse.Namespace) -> int:
    try:
        code: int = command(args)
        return code
    except ApiError as exc:
        say(f"jobcast: {exc}")
        if isinstance(exc.details, list):
            for detail in exc.details:
                say(f"  {detail.get('path')}: {detail.get('message')}")
    except ValidationError as exc:
        say(f"jobcast: the API's answer is not what this client expects ({exc.error_count()} problems); "
            "is the server a newer or older jobcast?")
    except httpx.InvalidURL as exc:
        say(f"jobcast: {exc}; set JOBCAST_URL (or --url) to the API's address, e.g. http://127.0.0.1:8000")
    except KeyboardInterrupt:
        say("jobcast: stopped watching; the job goes on (jobcast status ID shows it)")
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.print_usage(sys.stderr)
    parser.exit(EXIT_ERROR, f"{parser.prog}: error: {message}\n")


def add_client_commands(sub: Any, env: ClientSettings) -> None:
    """Add submit, status, jobs, cancel and retry to the `jobcast` parser."""

    def common(parser: argparse.ArgumentParser) -> None:
        # Bad arguments exit 3 here, not argparse's 2 (which means "canceled" for submit --watch).
        parser.error = lambda message: _usage_error(parser, message)  # type: ignore[method-assign]
        parser.add_argument("--url", default=env.url,
                            help="the API (JOBCAST_URL, default http://127.0.0.1:8000)")
        parser.add_argument("--api-key", default=env.api_key, help="the API key (JOBCAST_API_KEY)")

    submit = sub.add_parser("submit", help="submit a job; --watch shows a live progress bar")
    submit.add_argument("type", help="the job type (GET /job-types lists them)")
    submit.add_argument("--payload", default="{}", help="the payload, a JSON object (default {})")
    submit.add_argument("--tag", action="append", default=[], help="key=value label (repeatable)")
    submit.add_argument("--max-attempts", type=int, help="attempts before it fails (1..10; default the type's)")
    submit.add_argument("--timeout-s", type=int, help="time limit of one attempt (default the type's)")
    submit.add_argument("--max-tokens-total", type=int, help="the most model tokens the job may use (default the "
                                                             "type's budget, if any)")
    submit.add_argument("--idempotency-key", help="the same key gives back the same job for 24 h")
    submit.add_argument("--watch", action="store_true",
                        help="watch it to the end; exit 0 completed, 1 failed, 2 canceled")
    common(submit)
    submit.set_defaults(client_command=cmd_submit)

    for name, func, text in (("status", cmd_status, "show a job"), ("cancel", cmd_cancel, "cancel a job"),
                             ("retry", cmd_retry, "run a failed or canceled job again")):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("id", help="the job's id")
        if name == "retry":
            parser.add_argument("--watch", action="store_true", help="watch the new attempt to its end")
        common(parser)
        parser.set_defaults(client_command=func)

    watch_set = sub.add_parser("watch", help="watch many jobs over one stream, one live bar each")
    watch_set.add_argument("id", nargs="*", help="the jobs' ids (it ends once all have ended); or use --tag")
    watch_set.add_argument("--tag", action="append", default=[],
                           help="key=value (or key:value; repeatable): every job carrying them, new ones too")
    watch_set.add_argument("--type", help="only jobs of this type")
    common(watch_set)
    watch_set.set_defaults(client_command=cmd_watch)

    jobs = sub.add_parser("jobs", help="list your jobs, newest first")
    jobs.add_argument("--status", choices=list(STATUSES))
    jobs.add_argument("--type")
    jobs.add_argument("--tag", action="append", default=[], help="key=value (repeatable)")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (1..500, default 50)")
    jobs.add_argument("--json", action="store_true", help="print the page as JSON instead of a table")
    common(jobs)
    jobs.set_defaults(client_command=cmd_jobs)
