"""After the award: weighbridge delivery, the buyer's acceptance or dispute, and the chain of custody."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.kernel.auth import Principal, issue_token
from services.trading.closing import run_due

from .support import admin_auth, app_client, firm_auth, firm_events, lot_body, publish, settled_intake


async def _awarded(aiohttp_client, settings, qty_t="20.000", price=260_000):
    platform, client = await app_client(aiohttp_client, settings)
    publish(
        platform,
        *firm_events("fm_seller"),
        *firm_events("fm_buyer"),
        *firm_events("fm_other"),
        settled_intake("fm_seller", "12000", pickup_id="pk_old", when=datetime.now(UTC) - timedelta(days=3)),
        settled_intake(
            "fm_seller", "15000.5", pickup_id="pk_new", when=datetime.now(UTC) - timedelta(days=1)
        ),
        settled_intake("fm_seller", "500", pickup_id="pk_paper", category="paper.cardboard"),
    )
    seller, buyer = firm_auth(settings, "fm_seller"), firm_auth(settings, "fm_buyer")
    lot_id = (await (await client.post("/v1/lots", json=lot_body(qty_t=qty_t), headers=seller)).json())["id"]
    assert (
        await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": price}, headers=buyer)
    ).status == 201
    run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2))
    lot = await (await client.get(f"/v1/lots/{lot_id}", headers=buyer)).json()
    return platform, client, lot_id, lot["trade_id"], seller, buyer


async def test_delivery_within_tolerance_goes_to_payment(aiohttp_client, sqlite_settings):
    platform, client, lot_id, trade_id, seller, buyer = await _awarded(aiohttp_client, sqlite_settings)
    body = {"weighbridge_ticket_no": "BJ-2026-000123", "delivered_qty_t": "20.380"}  # +1.9 %
    r = await client.post(f"/v1/trades/{trade_id}/delivery", json=body, headers=buyer)
    assert r.status == 403
    r = await client.post(f"/v1/trades/{trade_id}/delivery", json=body, headers=seller)
    out = await r.json()
    assert r.status == 200, out
    assert out["amount_fen"] == 260_000 * 20380 // 1000 == 5_298_800
    assert out["delivery"]["within_tolerance"] is True and out["delivery"]["acceptance"] == "not_required"
    assert out["delivery"]["fee_fen"] == 26_494  # 0.5 %
    assert out["status"] == "delivered" and out["settlement"]["payment_id"] == f"hr_{trade_id}"
    assert out["settlement"]["payment_status"] == "requested"
    # the same ticket again changes nothing; accepting a delivery that needs none is a conflict
    again = await client.post(f"/v1/trades/{trade_id}/delivery", json=body, headers=seller)
    assert (
        again.status == 200
        and (await again.json())["delivery"]["weighbridge_ticket_no"] == body["weighbridge_ticket_no"]
    )
    r = await client.post(f"/v1/trades/{trade_id}/accept-delivery", headers=buyer)
    assert r.status == 409


async def test_weighbridge_weight_far_off_the_lot_is_refused_and_nothing_is_written(
    aiohttp_client, sqlite_settings
):
    """A ticket that cannot be a weighing of the lot (1,000 t for 20 t; "1e3" read as 1,000 t) is a 4xx naming
    the field, never an amount the buyer is asked to accept, nor a 500 when the amount would overflow."""
    platform, client, lot_id, trade_id, seller, buyer = await _awarded(
        aiohttp_client, sqlite_settings, price=10**12
    )
    url = f"/v1/trades/{trade_id}/delivery"
    for qty in ("1e3", "2E1", "1_000", "+20", " 20 "):
        r = await client.post(
            url, json={"weighbridge_ticket_no": "T-1", "delivered_qty_t": qty}, headers=seller
        )
        out = await r.json()
        assert r.status == 400 and out["errors"][0]["field"] == "delivered_qty_t", (qty, out)
    for qty in ("1000", "999999999", "30.001", "9.999", "0.001"):
        r = await client.post(
            url, json={"weighbridge_ticket_no": "T-1", "delivered_qty_t": qty}, headers=seller
        )
        out = await r.json()
        assert r.status == 422, (qty, out)
        assert out["reason"] == "delivery_out_of_range" and out["errors"][0]["field"] == "delivered_qty_t"
        assert (out["min_qty_t"], out["max_qty_t"]) == ("10.000", "30.000")
    trade = await (await client.get(f"/v1/trades/{trade_id}", headers=buyer)).json()
    assert trade["status"] == "awarded" and trade["delivery"] is None and trade["settlement"] is None
    # the ends of the range (±50 % by default) are deliveries: the buyer accepts or disputes them
    r = await client.post(
        url, json={"weighbridge_ticket_no": "T-2", "delivered_qty_t": "30.000"}, headers=seller
    )
    out = await r.json()
    assert r.status == 200 and out["delivery"]["acceptance"] == "pending", out
    assert out["amount_fen"] == 30 * 10**12


async def test_a_weighbridge_ticket_weighs_one_lot_of_its_seller(aiohttp_client, sqlite_settings):
    """The seller's ticket that weighed one lot's delivery cannot weigh another lot's (422 `ticket_used`, nothing
    recorded); another seller's ticket of the same number is its own."""
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    publish(
        platform,
        *(e for f in ("fm_seller", "fm_buyer", "fm_other") for e in firm_events(f)),
        settled_intake("fm_seller", "20000"),
    )
    seller, buyer, other = (firm_auth(sqlite_settings, f) for f in ("fm_seller", "fm_buyer", "fm_other"))
    lots = []
    for who, body in (
        (seller, lot_body(qty_t="10")),
        (seller, lot_body(qty_t="10")),
        (other, lot_body(qty_t="10", source="purchase", purchase_ref="合同 7")),
    ):
        lot_id = (await (await client.post("/v1/lots", json=body, headers=who)).json())["id"]
        r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 260_000}, headers=buyer)
        assert r.status == 201
        lots.append(lot_id)
    run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2))
    first, second, others = [
        (await (await client.get(f"/v1/lots/{lot_id}", headers=buyer)).json())["trade_id"] for lot_id in lots
    ]
    ticket = {"weighbridge_ticket_no": "BJ-2026-000123", "delivered_qty_t": "10.000"}
    assert (await client.post(f"/v1/trades/{first}/delivery", json=ticket, headers=seller)).status == 200
    r = await client.post(f"/v1/trades/{second}/delivery", json=ticket, headers=seller)
    out = await r.json()
    assert r.status == 422 and out["reason"] == "ticket_used" and out["trade_id"] == first, out
    assert out["errors"][0]["field"] == "weighbridge_ticket_no"
    trade = await (await client.get(f"/v1/trades/{second}", headers=seller)).json()
    assert trade["status"] == "awarded" and trade["delivery"] is None
    r = await client.post(
        f"/v1/trades/{second}/delivery",
        json={**ticket, "weighbridge_ticket_no": "BJ-2026-000124"},
        headers=seller,
    )
    assert r.status == 200
    assert (await client.post(f"/v1/trades/{others}/delivery", json=ticket, headers=other)).status == 200
    # the same ticket on its own trade again changes nothing
    assert (await client.post(f"/v1/trades/{first}/delivery", json=ticket, headers=seller)).status == 200


async def test_only_the_owners_move_a_trade_its_members_read_it(aiohttp_client, sqlite_settings):
    """A firm's accountant (or collector) who also owns a verified firm holds the firm role, but recording the
    weight, accepting or disputing it, and declaring a default commit the firm: its owner's, as listing and bidding
    are. Such a member may even work for both sides of the trade."""
    platform, client, lot_id, trade_id, seller, buyer = await _awarded(aiohttp_client, sqlite_settings)
    both = Principal(
        "u_bookkeeper",
        frozenset({"firm", "accountant"}),
        frozenset({"fm_own", "fm_seller", "fm_buyer"}),
        frozenset({("fm_own", "owner"), ("fm_seller", "accountant"), ("fm_buyer", "accountant")}),
    )
    member = {"Authorization": "Bearer " + issue_token(sqlite_settings, both)}
    assert (await client.get(f"/v1/trades/{trade_id}", headers=member)).status == 200
    assert (await client.get(f"/v1/lots/{lot_id}/trace", headers=member)).status == 200
    body = {"weighbridge_ticket_no": "T-9", "delivered_qty_t": "25.000"}  # +25 %: the buyer answers
    steps = [
        ("delivery", body),
        ("declare-default", {"reason": "买方逾期未提货"}),
    ]
    for step, json in steps:
        r = await client.post(f"/v1/trades/{trade_id}/{step}", json=json, headers=member)
        assert r.status == 403 and (await r.json())["reason"] == "not_party", step
    assert (await client.post(f"/v1/trades/{trade_id}/delivery", json=body, headers=seller)).status == 200
    for step, json in (("accept-delivery", None), ("dispute-delivery", {"reason": "过磅重量不符"})):
        r = await client.post(f"/v1/trades/{trade_id}/{step}", json=json, headers=member)
        assert r.status == 403 and (await r.json())["reason"] == "not_party", step
    trade = await (await client.get(f"/v1/trades/{trade_id}", headers=buyer)).json()
    assert trade["delivery"]["acceptance"] == "pending" and trade["settlement"] is None
    r = await client.post(f"/v1/trades/{trade_id}/accept-delivery", headers=buyer)
    assert r.status == 200 and (await r.json())["delivery"]["acceptance"] == "accepted"


async def test_outside_tolerance_needs_acceptance_or_is_disputed(aiohttp_client, sqlite_settings):
    platform, client, lot_id, trade_id, seller, buyer = await _awarded(aiohttp_client, sqlite_settings)
    body = {"weighbridge_ticket_no": "T-1", "delivered_qty_t": "19.500"}  # −2.5 %
    out = await (await client.post(f"/v1/trades/{trade_id}/delivery", json=body, headers=seller)).json()
    assert out["status"] == "delivered" and out["delivery"]["acceptance"] == "pending"
    assert out["delivery"]["deviation_pct"] == "-2.50" and out["amount_fen"] == 5_070_000
    r = await client.post(f"/v1/trades/{trade_id}/accept-delivery", headers=seller)
    assert r.status == 403
    r = await client.post(
        f"/v1/trades/{trade_id}/dispute-delivery", json={"reason": "磅单与我方过磅不符"}, headers=buyer
    )
    assert r.status == 200 and (await r.json())["status"] == "disputed"
    # the seller weighs again; the buyer accepts the new ticket
    body = {"weighbridge_ticket_no": "T-2", "delivered_qty_t": "19.520"}
    out = await (await client.post(f"/v1/trades/{trade_id}/delivery", json=body, headers=seller)).json()
    assert out["delivery"]["acceptance"] == "pending" and out["delivery"]["weighbridge_ticket_no"] == "T-2"
    r = await client.post(f"/v1/trades/{trade_id}/accept-delivery", headers=buyer)
    out = await r.json()
    assert r.status == 200 and out["status"] == "delivered" and out["delivery"]["acceptance"] == "accepted"
    assert out["settlement"]["payment_status"] == "requested"
    r = await client.post(
        f"/v1/trades/{trade_id}/delivery",
        json={"weighbridge_ticket_no": "T-3", "delivered_qty_t": "20"},
        headers=seller,
    )
    assert r.status == 409 and (await r.json())["current_state"] == "delivered"


async def test_trace_links_lot_to_the_pickups_that_fed_it(aiohttp_client, sqlite_settings):
    platform, client, lot_id, trade_id, seller, buyer = await _awarded(aiohttp_client, sqlite_settings)
    await client.post(
        f"/v1/trades/{trade_id}/delivery",
        json={"weighbridge_ticket_no": "T-9", "delivered_qty_t": "20.100"},
        headers=seller,
    )
    r = await client.get(f"/v1/lots/{lot_id}/trace", headers=buyer)
    tr = await r.json()
    assert r.status == 200, tr
    # oldest intake first: all 12 t of pk_old, then 8 t of pk_new; the paper pickup is another category
    assert [(x["pickup_id"], x["used_qty_t"], x["pickup_qty_t"]) for x in tr["intake"]] == [
        ("pk_old", "12.000", "12.000"),
        ("pk_new", "8.000", "15.000500"),
    ]
    rec = tr["reconciliation"]
    assert rec == {
        "lot_qty_t": "20.000",
        "from_intake_t": "20.000",
        "from_purchase_t": "0.000",
        "delivered_qty_t": "20.100",
        "covered": True,
        "delivery_within_tolerance_or_accepted": True,
        "reconciles": True,
    }
    assert tr["trade"]["id"] == trade_id and tr["delivery"]["weighbridge_ticket_no"] == "T-9"
    assert (
        await client.get(f"/v1/lots/{lot_id}/trace", headers=firm_auth(sqlite_settings, "fm_other"))
    ).status == 403
    assert (await client.get(f"/v1/lots/{lot_id}/trace", headers=admin_auth(sqlite_settings))).status == 200
    # each side lists the trade; a third firm sees none
    for h in (seller, buyer):
        page = await (await client.get("/v1/trades?status=delivered", headers=h)).json()
        assert [t["id"] for t in page["items"]] == [trade_id]
    other = await (await client.get("/v1/trades", headers=firm_auth(sqlite_settings, "fm_other"))).json()
    assert other["items"] == []
    assert (
        await client.get(f"/v1/trades/{trade_id}", headers=firm_auth(sqlite_settings, "fm_other"))
    ).status == 403
    # what is left of the intake: 7.0005 t of steel; a second lot of 7.001 t does not fit, 7 t does
    r = await client.post("/v1/lots", json=lot_body(qty_t="7.001"), headers=seller)
    assert r.status == 422 and (await r.json())["available_t"] == "7.000"
    assert (await client.post("/v1/lots", json=lot_body(qty_t="7"), headers=seller)).status == 201


async def test_unsold_lot_gives_its_intake_back(aiohttp_client, sqlite_settings):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    publish(platform, *firm_events("fm_seller"), settled_intake("fm_seller", "10000", pickup_id="pk_1"))
    seller = firm_auth(sqlite_settings, "fm_seller")
    lot_id = (await (await client.post("/v1/lots", json=lot_body(qty_t="10"), headers=seller)).json())["id"]
    assert (await client.post("/v1/lots", json=lot_body(qty_t="1"), headers=seller)).status == 422
    assert run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2)) == {"awarded": 0, "unsold": 1}
    tr = await (await client.get(f"/v1/lots/{lot_id}/trace", headers=seller)).json()
    assert tr["lot"]["status"] == "unsold" and tr["intake"][0]["released"] is True and tr["trade"] is None
    assert (await client.post("/v1/lots", json=lot_body(qty_t="10"), headers=seller)).status == 201
