"""One contract for the idempotency store port, run against every adapter: SQLite, PostgreSQL, Redis."""

from __future__ import annotations

import asyncio

import pytest

from gateway.idempotency import RedisIdempotencyStore, SqlIdempotencyStore, StoredReply
from services.kernel.db import Database

REPLY = StoredReply(201, {"Content-Type": "application/json; charset=utf-8"}, '{"id":"x","名":"值"}'.encode())


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def store(request, tmp_path):  # noqa: ANN001, ANN201
    if request.param == "sqlite":
        s = SqlIdempotencyStore(Database(f"sqlite:///{tmp_path}/gateway.db"))
    elif request.param == "postgres":
        from tests.conftest import unique_prefix

        url = request.getfixturevalue("pg_url")
        s = SqlIdempotencyStore(Database(url, schema=unique_prefix() + "gateway"))
    else:
        s = RedisIdempotencyStore(
            request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        )
    yield s
    await s.close()


async def test_claim_complete_replay(store) -> None:  # noqa: ANN001
    first = await store.claim("user:a", "k1", "fp1", 30)
    assert first.outcome == "new" and first.token
    assert (await store.claim("user:a", "k1", "fp1", 30)).outcome == "in_progress"
    assert (await store.claim("user:a", "k1", "fp2", 30)).outcome == "mismatch"
    await store.complete("user:a", "k1", first.token, REPLY, 60)
    again = await store.claim("user:a", "k1", "fp1", 30)
    assert again.outcome == "replay" and again.reply == REPLY
    assert (await store.claim("user:a", "k1", "fp2", 30)).outcome == "mismatch"


async def test_keys_are_scoped(store) -> None:  # noqa: ANN001
    assert (await store.claim("user:a", "k", "fp", 30)).outcome == "new"
    assert (await store.claim("user:b", "k", "other", 30)).outcome == "new"
    assert (await store.claim("ip:127.0.0.1", "k", "fp", 30)).outcome == "new"


async def test_release_frees_the_key(store) -> None:  # noqa: ANN001
    c = await store.claim("user:a", "k", "fp", 30)
    await store.release("user:a", "k", "wrong-token")
    assert (await store.claim("user:a", "k", "fp", 30)).outcome == "in_progress"
    await store.release("user:a", "k", c.token)
    assert (await store.claim("user:a", "k", "fp2", 30)).outcome == "new"


async def test_a_stale_claim_is_taken_over_and_the_old_owner_cannot_complete(store) -> None:  # noqa: ANN001
    old = await store.claim("user:a", "k", "fp", 0.2)
    await asyncio.sleep(0.3)
    new = await store.claim("user:a", "k", "fp", 30)
    assert new.outcome == "new" and new.token != old.token
    await store.complete("user:a", "k", old.token, REPLY, 60)
    assert (await store.claim("user:a", "k", "fp", 30)).outcome == "in_progress"
    await store.complete("user:a", "k", new.token, REPLY, 60)
    assert (await store.claim("user:a", "k", "fp", 30)).outcome == "replay"


async def test_replies_expire(store) -> None:  # noqa: ANN001
    c = await store.claim("user:a", "k", "fp", 30)
    await store.complete("user:a", "k", c.token, REPLY, 0.2)
    assert (await store.claim("user:a", "k", "fp", 30)).outcome == "replay"
    await asyncio.sleep(0.3)
    await store.purge_expired()
    assert (await store.claim("user:a", "k", "other", 30)).outcome == "new"


async def test_concurrent_claims_elect_exactly_one(store) -> None:  # noqa: ANN001
    results = await asyncio.gather(*[store.claim("user:a", "race", "fp", 30) for _ in range(16)])
    outcomes = sorted(r.outcome for r in results)
    assert outcomes.count("new") == 1 and outcomes.count("in_progress") == 15
