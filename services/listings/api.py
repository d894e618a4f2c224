"""Listings routes (二手): listings, search, orders with escrow, reviews, reputation. Paths per API.md."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from services.kernel.checkdigits import validate_imei
from services.kernel.errors import ValidationFailed
from services.kernel.http import Ctx, Reply, Router
from services.kernel.regions import validate_city_code

from . import handlers, orders
from .domain.catalogue import CONDITIONS, categories
from .search import search_of
from .search.port import SearchQuery
from .settings import settings_of

router = Router("listings")

Condition = Literal["new", "like_new", "good", "fair", "for_parts"]
assert Condition.__args__ == CONDITIONS  # type: ignore[attr-defined]
DEVICE_KINDS = ("phone", "tablet", "laptop", "desktop", "wearable", "drive", "other")
PRICE_FILTER_MAX = 2**53 - 1  # a JSON-safe integer, far above any listing's price
MAX_OFFSET = 10**9  # no list here comes near it: a cursor past it was not given out


def _city(v: str) -> str:
    try:
        return validate_city_code(v)
    except ValidationFailed as exc:
        raise ValueError(exc.errors[0]["message"]) from None


class DeviceIn(BaseModel):
    kind: Literal["phone", "tablet", "laptop", "desktop", "wearable", "drive", "other"]
    imei: str | None = Field(None, description="15 digits, Luhn check digit")
    serial: str | None = Field(None, min_length=4, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9\- ]*$")

    @field_validator("imei")
    @classmethod
    def _imei(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return validate_imei(v)
        except ValidationFailed as exc:
            raise ValueError(exc.errors[0]["message"]) from None

    @model_validator(mode="after")
    def _one_identifier(self) -> DeviceIn:
        if not self.imei and not self.serial:
            raise ValueError("a device needs its imei or serial")
        return self


class ListingIn(BaseModel):
    title: str = Field(min_length=2, max_length=60)
    description: str = Field("", max_length=2000)
    category: str
    condition: Condition
    price_fen: int = Field(gt=0, le=100_000_000)
    city_code: str
    images: list[str] = Field(default_factory=list, max_length=9)
    device: DeviceIn | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        v = " ".join(v.split())
        if len(v) < 2:
            raise ValueError("at least 2 characters")
        return v

    @field_validator("city_code")
    @classmethod
    def _city_code(cls, v: str) -> str:
        return _city(v)

    @field_validator("images")
    @classmethod
    def _images(cls, v: list[str]) -> list[str]:
        for i, url in enumerate(v):
            parts = urlsplit(url) if len(url) <= 500 else None
            # a host, and nothing a client would have to escape ("https://" or "https://a b" were taken)
            if (
                parts is None
                or parts.scheme not in ("https", "http")
                or not parts.hostname
                or any(c.isspace() for c in url)
            ):
                raise ValueError(f"images[{i}] must be an http(s) URL with a host, at most 500 characters")
        return v


class ListingPatch(BaseModel):
    price_fen: int | None = Field(None, gt=0, le=100_000_000)
    description: str | None = Field(None, max_length=2000)

    @field_validator("price_fen", "description", mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        # runs only for a field sent: null is neither a price nor a description (leave a field out to keep it)
        if v is None:
            raise ValueError("may not be null: leave the field out to keep its value")
        return v


class DeviceOut(BaseModel):
    kind: str
    imei_masked: str | None
    serial_masked: str | None


class ListingOut(BaseModel):
    id: str
    status: str
    version: int
    seller_id: str
    title: str
    description: str
    category: str
    condition: str
    price_fen: int
    city_code: str
    images: list[str]
    device: DeviceOut | None
    certificate_id: str | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    unpublished_reason: str | None = None


class ListingList(BaseModel):
    items: list[ListingOut]
    next_cursor: str | None


class StatusOut(BaseModel):
    id: str
    status: str


class CategoryOut(BaseModel):
    code: str
    name: str
    holds_storage: bool


class SearchIn(BaseModel):
    q: str = Field("", max_length=100)
    category: str | None = None
    city_code: str | None = None
    condition: Condition | None = None
    # bounded so the filter fits the index's integers (SQLite's and Elasticsearch's are 64-bit)
    min_price_fen: int | None = Field(None, ge=0, le=PRICE_FILTER_MAX)
    max_price_fen: int | None = Field(None, ge=0, le=PRICE_FILTER_MAX)
    sort: Literal["relevance", "price_asc", "price_desc", "newest"] = "relevance"
    limit: int = Field(20, ge=1, description="at most LISTINGS_SEARCH_MAX_LIMIT (100)")
    cursor: str | None = None

    @field_validator("city_code")
    @classmethod
    def _city_code(cls, v: str | None) -> str | None:
        return None if v in (None, "") else _city(v)

    @field_validator("max_price_fen")
    @classmethod
    def _range(cls, v: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min_price_fen")
        if v is not None and low is not None and low > v:
            raise ValueError(f"below min_price_fen ({low})")
        return v


class SearchItem(BaseModel):
    id: str
    title: str
    category: str
    condition: str
    city_code: str
    price_fen: int
    published_at: datetime
    score: float | None


class SearchOut(BaseModel):
    items: list[SearchItem]
    next_cursor: str | None
    total: int
    facets: dict[str, dict[str, int]]
    scored_hits: int | None = None  # relevance: hits ranked by BM25 when not all were (the newest; see docs)


class ListQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, n = raw.partition(":")
        # a forged offset past MAX_OFFSET is no cursor of ours (and past 2**63 SQLite's OFFSET overflows)
        if kind != "o" or not n.isdigit() or len(n) > 12 or int(n) > MAX_OFFSET:
            raise ValueError
        return int(n)
    except ValueError:
        raise ValidationFailed.field("cursor", "not a cursor this API gave out") from None


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _check_category(ctx: Ctx, code: str, *, family_ok: bool = False) -> None:
    """`code` must be one of this deployment's categories (`LISTINGS_CATEGORIES_FILE`, else the shipped file),
    or, where `family_ok`, the family of one (`books` for `books.general`)."""
    known = categories(settings_of(ctx.runtime).categories_file or None)
    if code in known or (family_ok and any(c.startswith(code + ".") for c in known)):
        return
    raise ValidationFailed.field("category", f"unknown category {code!r}; see GET /v1/listings/categories")


# --- listings ------------------------------------------------------------------------------------------------


@router.get("/v1/listings/categories", public=True, response=list[CategoryOut])
async def list_categories(ctx: Ctx) -> list[dict[str, Any]]:
    """The second-hand categories; `holds_storage` ones need a wipe certificate to be published."""
    s = settings_of(ctx.runtime)
    return [
        {"code": c.code, "name": c.name, "holds_storage": c.holds_storage}
        for c in categories(s.categories_file or None).values()
        if c.code not in s.prohibited_categories
    ]


@router.get("/v1/listings/search", public=True, query=SearchIn, response=SearchOut, errors=(400,))
async def search_listings(ctx: Ctx) -> dict[str, Any]:
    """Full-text search of published listings (Chinese of any length; several words are AND), with facets."""
    q: SearchIn = ctx.query
    most = settings_of(ctx.runtime).search_max_limit
    if q.limit > most:
        raise ValidationFailed.field("limit", f"Input should be less than or equal to {most}")
    if q.category:
        _check_category(ctx, q.category, family_ok=True)
    offset = _offset(q.cursor)
    query = SearchQuery(
        q=q.q,
        category=q.category or None,
        city_code=q.city_code,
        condition=q.condition,
        min_price_fen=q.min_price_fen,
        max_price_fen=q.max_price_fen,
        sort=q.sort,
        limit=q.limit,
        offset=offset,
    )
    res = await ctx.run(search_of(ctx.runtime).search, query)
    nxt = offset + len(res.hits)
    return {
        "items": [
            {
                "id": h.listing_id,
                "title": h.title,
                "category": h.category,
                "condition": h.condition,
                "city_code": h.city_code,
                "price_fen": h.price_fen,
                "published_at": h.published_at,
                "score": h.score,
            }
            for h in res.hits
        ],
        "next_cursor": _cursor(nxt) if nxt < res.total and res.hits else None,
        "total": res.total,
        "facets": res.facets,
        "scored_hits": res.scored,
    }


@router.post(
    "/v1/listings", authenticated=True, body=ListingIn, response=ListingOut, status=201, errors=(422,)
)
async def create_listing(ctx: Ctx) -> Any:
    """A draft listing. Prohibited items (categories and words; configurable) → 422 `prohibited_item`."""
    body: ListingIn = ctx.body
    _check_category(ctx, body.category)
    return await ctx.run(handlers.create_listing, ctx.runtime, ctx.user.user_id, body.model_dump())


@router.replay_of(create_listing)
async def create_listing_replayed(ctx: Ctx, made: str) -> Any:
    return await ctx.run(handlers.listing_created, ctx.runtime, ctx.user.user_id, made)


@router.get("/v1/listings", authenticated=True, query=ListQuery, response=ListingList)
async def my_listings(ctx: Ctx) -> dict[str, Any]:
    """The signed-in seller's listings, newest first."""
    q: ListQuery = ctx.query
    offset = _offset(q.cursor)
    items = await ctx.run(handlers.list_listings_of, ctx.runtime, ctx.user.user_id, q.limit + 1, offset)
    more = len(items) > q.limit
    return {"items": items[: q.limit], "next_cursor": _cursor(offset + q.limit) if more else None}


@router.get(
    "/v1/listings/{id}",
    public=True,
    response=ListingOut,
    errors=(404,),
    not_owned="published listings are public (a draft answers 404 to anyone but its seller)",
)
async def get_listing(ctx: Ctx) -> dict[str, Any]:
    """A listing (a draft only for its seller)."""
    return await ctx.run(handlers.get_listing, ctx.runtime, ctx.principal, ctx.params["id"])


@router.route(
    "PATCH",
    "/v1/listings/{id}",
    authenticated=True,
    body=ListingPatch,
    response=ListingOut,
    errors=(403, 404, 409, 422),
    owner="listing",
    example={"price_fen": 3900},
)
async def update_listing(ctx: Ctx) -> dict[str, Any]:
    """The seller changes the price or the description."""
    body: ListingPatch = ctx.body
    return await ctx.run(
        handlers.update_listing, ctx.runtime, ctx.user, ctx.params["id"], body.model_dump(exclude_none=True)
    )


@router.post(
    "/v1/listings/{id}/publish",
    authenticated=True,
    response=StatusOut,
    errors=(403, 404, 409, 422),
    owner="listing",
)
async def publish_listing(ctx: Ctx) -> dict[str, Any]:
    """Put a draft on sale; a device (or a category holding storage) needs a valid wipe certificate (422
    `wipe_certificate_required`)."""
    out = await ctx.run(handlers.publish_listing, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


@router.post(
    "/v1/listings/{id}/withdraw",
    authenticated=True,
    response=StatusOut,
    errors=(403, 404, 409),
    owner="listing",
)
async def withdraw_listing(ctx: Ctx) -> dict[str, Any]:
    """Take a listing off the market (its seller, or an admin)."""
    out = await ctx.run(handlers.withdraw_listing, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


# --- orders --------------------------------------------------------------------------------------------------


class OrderIn(BaseModel):
    listing_id: str = Field(min_length=1, max_length=64)


class PaymentOut(BaseModel):
    id: str
    client_secret: str | None
    status: str
    decline_reason: str | None = None
    # 2, 3, ...: the buyer was asked to pay again after shipping; `failure_reason` says why (cleared once the new
    # payment is in escrow), `failed_at` when
    attempt: int = 1
    failure_reason: str | None = None
    failed_at: datetime | None = None


class OrderOut(BaseModel):
    id: str
    status: str
    listing_id: str
    buyer_id: str
    seller_id: str
    amount_fen: int
    fee_fen: int | None
    payment: PaymentOut
    carrier: str | None
    tracking_no: str | None
    cancel_reason: str | None
    auto_confirmed: bool
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    ship_by: datetime | None = None
    shipped_at: datetime | None
    completed_at: datetime | None


class OrderList(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class OrdersQuery(ListQuery):
    role: Literal["buyer", "seller"] = "buyer"


ORDER_STATES = Literal["pending_payment", "paid", "shipped", "completed", "cancelled", "expired"]


class AdminOrdersQuery(ListQuery):
    status: ORDER_STATES | None = None
    payment_failed: bool = Field(
        False,
        description="only shipped orders whose money is not in escrow: the buyer was asked to pay again",
    )


class ShipIn(BaseModel):
    carrier: str | None = Field(None, max_length=64)
    tracking_no: str | None = Field(None, max_length=64)


class ReviewIn(BaseModel):
    rating: int = Field(ge=1, le=5)
    comment: str = Field("", max_length=500)


class ReviewOut(BaseModel):
    order_id: str
    author_role: str
    author_id: str
    subject_id: str
    rating: int
    comment: str
    created_at: datetime


class ReputationOut(BaseModel):
    user_id: str
    score: float | None
    reviews: int
    completed_orders: int


@router.post(
    "/v1/orders", authenticated=True, body=OrderIn, response=OrderOut, status=201, errors=(404, 409, 422)
)
async def create_order(ctx: Ctx) -> Any:
    """Order a listing: it is reserved and payments opens a hold (担保交易) that the buyer confirms."""
    body: OrderIn = ctx.body
    rt = ctx.runtime
    out = await ctx.run(orders.create_order, rt, ctx.user.user_id, body.listing_id)
    # Payments opens the payment from our event; wait briefly so the reply can carry it.
    deadline = time.monotonic() + settings_of(rt).payment_wait_s
    while out["payment"]["status"] == "requested" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if await ctx.run(orders.payment_status_of, rt, out["id"]) != "requested":
            out = await ctx.run(orders.get_order, rt, ctx.user, out["id"])
    return Reply(out, 201)


@router.replay_of(create_order)
async def create_order_replayed(ctx: Ctx, made: str) -> Any:
    return Reply(await ctx.run(orders.get_order, ctx.runtime, ctx.user, made), 201)


@router.get("/v1/orders", authenticated=True, query=OrdersQuery, response=OrderList)
async def my_orders(ctx: Ctx) -> dict[str, Any]:
    """The signed-in user's orders as buyer (default) or seller, newest first."""
    q: OrdersQuery = ctx.query
    offset = _offset(q.cursor)
    items = await ctx.run(orders.list_orders, ctx.runtime, ctx.user.user_id, q.role, q.limit + 1, offset)
    more = len(items) > q.limit
    return {"items": items[: q.limit], "next_cursor": _cursor(offset + q.limit) if more else None}


@router.get("/v1/admin/orders", roles={"admin"}, query=AdminOrdersQuery, response=OrderList)
async def admin_orders(ctx: Ctx) -> dict[str, Any]:
    """(admin) Every order, newest first, by `status`; `payment_failed=true`: the shipped orders whose buyer's
    payment was let go before it reached escrow, oldest failure first (they cannot complete until the buyer pays
    again; the seller or an admin may cancel them)."""
    q: AdminOrdersQuery = ctx.query
    offset = _offset(q.cursor)
    items = await ctx.run(orders.admin_orders, ctx.runtime, q.status, q.payment_failed, q.limit + 1, offset)
    more = len(items) > q.limit
    return {"items": items[: q.limit], "next_cursor": _cursor(offset + q.limit) if more else None}


@router.get("/v1/orders/{id}", authenticated=True, response=OrderOut, errors=(403, 404), owner="order")
async def get_order(ctx: Ctx) -> dict[str, Any]:
    """An order (its buyer, its seller, or an admin)."""
    return await ctx.run(orders.get_order, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/orders/{id}/ship",
    authenticated=True,
    body=ShipIn,
    response=StatusOut,
    errors=(403, 404, 409),
    owner="order",
    example={"carrier": "顺丰", "tracking_no": "SF1234567890"},
)
async def ship_order(ctx: Ctx) -> dict[str, Any]:
    """The seller has shipped a paid order (by its `ship_by`): the buyer's money is captured into escrow."""
    body: ShipIn = ctx.body
    out = await ctx.run(
        orders.ship_order, ctx.runtime, ctx.user, ctx.params["id"], body.carrier, body.tracking_no
    )
    return {"id": out["id"], "status": out["status"]}


@router.post(
    "/v1/orders/{id}/confirm-receipt",
    authenticated=True,
    response=StatusOut,
    errors=(403, 404, 409),
    owner="order",
)
async def confirm_receipt(ctx: Ctx) -> dict[str, Any]:
    """The buyer received the item: the escrow is released to the seller less the platform fee. 409
    `payment_not_in_escrow` while the buyer's money is not in escrow (its capture on its way, or the buyer asked to
    pay again: `payment.failure_reason`)."""
    out = await ctx.run(orders.confirm_receipt, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


@router.post(
    "/v1/orders/{id}/cancel", authenticated=True, response=StatusOut, errors=(403, 404, 409), owner="order"
)
async def cancel_order(ctx: Ctx) -> dict[str, Any]:
    """Cancel before shipping (buyer, seller or admin): the hold is released in full. After shipping the seller
    (taking the item back) or an admin (a dispute decided for the buyer) refunds the escrow in full."""
    out = await ctx.run(orders.cancel_order, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


# --- replies rebuilt for a retry whose reply was lost after the commit (services/kernel/idempotency.py) ----------


@router.replays(publish_listing, withdraw_listing)
async def listing_status(ctx: Ctx) -> dict[str, Any]:
    return await ctx.run(handlers.listing_status, ctx.runtime, ctx.user, ctx.params["id"])


@router.replays(update_listing)
async def listing_as_it_stands(ctx: Ctx) -> dict[str, Any]:
    # the seller's view, with the price and description as they are now (an edit made since included)
    return await ctx.run(handlers.get_listing, ctx.runtime, ctx.user, ctx.params["id"])


@router.replays(confirm_receipt, cancel_order)
async def order_status(ctx: Ctx) -> dict[str, Any]:
    out = await ctx.run(orders.get_order, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


@router.replays(ship_order)
async def order_shipped(ctx: Ctx) -> dict[str, Any]:
    out = await ctx.run(orders.shipped, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


@router.post(
    "/v1/orders/{id}/review",
    authenticated=True,
    body=ReviewIn,
    response=ReviewOut,
    status=201,
    errors=(403, 404, 409),
    owner="order",
    example={"rating": 5, "comment": "好评"},
)
async def review_order(ctx: Ctx) -> Any:
    """Review the other side of a completed order (once per side)."""
    body: ReviewIn = ctx.body
    out = await ctx.run(
        orders.review_order, ctx.runtime, ctx.user, ctx.params["id"], body.rating, body.comment
    )
    return Reply(out, 201)


@router.replay_of(review_order)
async def review_order_replayed(ctx: Ctx, made: str) -> Any:
    return Reply(await ctx.run(orders.reviewed, ctx.runtime, ctx.user, ctx.params["id"], made), 201)


@router.get(
    "/v1/users/{id}/reputation",
    public=True,
    response=ReputationOut,
    not_owned="a user's reputation is public (counts and mean rating only)",
)
async def get_reputation(ctx: Ctx) -> dict[str, Any]:
    """A user's reputation: mean rating and counts, from completed orders only."""
    return await ctx.run(orders.reputation, ctx.runtime, ctx.params["id"])
