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
