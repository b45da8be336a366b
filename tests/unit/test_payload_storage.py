"""What POST /jobs keeps of a payload: as sent, by alias, with values from default factories."""

from __future__ import annotations

import uuid

import orjson
from pydantic import BaseModel, ConfigDict, Field

from jobcast.submission import stored_payload


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = 10
    seed: str = Field(default_factory=lambda: uuid.uuid4().hex)
    name: str = Field("x", alias="displayName")


def test_static_defaults_are_left_out_factory_values_kept_aliases_used() -> None:
    payload = Payload.model_validate({"displayName": "Ada"})
    stored = orjson.loads(stored_payload(payload))
    assert stored == {"seed": payload.seed, "displayName": "Ada"}
    again = Payload.model_validate_json(stored_payload(payload))  # what the worker does
    assert again == payload
