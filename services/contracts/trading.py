"""Events the trading service publishes about B2B scrap-lot trades (topic `trading.trade`, key = trade id).

Quantities travel as decimal strings in tonnes with 3 places (kilogram precision); money in fen. `city_code` is the
lot's GB/T 2260 code, where the scrap lies.
"""

from __future__ import annotations

from datetime import datetime

from services.kernel.events import Event


class _TradeEvent(Event):
    topic = "trading.trade"
    key_field = "trade_id"
    source = "/trading"
    trade_id: str
    lot_id: str
    seller_firm_id: str
    buyer_firm_id: str
    category: str
    grade: str
    city_code: str
    related_party: bool  # seller and buyer are related firms: kept out of the price index


class TradeAwarded(_TradeEvent):
    type = "cn.recycle.trading.trade.awarded.v1"
    doc = "An auction closed with a winner: the lot is sold at `price_fen_per_t` for `qty_t` (the listed tonnage)."
    qty_t: str
    price_fen_per_t: int
    awarded_at: datetime


class TradeSettled(_TradeEvent):
    type = "cn.recycle.trading.trade.settled.v1"
    doc = (
        "The buyer paid on the weighbridge weight and the seller was paid less the fee: a tier-1 transaction for "
        "the price index and the delivered flow for statistics."
    )
    delivered_t: str
    price_fen_per_t: int
    amount_fen: int
    fee_fen: int
    settled_at: datetime
