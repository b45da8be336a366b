"""The Lua scripts of `lua/`, each with `lib.lua` (the helpers they share) in front where it uses it.

Every script names the keys it touches in its `KEYS` (so that none is built inside a script) and takes its
arguments as listed at its top: a handful of positional ones, or one JSON object of named options.
"""

from __future__ import annotations

from importlib.resources import files

__all__ = [
    "CAPACITY_LUA", "CARRY_LUA", "CHANGE_LUA", "CREATE_LUA", "DELETE_IF_SAME_LUA", "DELETE_LUA", "HEARTBEAT_LUA",
    "PAUSE_LUA", "POSITIONS_LUA", "PROMOTE_LUA", "SNAPSHOT_LUA", "TOKENS_USED_LUA", "USAGE_LUA",
]


def _lua(name: str) -> str:
    return files("jobcast.store").joinpath(f"lua/{name}.lua").read_text()


_LIB = _lua("lib")
CHANGE_LUA = {kind: _LIB + _lua(script) for kind, script in (
    ("start", "start"), ("state", "report"), ("item", "output"), ("delta", "output"), ("again", "again"),
    ("end", "finish"),
)}
"""The script of each kind of change `Store.emit` makes (`item` and `delta` share one)."""
CREATE_LUA = _LIB + _lua("create")
CARRY_LUA = _LIB + _lua("carry")
POSITIONS_LUA = _LIB + _lua("positions")
DELETE_LUA = _lua("delete")
PROMOTE_LUA = _LIB + _lua("promote")
HEARTBEAT_LUA = _lua("heartbeat")
SNAPSHOT_LUA = _lua("snapshot")
USAGE_LUA = _lua("usage")
CAPACITY_LUA = _lua("capacity")
TOKENS_USED_LUA = _lua("tokens_used")
PAUSE_LUA = ("local now = redis.call('GET', KEYS[1]) if not now or tonumber(now) < tonumber(ARGV[1]) then "
             "redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1]) end return 1")
"""Pause a model's calls until `ARGV[1]` (ms) unless a longer pause holds already (`KEYS[1]`: `Keys.model_pause`)."""
DELETE_IF_SAME_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
"""Let go of an Idempotency-Key (`KEYS[1]`) unless another request holds it by now (`ARGV[1]`: our claim)."""
