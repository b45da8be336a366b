from __future__ import annotations

import pytest

from jobcast.errors import ConfigError
from jobcast.settings import Settings


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
