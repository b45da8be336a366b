"""Every key a Lua script touches comes in its `KEYS`: read from the scripts' source, so a script that builds a
key from a prefix or a record's field (which Redis Cluster, and anyone reading `keys.py`, would not see) fails
here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

LUA = Path(__file__).resolve().parents[2] / "src" / "jobcast" / "store" / "lua"
LIB = (LUA / "lib.lua").read_text()
KEYLESS = {"TIME", "PUBLISH", "INFO"}  # commands whose first argument is not a key
CALL = re.compile(r"redis\.p?call\('(\w+)',\s*(?:'STREAM',\s*)?([^,)]+)")  # (XINFO STREAM's key comes second)


def _parameters(source: str) -> set[str]:
    """The parameters of the script's local functions: a key there is whatever the caller passed."""
    names: set[str] = set()
    for params in re.findall(r"local function \w+\(([^)]*)\)", source):
        names.update(p.strip() for p in params.split(",") if p.strip())
    return names


def _bound_to_keys(source: str) -> set[str]:
    """Local names assigned from `KEYS[...]` (`local job, events = KEYS[1], KEYS[2]`)."""
    names: set[str] = set()
    for left, right in re.findall(r"local ([\w, ]+?)\s*=\s*\n?\s*([^\n]+(?:\n\s+KEYS[^\n]*)*)", source):
        targets = [t.strip() for t in left.split(",")]
        values = [v.strip() for v in right.split(",")]
        names.update(t for t, v in zip(targets, values, strict=False) if v.startswith("KEYS["))
    return names


@pytest.mark.parametrize("script", sorted(p.name for p in LUA.glob("*.lua")))
def test_every_key_a_script_touches_is_declared_in_its_keys(script: str) -> None:
    source = (LUA / script).read_text()
    declared = _bound_to_keys(source) | (_parameters(LIB) if script == "lib.lua" else set())
    undeclared = []
    for command, first in CALL.findall(source):
        first = first.strip()
        if command in KEYLESS or re.fullmatch(r"KEYS\[[^\]]+\]", first) or first.split(".")[0] in declared:
            continue
        undeclared.append(f"{command} {first}")
    assert not undeclared, f"{script} touches keys not taken from KEYS: {undeclared}"


def test_the_check_finds_a_key_built_inside_a_script() -> None:
    built = "local job = ARGV[2] .. ':job:{' .. id .. '}'\nredis.call('HSET', job, 'stage', 'queued')"
    assert "job" not in _bound_to_keys(built) and CALL.findall(built) == [("HSET", "job")]
