"""Trading routes: parse → handler (in a thread) → reply. Paths and field names follow shared/API.md (Trading)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from services.kernel.http import Ctx, Router

from . import handlers, trades
from .domain.commands import DisputeDelivery, ListLot, LotsQuery, PlaceBid, RecordDelivery

router = Router("trading")
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
    bid_count: int
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


@router.get("/v1/lots", authenticated=True, query=LotsQuery, response=LotPage)
async def list_lots(ctx: Ctx) -> dict[str, Any]:
    """The lots board, newest first (`?status=open&category=&seller_firm_id=&limit=&cursor=`)."""
    return await ctx.run(handlers.list_lots, ctx.runtime, ctx.query)


@router.get("/v1/lots/{id}", authenticated=True, response=LotOut, errors=(404,))
async def get_lot(ctx: Ctx) -> dict[str, Any]:
    """One lot: sealed bids stay hidden until the close, an ascending lot shows its best bid."""
    return await ctx.run(handlers.get_lot, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/lots/{id}/bids", roles=FIRM, body=PlaceBid, response=BidOut, status=201, errors=(403, 404, 409, 422)
)
async def place_bid(ctx: Ctx) -> dict[str, Any]:
    """(verified firm, not the seller nor related to it) Bid a price per tonne; 422 `{reason}` when refused."""
    return await ctx.run(handlers.place_bid, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


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


@router.get("/v1/trades/{id}", authenticated=True, response=TradeOut, errors=(403, 404))
async def get_trade(ctx: Ctx) -> dict[str, Any]:
    """One trade: its delivery and settlement (its seller, its buyer, admins)."""
    return await ctx.run(trades.get_trade, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/trades/{id}/delivery", roles=FIRM, body=RecordDelivery, response=DeliveryOut, errors=(403, 404, 409)
)
async def record_delivery(ctx: Ctx) -> dict[str, Any]:
    """(seller) The weighbridge ticket: the amount is on the delivered weight; outside the tolerance (default ±2 %)
    the buyer accepts before settlement."""
    return await ctx.run(trades.record_delivery, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.post("/v1/trades/{id}/accept-delivery", roles=FIRM, response=TradeOut, errors=(403, 404, 409))
async def accept_delivery(ctx: Ctx) -> dict[str, Any]:
    """(buyer) Accept a delivered weight outside the tolerance; settlement starts."""
    return await ctx.run(trades.accept_delivery, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/trades/{id}/dispute-delivery",
    roles=FIRM,
    body=DisputeDelivery,
    response=TradeOut,
    errors=(403, 404, 409),
)
async def dispute_delivery(ctx: Ctx) -> dict[str, Any]:
    """(buyer) Refuse a delivered weight outside the tolerance; the seller may deliver again."""
    return await ctx.run(trades.dispute_delivery, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


class TraceOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    lot: dict[str, Any]
    intake: list[dict[str, Any]]
    trade: dict[str, Any] | None
    delivery: dict[str, Any] | None
    reconciliation: dict[str, Any]


@router.get("/v1/lots/{id}/trace", authenticated=True, response=TraceOut, errors=(403, 404))
async def lot_trace(ctx: Ctx) -> dict[str, Any]:
    """The chain of custody: the settled pickups (or the declared purchase) that fed the lot → the trade → the
    delivery, with the quantities reconciled (its seller, its buyer, admins)."""
    return await ctx.run(trades.trace, ctx.runtime, ctx.user, ctx.params["id"])
