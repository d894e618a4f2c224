"""Trading routes: parse → handler (in a thread) → reply. Paths and field names follow shared/API.md (Trading)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from services.kernel import live_feed
from services.kernel.http import Ctx, Router

from . import defaults, deposits, handlers, trades
from .domain.commands import (
    DeclareDefault,
    DisputeDelivery,
    ListLot,
    LotsQuery,
    PlaceBid,
    RecordDelivery,
    RequestDeposit,
    TradesQuery,
)
from .feed import Listener, feed_of

router = Router("trading")
HEARTBEAT_S = 15.0
FIRM = {"firm"}


class LotCreated(BaseModel):
    id: str
    status: str
    ends_at: str


class LotOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    seller_firm_id: str
    category: str
    grade: str
    qty_t: str
    city_code: str
    reserve_price_fen_per_t: int
    auction: str
    ends_at: str
    bid_count: int | None  # none for a sealed lot until the close
    best_price_fen_per_t: int | None = None
    trade_id: str | None = None


class LotPage(BaseModel):
    items: list[LotOut]
    next_cursor: str | None


class BidOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    lot_id: str
    firm_id: str
    price_fen_per_t: int
    lot_ends_at: str
    extended: bool


@router.post("/v1/lots", roles=FIRM, body=ListLot, response=LotCreated, status=201, errors=(403, 422))
async def list_lot(ctx: Ctx) -> dict[str, Any]:
    """(verified firm) Put a lot of sorted scrap up for a sealed or ascending auction until `ends_at`."""
    return await ctx.run(handlers.list_lot, ctx.runtime, ctx.user, ctx.body)


@router.replay_of(list_lot)
async def list_lot_replayed(ctx: Ctx, made: str) -> dict[str, Any]:
    return await ctx.run(handlers.listed, ctx.runtime, ctx.user, made)


@router.get("/v1/lots", authenticated=True, query=LotsQuery, response=LotPage)
async def list_lots(ctx: Ctx) -> dict[str, Any]:
    """The lots board, newest first (`?status=open&category=&seller_firm_id=&limit=&cursor=`)."""
    return await ctx.run(handlers.list_lots, ctx.runtime, ctx.query)


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str | None = None
    lot_id: str | None = None


# declared before /v1/lots/{id}, which would otherwise take "stream" for a lot id
@router.get("/v1/lots/stream", authenticated=True, query=StreamQuery, raw=True)
async def lot_stream(ctx: Ctx) -> web.StreamResponse:
    """Live lots board (text/event-stream): lot.listed, lot.best_bid (ascending lots: price, bid count, end time
    after extensions), lot.closed; `?category=` or `?lot_id=` narrows it."""
    q: StreamQuery = ctx.query
    who = Listener(loop=asyncio.get_running_loop(), category=q.category, lot_id=q.lot_id)
    return await live_feed.stream(ctx.request, feed_of(ctx.runtime), who, HEARTBEAT_S)


@router.get(
    "/v1/lots/{id}",
    authenticated=True,
    response=LotOut,
    errors=(404,),
    not_owned="a lot is open to every signed-in bidder",
)
async def get_lot(ctx: Ctx) -> dict[str, Any]:
    """One lot: sealed bids stay hidden until the close, an ascending lot shows its best bid."""
    return await ctx.run(handlers.get_lot, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/lots/{id}/bids",
    roles=FIRM,
    body=PlaceBid,
    response=BidOut,
    status=201,
    errors=(403, 404, 409, 422),
    not_owned="any verified firm bids (the seller's own bid is a rule, 422)",
)
async def place_bid(ctx: Ctx) -> dict[str, Any]:
    """(verified firm, not the seller nor related to it) Bid a price per tonne; 422 `{reason}` when refused."""
    return await handlers.place_bid_async(ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.replay_of(place_bid)
async def place_bid_replayed(ctx: Ctx, made: str) -> dict[str, Any]:
    return await ctx.run(handlers.bid_placed, ctx.runtime, ctx.user, ctx.params["id"], made)


# --- trades -----------------------------------------------------------------------------------------------


class DeliveryOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    amount_fen: int | None
    id: str


class TradeOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    lot_id: str
    status: str
    seller_firm_id: str
    buyer_firm_id: str
    price_fen_per_t: int


class TradePage(BaseModel):
    items: list[TradeOut]
    next_cursor: str | None


@router.get("/v1/trades", authenticated=True, query=TradesQuery, response=TradePage)
async def list_trades(ctx: Ctx) -> dict[str, Any]:
    """The trades of the caller's firms (seller or buyer), newest first (`?status=&limit=&cursor=`); admins: all."""
    return await ctx.run(trades.list_trades, ctx.runtime, ctx.user, ctx.query)


@router.get("/v1/trades/{id}", authenticated=True, response=TradeOut, errors=(403, 404), owner="trade")
async def get_trade(ctx: Ctx) -> dict[str, Any]:
    """One trade: its delivery and settlement (its seller, its buyer, admins)."""
    return await ctx.run(trades.get_trade, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/trades/{id}/delivery",
    roles=FIRM,
    body=RecordDelivery,
    response=DeliveryOut,
    errors=(403, 404, 409, 422),
    owner="trade",
    example={"weighbridge_ticket_no": "WB-2026-0001", "delivered_qty_t": "20.000"},
)
async def record_delivery(ctx: Ctx) -> dict[str, Any]:
    """(seller) The weighbridge ticket: the amount is on the delivered weight; outside the tolerance (default ±2 %)
    the buyer accepts before settlement. A weight more than `max_delivery_deviation_pct` (50 %) off the lot's
    tonnage is refused: 422 `delivery_out_of_range` with `min_qty_t` and `max_qty_t`; a ticket of the seller that
    weighed another of its lots: 422 `ticket_used`."""
    return await ctx.run(trades.record_delivery, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.post(
    "/v1/trades/{id}/accept-delivery", roles=FIRM, response=TradeOut, errors=(403, 404, 409), owner="trade"
)
async def accept_delivery(ctx: Ctx) -> dict[str, Any]:
    """(buyer) Accept a delivered weight outside the tolerance; settlement starts."""
    return await ctx.run(trades.accept_delivery, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/trades/{id}/dispute-delivery",
    roles=FIRM,
    body=DisputeDelivery,
    response=TradeOut,
    errors=(403, 404, 409),
    owner="trade",
    example={"reason": "过磅重量不符"},
)
async def dispute_delivery(ctx: Ctx) -> dict[str, Any]:
    """(buyer) Refuse a delivered weight outside the tolerance; the seller may deliver again."""
    return await ctx.run(trades.dispute_delivery, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.post(
    "/v1/trades/{id}/declare-default",
    roles={"firm", "admin"},
    body=DeclareDefault,
    response=TradeOut,
    errors=(403, 404, 409, 422),
    owner="trade",
    example={"reason": "买方逾期未提货"},
)
async def declare_default(ctx: Ctx) -> dict[str, Any]:
    """(seller, admin) The buyer has not come to load by the collection deadline after the award, or has not
    answered the weight or paid by the payment deadline: its deposit is forfeited to the seller (less the fee) and
    the lot is offered to the next-best bidder, or returned. 422 `deadline_not_passed` (with `deadline_at`)."""
    return await ctx.run(defaults.declare_default, ctx.runtime, ctx.user, ctx.params["id"], ctx.body.reason)


@router.post(
    "/v1/trades/{id}/accept-offer", roles=FIRM, response=TradeOut, errors=(403, 404, 409, 422), owner="trade"
)
async def accept_offer(ctx: Ctx) -> dict[str, Any]:
    """(the firm offered the lot after a default) Take it at your own bid: the trade is awarded to you."""
    return await ctx.run(defaults.answer_offer, ctx.runtime, ctx.user, ctx.params["id"], True)


@router.post(
    "/v1/trades/{id}/decline-offer", roles=FIRM, response=TradeOut, errors=(403, 404, 409, 422), owner="trade"
)
async def decline_offer(ctx: Ctx) -> dict[str, Any]:
    """(the firm offered the lot after a default) Refuse it: the next-best bidder is offered it, or the seller gets
    it back."""
    return await ctx.run(defaults.answer_offer, ctx.runtime, ctx.user, ctx.params["id"], False)


# --- replies rebuilt for a retry whose reply was lost after the commit (services/kernel/idempotency.py) ----------


@router.replays(dispute_delivery, declare_default, accept_offer, decline_offer)
async def trade_as_it_stands(ctx: Ctx) -> dict[str, Any]:
    return await ctx.run(trades.get_trade, ctx.runtime, ctx.user, ctx.params["id"])


@router.replays(record_delivery, accept_delivery)
async def delivery_as_it_stands(ctx: Ctx) -> dict[str, Any]:
    return trades.delivery_reply(await ctx.run(trades.get_trade, ctx.runtime, ctx.user, ctx.params["id"]))


class TraceOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    lot: dict[str, Any]
    intake: list[dict[str, Any]]
    trade: dict[str, Any] | None
    delivery: dict[str, Any] | None
    reconciliation: dict[str, Any]


@router.get("/v1/lots/{id}/trace", authenticated=True, response=TraceOut, errors=(403, 404), owner="lot")
async def lot_trace(ctx: Ctx) -> dict[str, Any]:
    """The chain of custody: the settled pickups (or the declared purchase) that fed the lot → the trade → the
    delivery, with the quantities reconciled (its seller, its buyer, admins)."""
    return await ctx.run(trades.trace, ctx.runtime, ctx.user, ctx.params["id"])


class DepositOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    hold_request_id: str
    payment_id: str
    lot_id: str
    firm_id: str
    amount_fen: int
    status: str


class FirmQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    firm_id: str | None = None


@router.post(
    "/v1/lots/{id}/deposit",
    roles=FIRM,
    body=RequestDeposit,
    response=DepositOut,
    status=202,
    errors=(403, 404, 409, 422),
    not_owned="the lot is open to every bidder; the deposit is the calling firm's own",
)
async def request_deposit(ctx: Ctx) -> dict[str, Any]:
    """(bidding firm) Ask for the lot's deposit hold; pay it with POST /v1/payments/intents/{payment_id}/confirm.
    Once held, the firm may bid; it is given back at the close unless the firm won (then once the trade settles)."""
    return await ctx.run(deposits.request_deposit, ctx.runtime, ctx.user, ctx.params["id"], ctx.body.firm_id)


@router.replay_of(request_deposit)
async def request_deposit_replayed(ctx: Ctx, made: str) -> dict[str, Any]:
    return await ctx.run(
        deposits.deposit_requested, ctx.runtime, ctx.user, ctx.params["id"], ctx.body.firm_id, made
    )


@router.get(
    "/v1/lots/{id}/deposit",
    roles=FIRM,
    query=FirmQuery,
    response=DepositOut,
    errors=(403, 404),
    not_owned="the lot is open to every bidder; the deposit is the calling firm's own",
)
async def get_deposit(ctx: Ctx) -> dict[str, Any]:
    """(bidding firm) The firm's deposit on the lot: requested → opened → held → release_requested → released."""
    return await ctx.run(deposits.get_deposit, ctx.runtime, ctx.user, ctx.params["id"], ctx.query.firm_id)
