"""The walking skeleton through the public API: health, OpenAPI, the taxonomy, and one event between services."""

from __future__ import annotations

from gateway.app import create_app_over
from services.booking.prices import current_price
from services.bootstrap import Platform


async def _client(aiohttp_client, settings):
    platform = Platform(settings).prepare()
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


async def test_health_openapi_and_categories(aiohttp_client, sqlite_settings):
    platform, client = await _client(aiohttp_client, sqlite_settings)
    r = await client.get("/healthz")
    assert r.status == 200 and await r.json() == {"status": "ok"}
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/v1/categories" in doc["paths"]
    cats = await (await client.get("/v1/categories")).json()
    by_code = {c["code"]: c for c in cats}
    assert by_code["metal.copper"]["unit"] == "kg" and by_code["metal.copper"]["parent"] == "metal"
    assert by_code["appliance.fridge"]["unit"] == "piece"
    r = await client.get("/v1/nope")
    assert r.status == 404 and r.content_type == "application/problem+json"
    assert (await r.json())["status"] == 404


async def _event_flow(aiohttp_client, settings):
    platform, client = await _client(aiohttp_client, settings)
    booking = platform["booking"]
    with booking.db.session() as s:
        assert current_price(s, "metal.copper", "110105") is None  # nothing consumed yet
    platform.drain()  # pricing's outbox → bus → booking's consumer
    with booking.db.session() as s:
        q = current_price(s, "metal.copper", "110105")
    assert q is not None and q.unit_price_fen == 4500 and q.source_region == "000000" and q.reference


async def test_event_from_pricing_reaches_booking_sqlite(aiohttp_client, sqlite_settings):
    await _event_flow(aiohttp_client, sqlite_settings)


async def test_event_from_pricing_reaches_booking_postgres(aiohttp_client, pg_settings):
    await _event_flow(aiohttp_client, pg_settings)
