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


class TradeDefaulted(_TradeEvent):
    type = "cn.recycle.trading.trade.defaulted.v1"
    doc = (
        "The buyer defaulted (违约): it did not answer the delivered weight or pay by the deadline "
        "(`payment_overdue`, the deadline job), or did not come to load and the seller (or an admin) declared it. "
        "Its deposit, `deposit_forfeited_fen` (0 when it held none), is captured for the seller less the fee; the "
        "lot goes to the next-best bid (TradeOffered) or back to the seller (LotReturned)."
    )
    round: int
    reason: str  # payment_overdue | declared_by_seller | declared_by_admin
    price_fen_per_t: int
    deposit_forfeited_fen: int
    defaulted_at: datetime


class TradeOffered(_TradeEvent):
    type = "cn.recycle.trading.trade.offered.v1"
    doc = (
        "A second-chance offer after a default: the lot is offered to the next-best bidder (`buyer_firm_id`) at its "
        "own bid until `offer_expires_at`; accepting makes a TradeAwarded of this trade."
    )
    round: int
    qty_t: str
    price_fen_per_t: int
    offered_at: datetime
    offer_expires_at: datetime


class TradeOfferEnded(_TradeEvent):
    type = "cn.recycle.trading.trade.offer_ended.v1"
    doc = "A second-chance offer was declined or not answered in time (`outcome`: declined | lapsed)."
    round: int
    outcome: str  # declined | lapsed
    ended_at: datetime


# --- lots (topic `trading.lot`, key = lot id): the lots board and its live best bids ----------------------------


class _LotEvent(Event):
    topic = "trading.lot"
    key_field = "lot_id"
    source = "/trading"
    lot_id: str


class LotListed(_LotEvent):
    type = "cn.recycle.trading.lot.listed.v1"
    doc = "A verified firm put a lot up for auction (sealed or ascending) until `ends_at`."
    seller_firm_id: str
    category: str
    grade: str
    qty_t: str
    city_code: str
    auction: str  # sealed | ascending
    reserve_price_fen_per_t: int
    min_increment_fen_per_t: int | None = None
    deposit_fen: int = 0
    source_kind: str  # intake | purchase
    ends_at: datetime
    listed_at: datetime


class LotBestBidChanged(_LotEvent):
    type = "cn.recycle.trading.lot.best_bid_changed.v1"
    doc = (
        "Ascending lots only (sealed bids stay hidden until the close): a new best bid, and the lot's end time "
        "after it (moved later when the bid came in the last minutes). The bidder is not named."
    )
    price_fen_per_t: int
    bid_count: int
    ends_at: datetime
    extended: bool
    placed_at: datetime


class LotClosed(_LotEvent):
    type = "cn.recycle.trading.lot.closed.v1"
    doc = (
        "The lot closed at its end time: `awarded` (with the trade) or `unsold` (no bid at or above reserve)."
    )
    status: str  # awarded | unsold
    trade_id: str | None = None
    price_fen_per_t: int | None = None
    bid_count: int
    closed_at: datetime


class LotReturned(_LotEvent):
    type = "cn.recycle.trading.lot.returned.v1"
    doc = (
        "After a default, no bidder at or above reserve was left to take the lot (or each declined): it is back with "
        "the seller, its intake free to be listed again."
    )
    seller_firm_id: str
    reason: str  # buyer_default
    returned_at: datetime
