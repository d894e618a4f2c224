"""Idempotency-Key through the API: replays, 422 on reuse, per-user scope, concurrent duplicates, 5xx not stored."""

from __future__ import annotations

import asyncio
import json
import time

from sqlalchemy import func, select

from gateway.idempotency import SqlIdempotencyStore
from services.accounts import handlers
from services.accounts.store import consents, firms
from tests.gateway.support import CITY_CODE, USCC, call, login, start

FIRM = {
    "name": "再生资源公司",
    "uscc": USCC,
    "recycler_filing_no": "BA-1",
    "address": "北京市",
    "city_code": CITY_CODE,
}


def _count(platform, table) -> int:  # noqa: ANN001
    with platform["accounts"].db.session() as s:
        return s.execute(select(func.count()).select_from(table)).scalar_one()


async def _replay(aiohttp_client, settings) -> None:  # noqa: ANN001
    platform, client = await start(aiohttp_client, settings)
    owner = await login(client, platform, "13800138000")
    key = {"Idempotency-Key": "firm-0001"}
    r1 = await client.post("/v1/firms", json=FIRM, headers=owner.auth | key)
    b1 = await r1.json()
    assert r1.status == 201 and "Idempotent-Replayed" not in r1.headers
    r2 = await client.post("/v1/firms", json=FIRM, headers=owner.auth | key)
    assert r2.status == 201 and await r2.json() == b1 and r2.headers["Idempotent-Replayed"] == "true"
    assert r2.content_type == "application/json" and r2.headers["X-Request-Id"] != r1.headers["X-Request-Id"]
    assert _count(platform, firms) == 1  # the work was done once (without the key the second would be a 409)

    # the same key with another body: 422, nothing done
    r3 = await client.post("/v1/firms", json=FIRM | {"name": "别的公司"}, headers=owner.auth | key)
    body = await r3.json()
    assert r3.status == 422 and body["reason"] == "idempotency_key_reused"
    assert body["errors"][0]["field"] == "Idempotency-Key"
    # ... or on another path
    st, _ = await call(
        client, "POST", "/v1/me/consents", owner, json={"kind": "reverse_invoicing"}, headers=key
    )
    assert st == 422

    # an error reply is the request's outcome too: replayed
    bad = {"Idempotency-Key": "firm-0002"}
    st1, e1 = await call(client, "POST", "/v1/firms", owner, json=FIRM | {"uscc": "bad"}, headers=bad)
    st2, e2 = await call(client, "POST", "/v1/firms", owner, json=FIRM | {"uscc": "bad"}, headers=bad)
    assert st1 == st2 == 400 and e1["errors"] == e2["errors"]

    # keys are per user: another user's identical key runs their own request
    other = await login(client, platform, "13800138001")
    k = {"Idempotency-Key": "consent-1"}
    st_a, a = await call(
        client, "POST", "/v1/me/consents", owner, json={"kind": "reverse_invoicing"}, headers=k
    )
    st_b, b = await call(
        client, "POST", "/v1/me/consents", other, json={"kind": "reverse_invoicing"}, headers=k
    )
    assert st_a == st_b == 201 and a["id"] != b["id"] and _count(platform, consents) == 2

    # a key that is not visible ASCII is refused
    st, body = await call(
        client,
        "POST",
        "/v1/me/consents",
        owner,
        json={"kind": "reverse_invoicing"},
        headers={"Idempotency-Key": "x" * 256},
    )
    assert st == 400 and body["errors"][0]["field"] == "Idempotency-Key"


async def test_replay_sqlite_store(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    await _replay(aiohttp_client, sqlite_settings)


async def test_replay_redis_store(
    aiohttp_client,
    sqlite_settings,
    redis_url,
    redis_prefix,  # noqa: ANN001
    monkeypatch,
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_PREFIX", redis_prefix)
    await _replay(aiohttp_client, sqlite_settings.model_copy(update={"redis_url": redis_url}))


async def test_concurrent_duplicates_run_once(aiohttp_client, sqlite_settings, monkeypatch) -> None:  # noqa: ANN001
    real = handlers.record_consent

    def slow(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        time.sleep(0.4)
        return real(*args, **kw)

    monkeypatch.setattr(handlers, "record_consent", slow)
    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, "13800138000")
    headers = user.auth | {"Idempotency-Key": "dup-1"}
    send = [
        client.post("/v1/me/consents", json={"kind": "reverse_invoicing"}, headers=headers) for _ in range(3)
    ]
    replies = await asyncio.gather(*send)
    statuses = sorted(r.status for r in replies)
    assert statuses == [201, 409, 409], statuses
    busy = next(r for r in replies if r.status == 409)
    assert (
        busy.headers["Retry-After"] == "1" and (await busy.json())["reason"] == "idempotency_key_in_progress"
    )
    done = next(r for r in replies if r.status == 201)
    first = await done.json()
    r = await client.post("/v1/me/consents", json={"kind": "reverse_invoicing"}, headers=headers)
    assert r.status == 201 and await r.json() == first and r.headers["Idempotent-Replayed"] == "true"
    with platform["accounts"].db.session() as s:
        from services.kernel.outbox import outbox_t

        types = s.execute(select(outbox_t.c.type)).scalars().all()
    assert sum(t.endswith("consent_recorded.v1") for t in types) == 1


async def test_server_errors_are_not_stored(aiohttp_client, sqlite_settings, monkeypatch) -> None:  # noqa: ANN001
    real = handlers.record_consent
    calls = []

    def flaky(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real(*args, **kw)

    monkeypatch.setattr(handlers, "record_consent", flaky)
    # a slow store (a loaded machine): the key must be free before the 500 goes out, not some time after
    real_release = SqlIdempotencyStore._release

    def slow_release(*args):  # noqa: ANN002, ANN202 - runs in the store's worker thread
        time.sleep(0.5)  # noqa: ASYNC251
        return real_release(*args)

    monkeypatch.setattr(SqlIdempotencyStore, "_release", slow_release)
    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, "13800138000")
    headers = {"Idempotency-Key": "retry-me"}
    st, body = await call(
        client, "POST", "/v1/me/consents", user, json={"kind": "reverse_invoicing"}, headers=headers
    )
    assert st == 500 and "database went away" not in json.dumps(body)
    st, body = await call(
        client, "POST", "/v1/me/consents", user, json={"kind": "reverse_invoicing"}, headers=headers
    )
    assert st == 201 and len(calls) == 2


async def test_get_and_keyless_posts_are_untouched(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, "13800138000")
    st, a = await call(client, "POST", "/v1/firms", user, json=FIRM)
    st2, b = await call(client, "POST", "/v1/firms", user, json=FIRM)
    assert (st, st2) == (201, 409)
    r = await client.get("/v1/me", headers=user.auth | {"Idempotency-Key": "ignored"})
    assert r.status == 200 and "Idempotent-Replayed" not in r.headers
