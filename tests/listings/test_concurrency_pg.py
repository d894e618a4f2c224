"""Real concurrency on PostgreSQL: twenty buyers race for one listing; one order is created and paid, never two."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from services.listings.store import listings, orders
from services.payments.store import holds

from .support import app_client, auth, book_body, certify, imei, phone_body, uid


@pytest.fixture
async def many_threads():
    """Run the app's blocking handlers on 32 threads, so requests really overlap in the database."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(32)
    loop.set_default_executor(pool)
    yield
    pool.shutdown(wait=False)


@pytest.mark.postgres
async def test_twenty_buyers_race_for_one_listing_and_one_order_pays(
    many_threads, aiohttp_client, pg_settings
):
    s = pg_settings
    platform, client = await app_client(aiohttp_client, s)
    seller = uid("sel")
    r = await client.post("/v1/listings", json=book_body(), headers=auth(s, seller))
    lid = (await r.json())["id"]
    assert (await client.post(f"/v1/listings/{lid}/publish", headers=auth(s, seller))).status == 200
    buyers = [uid("buy") for _ in range(20)]

    replies = await asyncio.gather(
        *[client.post("/v1/orders", json={"listing_id": lid}, headers=auth(s, b)) for b in buyers]
    )
    assert Counter(r.status for r in replies) == {201: 1, 409: 19}
    winner, reply = next((b, r) for b, r in zip(buyers, replies) if r.status == 201)
    order = await reply.json()
    for r in replies:
        if r.status == 409:
            assert (await r.json())["current_state"] == "reserved"
    platform.drain()

    # every buyer tries to pay: only the winner has a payment, and confirming it twice at once holds once
    pay = f"/v1/payments/intents/{order['payment']['id']}/confirm"
    attempts = await asyncio.gather(
        *[
            client.post(pay, json={"payment_method": "pm_card_visa"}, headers=auth(s, b))
            for b in buyers + [winner]
        ]
    )
    assert Counter(r.status for r in attempts) == {200: 2, 403: 19}
    platform.drain()
    with platform["listings"].db.session() as ss:
        states = Counter(
            r.status for r in ss.execute(select(orders.c.status).where(orders.c.listing_id == lid))
        )
        listing = ss.execute(select(listings).where(listings.c.id == lid)).one()
    assert states == {"paid": 1}
    assert listing.status == "reserved" and listing.reserved_order_id == order["id"]
    with platform["payments"].db.session() as ss:
        assert (
            ss.execute(
                select(func.count()).select_from(holds).where(holds.c.reference_id == order["id"])
            ).scalar()
            == 1
        )


@pytest.mark.postgres
async def test_listings_of_one_device_racing_to_publish_one_wins(many_threads, aiohttp_client, pg_settings):
    s = pg_settings
    platform, client = await app_client(aiohttp_client, s)
    value = imei("35209900170001")
    certify(platform, imei_value=value)
    sellers = [uid("sel") for _ in range(8)]
    lids = []
    for seller in sellers:
        r = await client.post("/v1/listings", json=phone_body(value), headers=auth(s, seller))
        lids.append((await r.json())["id"])
    replies = await asyncio.gather(
        *[client.post(f"/v1/listings/{lid}/publish", headers=auth(s, sel)) for lid, sel in zip(lids, sellers)]
    )
    assert Counter(r.status for r in replies) == {200: 1, 422: 7}
    with platform["listings"].db.session() as ss:
        live = ss.execute(select(func.count()).select_from(listings).where(listings.c.status == "published"))
        assert live.scalar() == 1
