"""Test sessions side by side get Redis databases of their own (tests/support/redis_lease.py)."""

from __future__ import annotations

import redis

from tests.support.redis_lease import POOL, _key, leased_redis_db


def test_two_sessions_never_share_a_database_and_a_lease_ends_with_its_session(redis_url: str) -> None:
    server, mine = redis_url.rsplit("/", 1)
    admin = redis.Redis.from_url(f"{server}/0")
    with leased_redis_db(server) as a, leased_redis_db(server) as b:
        assert a in POOL and b in POOL and len({a, b, int(mine)}) == 3
        assert admin.ttl(_key(a)) > 0  # a killed session frees it in time
        with leased_redis_db(server, explicit=a) as c:
            assert c == a  # an explicit database is used even when held (the developer chose it)
    assert not admin.exists(_key(a)) and not admin.exists(_key(b))
    assert admin.exists(_key(int(mine)))  # this session's own lease stands
