"""The README's trading walk-through on the public API only, with every real service hosted (SQLite and
PostgreSQL): two firms approved by an admin, a collector of the seller settles a pickup of steel (the intake), the
seller lists a lot, the buyer pays a deposit and bids, the closing job awards it, the seller delivers on the
weighbridge ticket, the buyer pays through payments, the trade settles, and the trace links the lot to the pickup.
Nothing is set up behind the API's back (the close is the beat job's scan, run at a later `now`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.kernel.settings import Settings
from services.pricing.store import observations
from services.trading.closing import run_due
from tests.booking.support import HOME, booking_body
from tests.support.walkthrough import Walkthrough

ADMIN, RESIDENT, A_OWNER, B_OWNER, COLLECTOR = (
    "13900000001",
    "13912345678",
    "13800000001",
    "13800000002",
    "15011112222",
)


async def walkthrough(aiohttp_client, settings: Settings) -> None:
    platform = Platform(settings).prepare()
    app = create_app_over(platform)
    call = Walkthrough(await aiohttp_client(app), platform)

    async def login(phone: str) -> str:
        return (await call.login(phone))["access_token"]

    admin, resident = await login(ADMIN), await login(RESIDENT)
    firms = {}
    for phone, name, uscc, city in (
        (A_OWNER, "城东再生资源回收有限公司", "91110105MA00000012", "110105"),
        (B_OWNER, "华北钢铁炉料有限公司", "91130200MA00000017", "130203"),
    ):
        firm = await call(
            "POST",
            "/v1/firms",
            await login(phone),
            {
                "name": name,
                "uscc": uscc,
                "recycler_filing_no": f"BA-2024-{phone[-4:]}",
                "address": "某路1号",
                "city_code": city,
            },
            status=201,
        )
        await call("POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)
        firms[phone] = firm["id"]
    seller, buyer = await login(A_OWNER), await login(B_OWNER)  # fresh tokens carry the firm role

    # A's intake: its collector settles a pickup of 5,000 kg of steel
    await call("POST", "/v1/me/identity", resident, {"real_name": "张三", "id_number": "11010519491231002X"})
    await call("POST", "/v1/me/consents", resident, {"kind": "reverse_invoicing"}, status=201)
    col = await call(
        "POST",
        "/v1/collectors",
        await login(COLLECTOR),
        {
            "real_name": "王五",
            "id_number": "44030519900101123X",
            "firm_id": firms[A_OWNER],
            "area": {"lat": HOME[0], "lng": HOME[1], "radius_km": 8},
            "categories": ["metal.steel"],
        },
        status=201,
    )
    await call("POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)
    collector = await login(COLLECTOR)
    pid = (
        await call(
            "POST",
            "/v1/pickups",
            resident,
            booking_body(items=[{"category": "metal.steel", "est_qty": "5000"}]),
            status=201,
        )
    )["id"]
    await call("POST", f"/v1/jobs/{pid}/accept", collector)
    await call("POST", f"/v1/pickups/{pid}/arrive", collector)
    await call(
        "POST", f"/v1/pickups/{pid}/weigh", collector, {"lines": [{"category": "metal.steel", "qty": "5000"}]}
    )
    await call("POST", f"/v1/pickups/{pid}/settle", resident)

    # A lists 4.8 t; 1 t more does not fit its intake
    ends_at = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    lot_body = {
        "category": "metal.steel",
        "grade": "重废 HMS1",
        "qty_t": "4.800",
        "city_code": "110105",
        "reserve_price_fen_per_t": 250_000,
        "auction": "ascending",
        "min_increment_fen_per_t": 1000,
        "deposit_fen": 50_000,
        "ends_at": ends_at,
    }
    lot = (await call("POST", "/v1/lots", seller, lot_body, status=201))["id"]
    refused = await call("POST", "/v1/lots", seller, lot_body | {"qty_t": "1"}, status=422)
    assert refused["reason"] == "exceeds_intake" and refused["available_t"] == "0.200"

    # B pays the deposit with a test card, then bids
    pay = (await call("POST", f"/v1/lots/{lot}/deposit", buyer, {}, status=202))["payment_id"]
    await call("POST", f"/v1/payments/intents/{pay}/confirm", buyer, {"payment_method": "pm_card_visa"})
    assert (await call("GET", f"/v1/lots/{lot}/deposit", buyer))["status"] == "held"
    bid = await call("POST", f"/v1/lots/{lot}/bids", buyer, {"price_fen_per_t": 262_000}, status=201)
    assert bid["extended"] is True  # in the last two minutes
    assert (await call("POST", f"/v1/lots/{lot}/bids", seller, {"price_fen_per_t": 300_000}, status=422))[
        "reason"
    ] == "own_lot"

    # the closing job at the (extended) end
    assert run_due(platform["trading"], datetime.now(UTC) + timedelta(minutes=10)) == {
        "awarded": 1,
        "unsold": 0,
    }
    platform.drain()
    trade = (await call("GET", f"/v1/lots/{lot}", buyer))["trade_id"]

    # delivery on the weighbridge ticket, B pays, the trade settles
    out = await call(
        "POST",
        f"/v1/trades/{trade}/delivery",
        seller,
        {"weighbridge_ticket_no": "BJ-2026-000123", "delivered_qty_t": "4.860"},
    )
    assert (
        out["status"] == "delivered" and out["amount_fen"] == 1_273_320 and out["delivery"]["fee_fen"] == 6367
    )
    await call("POST", f"/v1/payments/intents/hr_{trade}/confirm", buyer, {"payment_method": "pm_card_visa"})
    view = await call("GET", f"/v1/trades/{trade}", seller)
    assert view["status"] == "settled", view
    assert view["settlement"]["seller_receives_fen"] == 1_273_320 - 6367
    assert (await call("GET", f"/v1/lots/{lot}/deposit", buyer))["status"] == "released"

    # the trace links the lot to the pickup that fed it
    tr = await call("GET", f"/v1/lots/{lot}/trace", buyer)
    assert [(x["pickup_id"], x["pickup_qty_t"], x["used_qty_t"]) for x in tr["intake"]] == [
        (pid, "5.000", "4.800")
    ]
    assert tr["reconciliation"] | {} == {
        "lot_qty_t": "4.800",
        "from_intake_t": "4.800",
        "from_purchase_t": "0.000",
        "delivered_qty_t": "4.860",
        "covered": True,
        "delivery_within_tolerance_or_accepted": True,
        "reconciles": True,
    }
    # and the price index took the trade as a tier-1 transaction
    with platform["pricing"].db.session() as s:
        row = s.execute(select(observations).where(observations.c.source_ref == trade)).one()
    assert (row.tier, row.unit_price_fen, row.qty_milli, row.related_party) == (
        "transaction",
        262,
        4_860_000,
        False,
    )
    platform.stop()


async def test_walkthrough_embedded(aiohttp_client, tmp_path):
    await walkthrough(
        aiohttp_client,
        Settings(
            env="dev",
            data_dir=tmp_path,
            jwt_secret="walk-secret-" + "x" * 32,
            pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
            admin_phones=ADMIN,
        ),
    )


@pytest.mark.postgres
async def test_walkthrough_postgres(aiohttp_client, pg_settings):
    await walkthrough(aiohttp_client, pg_settings.model_copy(update={"env": "dev", "admin_phones": ADMIN}))
