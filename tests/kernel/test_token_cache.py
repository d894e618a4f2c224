"""The verified-token cache never outlives a token, and never serves a token signed with another secret."""

from __future__ import annotations

import time

import pytest

from services.kernel import auth
from services.kernel.auth import Principal, issue_token, verify_token
from services.kernel.errors import Unauthorized
from services.kernel.settings import Settings


def test_cached_token_still_expires(tmp_path):
    s = Settings(env="test", data_dir=tmp_path, jwt_secret="a" * 40, access_token_ttl_s=1)
    token = issue_token(s, Principal("u1", frozenset({"resident"})))
    assert verify_token(s, token).user_id == "u1"  # now cached
    assert any(k[1] == token for k in auth._VERIFIED)
    time.sleep(1.1)
    with pytest.raises(Unauthorized):
        verify_token(s, token)


def test_cache_is_keyed_by_secret(tmp_path):
    s1 = Settings(env="test", data_dir=tmp_path, jwt_secret="a" * 40)
    s2 = Settings(env="test", data_dir=tmp_path, jwt_secret="b" * 40)
    token = issue_token(s1, Principal("u1", frozenset({"resident"})))
    assert verify_token(s1, token).user_id == "u1"
    with pytest.raises(Unauthorized):
        verify_token(s2, token)
