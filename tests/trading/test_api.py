"""Lots and bids through the public API (gateway in-process, trading on SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.kernel.outbox import outbox_t
from services.trading.closing import run_due

from .support import admin_auth, app_client, firm_auth, firm_events, lot_body, publish, settled_intake


async def _market(aiohttp_client, settings, **cfg):
    platform, client = await app_client(aiohttp_client, settings, **cfg)
    publish(
        platform,
        *firm_events("fm_seller"),
        *firm_events("fm_a"),
        *firm_events("fm_b"),
        settled_intake("fm_seller", "30000"),
    )
    return platform, client


async def test_list_bid_close_award(aiohttp_client, sqlite_settings):
    platform, client = await _market(aiohttp_client, sqlite_settings)
    seller, a, b = (firm_auth(sqlite_settings, f) for f in ("fm_seller", "fm_a", "fm_b"))
    r = await client.post("/v1/lots", json=lot_body(), headers=seller)
    assert r.status == 201, await r.text()
    lot = await r.json()
    assert lot["status"] == "open"
    lot_id = lot["id"]

    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 249_000}, headers=a)
    assert r.status == 422 and (await r.json())["reason"] == "below_reserve"
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 250_000}, headers=a)
    assert r.status == 201, await r.text()
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 250_500}, headers=b)
    problem = await r.json()
    assert r.status == 422 and problem["reason"] == "below_best_plus_increment"
    assert problem["min_price_fen_per_t"] == 251_000 and problem["errors"][0]["field"] == "price_fen_per_t"
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 251_000}, headers=b)
    assert r.status == 201
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 300_000}, headers=seller)
    assert r.status == 422 and (await r.json())["reason"] == "own_lot"

    view = await (await client.get(f"/v1/lots/{lot_id}", headers=a)).json()
    assert view["best_price_fen_per_t"] == 251_000 and view["bid_count"] == 2
    assert view["next_min_price_fen_per_t"] == 252_000

    assert run_due(platform["trading"], datetime.now(UTC)) == {"awarded": 0, "unsold": 0}  # not due yet
    after = datetime.now(UTC) + timedelta(hours=2)
    assert run_due(platform["trading"], after) == {"awarded": 1, "unsold": 0}
    assert run_due(platform["trading"], after) == {"awarded": 0, "unsold": 0}  # never twice
    view = await (await client.get(f"/v1/lots/{lot_id}", headers=a)).json()
    assert view["status"] == "awarded" and view["trade_id"]
    with platform["trading"].db.session() as s:
        types = list(s.execute(select(outbox_t.c.type)).scalars())
    assert types.count("cn.recycle.trading.trade.awarded.v1") == 1
    assert types.count("cn.recycle.trading.lot.closed.v1") == 1

    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 400_000}, headers=a)
    closed = await r.json()
    assert r.status == 422 and closed["reason"] == "lot_closed" and closed["current_state"] == "awarded"


async def test_sealed_bids_hidden_until_close(aiohttp_client, sqlite_settings):
    platform, client = await _market(aiohttp_client, sqlite_settings)
    seller, a, b = (firm_auth(sqlite_settings, f) for f in ("fm_seller", "fm_a", "fm_b"))
    body = lot_body(auction="sealed")
    body.pop("min_increment_fen_per_t")
    lot_id = (await (await client.post("/v1/lots", json=body, headers=seller)).json())["id"]
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 200_000}, headers=a)
    assert r.status == 201 and (await r.json())["below_reserve"] is True  # accepted, cannot win
    for h, p in ((a, 260_000), (b, 260_000)):
        assert (
            await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": p}, headers=h)
        ).status == 201
    # neither the price nor how many bids (the seller's view, the board's and a bidder's alike)
    for h in (seller, b):
        view = await (await client.get(f"/v1/lots/{lot_id}", headers=h)).json()
        assert view["best_price_fen_per_t"] is None and view["bid_count"] is None
        [listed] = (await (await client.get("/v1/lots?status=open", headers=h)).json())["items"]
        assert listed["best_price_fen_per_t"] is None and listed["bid_count"] is None
    assert [x["price_fen_per_t"] for x in view["your_bids"]] == [260_000]
    run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2))
    view = await (await client.get(f"/v1/lots/{lot_id}", headers=b)).json()
    assert view["status"] == "awarded" and view["best_price_fen_per_t"] == 260_000 and view["bid_count"] == 3


async def test_lot_refusals(aiohttp_client, sqlite_settings):
    platform, client = await _market(aiohttp_client, sqlite_settings)
    seller = firm_auth(sqlite_settings, "fm_seller")
    r = await client.post("/v1/lots", json=lot_body(qty_t="30000.001"), headers=seller)
    assert r.status == 422 and (await r.json())["reason"] == "exceeds_intake"
    r = await client.post("/v1/lots", json=lot_body(qty_t="1.2345"), headers=seller)
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "qty_t"
    r = await client.post("/v1/lots", json=lot_body(source="purchase"), headers=seller)
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "purchase_ref"
    r = await client.post(
        "/v1/lots",
        json=lot_body(source="purchase", purchase_ref="合同 2026-001", qty_t="99999"),
        headers=seller,
    )
    assert r.status == 201
    r = await client.post("/v1/lots", json=lot_body(ends_at="2026-01-01T00:00:00"), headers=seller)
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "ends_at"
    r = await client.post("/v1/lots", json=lot_body(), headers=firm_auth(sqlite_settings, "fm_unknown"))
    assert r.status == 403 and (await r.json())["reason"] == "firm_unverified"
    r = await client.post("/v1/lots", json=lot_body(), headers=admin_auth(sqlite_settings))
    assert r.status == 403
    # 20 t of the 30 t intake listed twice: the second does not fit
    assert (await client.post("/v1/lots", json=lot_body(qty_t="20"), headers=seller)).status == 201
    r = await client.post("/v1/lots", json=lot_body(qty_t="20"), headers=seller)
    assert r.status == 422 and (await r.json())["available_t"] == "10.000"


async def test_lot_shape_errors_name_the_field(aiohttp_client, sqlite_settings):
    """A tonnage is plain digits (Decimal() alone reads "1e3" as 1,000 t), and the checks across fields name the
    field to fix, not the body."""
    platform, client = await _market(aiohttp_client, sqlite_settings)
    seller = firm_auth(sqlite_settings, "fm_seller")

    async def field_of(**over):
        r = await client.post("/v1/lots", json=lot_body(**over), headers=seller)
        out = await r.json()
        assert r.status == 400, out
        return [e["field"] for e in out["errors"]]

    for qty in ("1e1", "1E1", "1_0", "+10", " 10 ", "10."):
        assert await field_of(qty_t=qty) == ["qty_t"], qty
    for ends_at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # no UTC time (was a 500)
        assert await field_of(ends_at=ends_at) == ["ends_at"], ends_at
    assert await field_of(auction="sealed", min_increment_fen_per_t=100) == ["min_increment_fen_per_t"]
    assert await field_of(source="purchase") == ["purchase_ref"]
    assert await field_of(source="purchase", purchase_ref=None) == ["purchase_ref"]
    assert await field_of(purchase_ref="合同 1") == ["purchase_ref"]
    assert await field_of(source="intake", purchase_ref="合同 1") == ["purchase_ref"]
    # nothing was listed
    assert (await (await client.get("/v1/lots", headers=seller)).json())["items"] == []
    assert (await client.post("/v1/lots", json=lot_body(qty_t="10"), headers=seller)).status == 201


async def test_related_firm_cannot_bid(aiohttp_client, sqlite_settings):
    platform, client = await _market(aiohttp_client, sqlite_settings)
    # the owner of fm_rel also acts for the seller
    publish(platform, *firm_events("fm_rel", also_acts_for=("fm_seller",)))
    lot_id = (
        await (
            await client.post("/v1/lots", json=lot_body(), headers=firm_auth(sqlite_settings, "fm_seller"))
        ).json()
    )["id"]
    r = await client.post(
        f"/v1/lots/{lot_id}/bids",
        json={"price_fen_per_t": 260_000},
        headers=firm_auth(sqlite_settings, "fm_rel"),
    )
    assert r.status == 422 and (await r.json())["reason"] == "related_firm"
