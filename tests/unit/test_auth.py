from __future__ import annotations

import pytest

from jobcast.errors import Unauthorized
from jobcast.web.auth import ANONYMOUS, Auth

KEYS = {"a" * 20: "alice", "b" * 20: "bob"}


def test_without_keys_everyone_is_anonymous() -> None:
    assert Auth({}, None, 60).owner_for_key(None) == ANONYMOUS


def test_a_bearer_key_names_its_owner() -> None:
    auth = Auth(KEYS, "s" * 16, 60)
    assert auth.owner_for_key("Bearer " + "b" * 20) == "bob"
    for header in (None, "", "Bearer ", "Basic " + "a" * 20, "Bearer " + "a" * 19, "Bearer " + "a" * 21):
        with pytest.raises(Unauthorized):
            auth.owner_for_key(header)


def test_a_token_opens_one_job_until_it_expires() -> None:
    auth = Auth(KEYS, "s" * 16, 60)
    token = auth.token("j1")
    auth.check_token(token, "j1")
    for bad in (token, token[:-1] + "x", "x.y", "", "1.abc"):
        with pytest.raises(Unauthorized):
            auth.check_token(bad, "j2" if bad == token else "j1")
    with pytest.raises(Unauthorized, match="expired"):
        Auth(KEYS, "s" * 16, -1).check_token(Auth(KEYS, "s" * 16, -1).token("j1"), "j1")
    with pytest.raises(Unauthorized):
        Auth(KEYS, "another-secret!!", 60).check_token(token, "j1")
