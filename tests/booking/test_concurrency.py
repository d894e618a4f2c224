"""Real concurrency against the app: many collectors grab one job; many residents book one slot."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import time, timedelta

import pytest
from sqlalchemy import func, select

from services.booking.store import pickups, slot_usage
from services.kernel.outbox import outbox_t

from .support import app_client, auth, booking_body, uid, verify_collector, window


@pytest.fixture
async def many_threads():
    """Run the app's blocking handlers on 64 threads, so requests really overlap in the database."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(64)
    loop.set_default_executor(pool)
    yield
    pool.shutdown(wait=False)


@pytest.mark.postgres
async def test_fifty_collectors_grab_one_job_postgres(many_threads, aiohttp_client, pg_settings):
    s = pg_settings
    platform, client = await app_client(aiohttp_client, s)
    collectors = [uid("col") for _ in range(50)]
    for c in collectors:
        verify_collector(platform, c)
    r = await client.post("/v1/pickups", json=booking_body(), headers=auth(s, uid("res"), "resident"))
    pid = (await r.json())["id"]
    headers = {c: auth(s, c, "collector") for c in collectors}

    replies = await asyncio.gather(
        *[client.post(f"/v1/jobs/{pid}/accept", headers=headers[c]) for c in collectors]
    )
    statuses = Counter(r.status for r in replies)
    assert statuses == {200: 1, 409: 49}, statuses
    winner = next(c for c, r in zip(collectors, replies) if r.status == 200)
    for r in replies:
        body = await r.json()
        if r.status == 409:
            assert body["current_state"] == "accepted"
    with platform["booking"].db.session() as ss:
        row = ss.execute(select(pickups).where(pickups.c.id == pid)).one()
        accepted_events = ss.execute(
            select(func.count())
            .select_from(outbox_t)
            .where(outbox_t.c.key == pid, outbox_t.c.type == "cn.recycle.booking.pickup.accepted.v1")
        ).scalar()
    assert row.collector_user_id == winner and row.status == "accepted" and accepted_events == 1
    # the winner again: still 200; a loser again: still 409
    assert (await client.post(f"/v1/jobs/{pid}/accept", headers=headers[winner])).status == 200
    loser = next(c for c in collectors if c != winner)
    assert (await client.post(f"/v1/jobs/{pid}/accept", headers=headers[loser])).status == 409


async def _book_one_slot_concurrently(aiohttp_client, settings) -> None:  # noqa: ANN001
    platform, client = await app_client(aiohttp_client, settings, slot_capacity=5)
    residents = [uid("res") for _ in range(40)]
    replies = await asyncio.gather(
        *[
            client.post("/v1/pickups", json=booking_body(), headers=auth(settings, r, "resident"))
            for r in residents
        ]
    )
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: 5, 422: 35}, statuses
    for r in replies:
        if r.status == 422:
            assert (await r.json())["reason"] == "slot_full"
    with platform["booking"].db.session() as ss:
        assert ss.execute(select(func.count()).select_from(pickups)).scalar() == 5
        assert ss.execute(select(func.sum(slot_usage.c.booked))).scalar() == 5


async def _book_overlapping_windows_concurrently(aiohttp_client, settings) -> None:  # noqa: ANN001
    """Windows of 1..4 slots between 10:00 and 12:00: no slot ever holds more than its capacity."""
    capacity = 3
    platform, client = await app_client(aiohttp_client, settings, slot_capacity=capacity)
    rnd = random.Random(7)
    bodies = []
    for _ in range(40):
        start = rnd.randrange(4)
        length = rnd.randint(1, 4 - start)
        bodies.append(
            booking_body(win=window(start=time(10 + start // 2, 30 * (start % 2)), minutes=30 * length))
        )
    replies = await asyncio.gather(
        *[client.post("/v1/pickups", json=b, headers=auth(settings, uid("res"), "resident")) for b in bodies]
    )
    assert {r.status for r in replies} <= {201, 422}
    assert any(r.status == 201 for r in replies) and any(r.status == 422 for r in replies)
    with platform["booking"].db.session() as ss:
        rows = ss.execute(select(pickups.c.window_start, pickups.c.window_end)).all()
        usage = {u.slot_start.replace(tzinfo=None): u.booked for u in ss.execute(select(slot_usage)).all()}
    covering: Counter = Counter()
    for r in rows:
        t = r.window_start.replace(tzinfo=None)
        while t < r.window_end.replace(tzinfo=None):
            covering[t] += 1
            t += timedelta(minutes=30)
    assert covering and max(covering.values()) <= capacity
    assert {k: v for k, v in usage.items() if v} == dict(covering)


async def test_slot_capacity_never_overbooks_sqlite(many_threads, aiohttp_client, sqlite_settings):
    await _book_one_slot_concurrently(aiohttp_client, sqlite_settings)


async def test_overlapping_windows_never_overbook_sqlite(many_threads, aiohttp_client, sqlite_settings):
    await _book_overlapping_windows_concurrently(aiohttp_client, sqlite_settings)


@pytest.mark.postgres
async def test_slot_capacity_never_overbooks_postgres(many_threads, aiohttp_client, pg_settings):
    await _book_one_slot_concurrently(aiohttp_client, pg_settings)


@pytest.mark.postgres
async def test_overlapping_windows_never_overbook_postgres(many_threads, aiohttp_client, pg_settings):
    await _book_overlapping_windows_concurrently(aiohttp_client, pg_settings)
