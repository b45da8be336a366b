from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from jobcast.errors import ConfigError
from jobcast.settings import ClientSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
SRC, README = ROOT / "src" / "jobcast", ROOT / "README.md"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.redis_url, s.prefix, s.job_ttl_s, s.max_body_bytes, s.ping_interval_s) == (None, "jc", 86400, 262144, 15)


def test_values_are_read() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://r:1/2", "JOBCAST_JOB_TTL": "60", "JOBCAST_PING_MS": "500",
                           "JOBCAST_JOB_MODULES": "a.b, c ,"})
    assert (s.redis_url, s.job_ttl_s, s.ping_interval_s, s.job_modules) == ("redis://r:1/2", 60, 0.5, ("a.b", "c"))


def test_the_public_url_loses_its_trailing_slash() -> None:
    assert Settings.from_env({"JOBCAST_PUBLIC_URL": "https://example.com/jobcast/"}).public_url == \
        "https://example.com/jobcast"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBCAST_JOB_TTL": "soon"}, "JOBCAST_JOB_TTL='soon' is not a whole number"),
        ({"JOBCAST_JOB_TTL": "0"}, "JOBCAST_JOB_TTL=0 is out of range"),
        ({"JOBCAST_PING_MS": "60000"}, "JOBCAST_PING_MS=60000 is out of range"),
        ({"JOBCAST_LOG_LEVEL": "loud"}, "JOBCAST_LOG_LEVEL='loud' is not a level"),
        ({"JOBCAST_PREFIX": "a b"}, "may not contain spaces or braces"),
        ({"JOBCAST_PUBLIC_URL": "jobs.example.com"}, "JOBCAST_PUBLIC_URL='jobs.example.com' is not the http"),
        ({"JOBCAST_PUBLIC_URL": "https://example.com/x?a=1"}, "no query, no fragment"),
    ],
)
def test_bad_values_say_what_to_set(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_api_keys_come_as_pairs_or_from_a_file(tmp_path) -> None:
    s = Settings.from_env({"JOBCAST_API_KEYS": "k" * 16 + ":alice, " + "j" * 16 + ":bob", "JOBCAST_SECRET": "s" * 16})
    assert s.api_keys == {"k" * 16: "alice", "j" * 16: "bob"}
    keys = tmp_path / "keys"
    keys.write_text("# owners\n" + "x" * 20 + ":carol\n")
    settings = Settings.from_env({"JOBCAST_API_KEYS": str(keys), "JOBCAST_SECRET": "s" * 16})
    assert settings.api_keys == {"x" * 20: "carol"}
    assert "k" * 16 not in repr(s) and "s" * 16 not in repr(s)


@pytest.mark.parametrize(("env", "message"), [
    ({"JOBCAST_API_KEYS": "short:alice", "JOBCAST_SECRET": "s" * 16}, "entry 1 of JOBCAST_API_KEYS is not"),
    ({"JOBCAST_API_KEYS": "k" * 16 + ":al ice", "JOBCAST_SECRET": "s" * 16}, "entry 1 of JOBCAST_API_KEYS is not"),
    ({"JOBCAST_API_KEYS": "k" * 16 + ":alice"}, "set JOBCAST_SECRET"),
])
def test_bad_api_key_settings_say_what_to_fix_without_showing_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        Settings.from_env(env)
    assert "k" * 16 not in str(err.value) and "short" not in str(err.value)


def _declared() -> set[str]:
    return {f.metadata["env"] for c in (Settings, ClientSettings) for f in dataclasses.fields(c)
            if f.metadata.get("env")}


def test_every_variable_read_anywhere_is_a_declared_setting_and_in_the_readme() -> None:
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p.name != "settings.py")
    read_elsewhere = set(re.findall(r"environ(?:\.get)?[\[(]\"((?:JOBCAST|REDIS|OPENAI)_\w+)", source))
    assert not read_elsewhere, f"read outside settings.py: {read_elsewhere}"
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = {n for pair in re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)?", section, re.M) for n in pair if n}
    assert listed - {"PROMETHEUS_MULTIPROC_DIR"} == _declared()


def test_the_worker_and_client_knobs_are_read_with_the_rest() -> None:
    s = Settings.from_env({"JOBCAST_WORKER_BURST": "1", "JOBCAST_WORKER_SIMPLE": "1", "JOBCAST_WORKER_NAME": " w1 "})
    assert (s.worker_burst, s.worker_simple, s.worker_name) == (True, True, "w1")
    c = ClientSettings.from_env({"JOBCAST_URL": "http://api:1", "JOBCAST_API_KEY": "k"})
    assert (c.url, c.api_key) == ("http://api:1", "k")
    assert ClientSettings.from_env({}).url == "http://127.0.0.1:8000"
    assert Settings().redis_target == "redis://127.0.0.1:6379/0"
