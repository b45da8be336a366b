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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBCAST_JOB_TTL": "soon"}, "JOBCAST_JOB_TTL='soon' is not a whole number"),
        ({"JOBCAST_JOB_TTL": "0"}, "JOBCAST_JOB_TTL=0 is out of range"),
        ({"JOBCAST_PING_MS": "60000"}, "JOBCAST_PING_MS=60000 is out of range"),
        ({"JOBCAST_LOG_LEVEL": "loud"}, "JOBCAST_LOG_LEVEL='loud' is not a level"),
        ({"JOBCAST_PREFIX": "a b"}, "may not contain spaces or braces"),
    ],
)
def test_bad_values_say_what_to_set(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)
