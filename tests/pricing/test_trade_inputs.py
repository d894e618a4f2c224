"""Settled B2B lot trades (trading.trade settled) as tier-1 price inputs; trades between related firms are kept,
flagged, and never counted."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from services.bootstrap import Platform
from services.contracts.trading import TradeSettled
from services.pricing.store import observations

from .support import CITY, at, day_ago, publish


def _settled(
    trade_id: str,
    *,
    related: bool = False,
    price: int = 262_400,
    delivered: str = "20.380",
    category: str = "metal.steel",
) -> TradeSettled:
    return TradeSettled(
        trade_id=trade_id,
        lot_id="lot_" + trade_id,
        seller_firm_id="fm_s",
        buyer_firm_id="fm_b",
        category=category,
        grade="HMS1",
        city_code=CITY,
        related_party=related,
        delivered_t=delivered,
        price_fen_per_t=price,
        amount_fen=5_347_712,
        fee_fen=26_739,
        settled_at=at(day_ago(1)),
    )


def test_settled_trades_become_transactions(sqlite_settings):
    platform = Platform(sqlite_settings, services=["pricing"]).prepare()
    t1, t2 = _settled("tr_1"), _settled("tr_2", related=True, price=300_000)
    publish(platform, t1, t2, t1)  # the first one twice (a redelivery with a new event id)
    publish(platform, _settled("tr_3", category="appliance.fridge"))  # counted in pieces: not a price per kg
    with platform["pricing"].db.session() as s:
        rows = s.execute(
            select(observations)
            .where(observations.c.source == "trading.trade")
            .order_by(observations.c.source_ref)
        ).all()
    assert [(r.source_ref, r.tier, r.kind, r.unit_price_fen, r.qty_milli, r.related_party) for r in rows] == [
        ("tr_1", "transaction", "trade", 262, 20_380_000, False),  # 262.4 fen per kg, 20,380 kg
        ("tr_2", "transaction", "trade", 300, 20_380_000, True),
    ]
    assert all(r.observed_at.replace(tzinfo=UTC) <= datetime.now(UTC) for r in rows)
    platform.stop()


async def test_the_admin_sees_a_days_inputs_before_it_is_computed(aiohttp_client, sqlite_settings):
    """GET /v1/admin/prices/inputs: today's settled trade is there at once (the day is computed only tomorrow),
    with its tier and source and no contributor; filters and paging; admins only; bad input names the field."""
    from .support import admin, app_client, firm

    platform, client = await app_client(aiohttp_client, sqlite_settings)
    now = datetime.now(UTC)
    publish(platform, _settled("tr_a").model_copy(update={"settled_at": now}))
    publish(platform, _settled("tr_b", price=250_000).model_copy(update={"settled_at": now}))
    day = queries_day(now)
    r = await client.get(
        "/v1/admin/prices/inputs",
        params={"date": day, "category": "metal.steel", "tier": "transaction", "limit": "1"},
        headers=admin(sqlite_settings),
    )
    assert r.status == 200, await r.text()
    page = await r.json()
    (item,) = page["items"]
    assert {
        k: item[k] for k in ("category", "city_code", "tier", "kind", "unit_price_fen", "qty", "source")
    } == {
        "category": "metal.steel",
        "city_code": CITY,
        "tier": "transaction",
        "kind": "trade",
        "unit_price_fen": 262,
        "qty": "20380.000",
        "source": "trading.trade",
    }
    assert "counterparty" not in item and "fm_b" not in str(page)
    r = await client.get(
        "/v1/admin/prices/inputs",
        params={"date": day, "limit": "1", "cursor": page["next_cursor"]},
        headers=admin(sqlite_settings),
    )
    nxt = await r.json()
    assert [i["unit_price_fen"] for i in nxt["items"]] == [250] and nxt["next_cursor"] is None
    other = await client.get(
        "/v1/admin/prices/inputs", params={"date": day, "city_code": "310101"}, headers=admin(sqlite_settings)
    )
    assert (await other.json())["items"] == []
    assert (
        await client.get(
            "/v1/admin/prices/inputs", params={"date": day}, headers=firm(sqlite_settings, "fm_b")
        )
    ).status == 403
    for params, field in (
        ({"date": "today"}, "date"),
        ({"date": day, "category": "metal.gold"}, "category"),
        ({"date": day, "cursor": "x"}, "cursor"),
    ):
        r = await client.get("/v1/admin/prices/inputs", params=params, headers=admin(sqlite_settings))
        assert r.status == 400 and field in {e["field"] for e in (await r.json())["errors"]}, (
            params,
            r.status,
        )
    platform.stop()


def queries_day(t: datetime) -> str:
    """The day an input belongs to: its calendar day in the methodology's zone (Asia/Shanghai)."""
    from zoneinfo import ZoneInfo

    return t.astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
