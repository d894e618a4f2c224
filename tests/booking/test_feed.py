"""The live job feed (text/event-stream): collectors near a new job see it, then see it taken; events written by
another process reach the stream through the bus."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.booking.domain.events import PickupCancelled
from services.booking.geo import encode
from tests.support.sse import next_event

from .support import HOME, app_client, auth, booking_body, publish, uid, verify_collector


async def test_stream_shows_new_and_taken_jobs_to_collectors_near_them(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, feed_poll_interval_s=0.05)
    near, rival, far = uid("col"), uid("col"), uid("col")
    verify_collector(platform, near)
    verify_collector(platform, rival)
    verify_collector(platform, far, lat=31.23, lng=121.47)  # 上海

    stream = await client.get("/v1/jobs/stream", headers=auth(s, near, "collector"))
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    assert (await stream.content.readline()) == b"retry: 3000\n"
    far_stream = await client.get("/v1/jobs/stream", headers=auth(s, far, "collector"))

    r = await client.post("/v1/pickups", json=booking_body(), headers=auth(s, uid("res"), "resident"))
    pid = (await r.json())["id"]
    name, data = await next_event(stream)
    assert name == "job.new" and data["id"] == pid and data["district"] == "北京市 朝阳区"
    assert data["distance_km"] < 0.2 and "address" not in data and data["quote_total_fen"] == 7150

    assert (await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, rival, "collector"))).status == 200
    name, data = await next_event(stream)
    assert (name, data) == ("job.taken", {"id": pid, "by_you": False})

    # a job cancelled by another process (only on the bus) reaches the stream through the pump
    pid2 = (
        await (
            await client.post("/v1/pickups", json=booking_body(), headers=auth(s, uid("res"), "resident"))
        ).json()
    )["id"]
    assert (await next_event(stream))[0] == "job.new"
    publish(
        platform,
        PickupCancelled(
            pickup_id=pid2,
            by="resident",
            previous_status="requested",
            geohash=encode(*HOME, 7),
            cancelled_at=datetime.now(UTC),
        ),
    )
    name, data = await next_event(stream)
    assert (name, data) == ("job.removed", {"id": pid2, "reason": "cancelled"})

    # the collector in 上海 heard nothing about 北京 (only the greeting)
    assert (await far_stream.content.readline()) == b"retry: 3000\n"
    assert (await far_stream.content.readline()) == b": connected\n"
    assert (await far_stream.content.readline()) == b"\n"
    try:
        await asyncio.wait_for(far_stream.content.readline(), 0.3)
        raise AssertionError("the far collector got a frame")
    except TimeoutError:
        pass
    stream.close()
    far_stream.close()


async def test_stream_is_for_verified_collectors(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    assert (await client.get("/v1/jobs/stream", headers=auth(s, uid("res"), "resident"))).status == 403
    assert (await client.get("/v1/jobs/stream", headers=auth(s, uid("col"), "collector"))).status == 403
    assert (await client.get("/v1/jobs/stream")).status == 401
