"""/openapi.json describes every endpoint, and schemathesis, fuzzing the live API from it, finds nothing wrong."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Stack

CONTRACT_ROUTES = {
    ("post", "/jobs"), ("get", "/jobs"), ("get", "/jobs/{job_id}"), ("delete", "/jobs/{job_id}"),
    ("get", "/jobs/{job_id}/events"), ("get", "/events"), ("post", "/jobs/{job_id}/cancel"),
    ("post", "/jobs/{job_id}/retry"),
    ("get", "/job-types"), ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/openapi.json"),
    ("get", "/"),
}
KEY = "openapi-test-key-0123456789"


def test_the_document_lists_every_endpoint_with_its_errors(stack: Stack) -> None:
    with stack.client() as c:
        doc = c.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    listed = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert listed == CONTRACT_ROUTES
    submit = doc["paths"]["/jobs"]["post"]
    assert set(submit["responses"]) == {"202", "400", "401", "409", "413", "415", "422", "429", "503"}
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    # The submit body offers each type this server can run now, with that type's payload schema.
    variants = {doc["components"]["schemas"][v["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"]
                for v in submit["requestBody"]["content"]["application/json"]["schema"]["oneOf"]}
    assert "demo" in variants and "chat" not in variants  # no model configured here: chat is unavailable
    assert "security" not in doc, "auth is off on this server: no key is asked for"


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
        make_stack: Any, tmp_path: Path, auth: bool) -> None:
    env = {"JOBCAST_API_KEYS": f"{KEY}:fuzz", "JOBCAST_SECRET": "s" * 32} if auth else {}
    stack: Stack = make_stack(workers=0, JOBCAST_SUBMIT_RATE="0", **env)
    binary = shutil.which("schemathesis", path=str(Path(__import__("sys").executable).parent))
    assert binary, "schemathesis is a dev dependency: `make test` installs it"
    args = [
        binary, "run", f"{stack.url}/openapi.json", "--checks", "all", "--max-examples", "15" if not auth else "8",
        # An event stream of a job that never runs stays open: read it for 1 s, then move on.
        "--request-timeout", "1",
        # One worker: several threads make CPython 3.11's ast.parse (used by hypothesis) fail at random.
        "--workers", "1", "--no-color", "--seed", "20261125",
    ]
    if auth:
        args += ["--header", f"Authorization: Bearer {KEY}"]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    summary = run.stdout.rsplit("SUMMARY", 1)[-1]  # warnings (e.g. ids it could not guess) are not findings
    assert "Failures:" not in summary and "Errors:" not in summary and " passed" in summary, summary
