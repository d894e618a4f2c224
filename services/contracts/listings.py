"""Events the listings service publishes (二手): listings on topic `listings.listing` (key = listing id) and
orders on topic `listings.order` (key = order id).

A listing event carries the searchable document (title, description, category, condition, price, city), so the
search indexer (listings' own consumer group) and any other reader need no access to listings' tables. `version`
grows with every change of the listing: a reader keeps the highest version it has seen and ignores older ones.
"""

from __future__ import annotations

from datetime import datetime

from services.kernel.events import Event


class _ListingEvent(Event):
    topic = "listings.listing"
    key_field = "listing_id"
    source = "/listings"
    listing_id: str
    version: int


class _ListingDocument(_ListingEvent):
    seller_id: str
    title: str
    description: str
    category: str
    condition: str  # new | like_new | good | fair | for_parts
    price_fen: int
    city_code: str
    published_at: datetime


class ListingPublished(_ListingDocument):
    type = "cn.recycle.listings.listing.published.v1"
    doc = (
        "A listing is on sale (first publication, or back on sale after an order expired or was cancelled): "
        "the search index adds it."
    )


class ListingUpdated(_ListingDocument):
    type = "cn.recycle.listings.listing.updated.v1"
    doc = "A published listing changed (price, description): the search index replaces its document."


class ListingUnpublished(_ListingEvent):
    type = "cn.recycle.listings.listing.unpublished.v1"
    doc = (
        "A listing left the market: `reason` is withdrawn (by its seller), reserved (an order holds it), "
        "certificate_revoked (its wipe certificate was revoked) or sold. The search index drops it."
    )
    reason: str
    at: datetime


class _OrderEvent(Event):
    topic = "listings.order"
    key_field = "order_id"
    source = "/listings"
    order_id: str
    listing_id: str
    buyer_id: str
    seller_id: str
    amount_fen: int


class OrderPaid(_OrderEvent):
    type = "cn.recycle.listings.order.paid.v1"
    doc = "The buyer's money is held in escrow (担保交易): the seller may ship."
    paid_at: datetime


class OrderCompleted(_OrderEvent):
    type = "cn.recycle.listings.order.completed.v1"
    doc = (
        "The buyer confirmed receipt (or it was auto-confirmed): the escrow (captured when the seller shipped) is released to the seller "
        "less `fee_fen`. A second-hand sale, not a recycling transaction: the price index ignores it."
    )
    fee_fen: int
    category: str
    city_code: str
    completed_at: datetime
    auto_confirmed: bool = False


class OrderCancelled(_OrderEvent):
    type = "cn.recycle.listings.order.cancelled.v1"
    doc = "An order ended without a sale (cancelled, or unpaid in time: `reason` = expired); the listing is freed."
    reason: str
    cancelled_at: datetime
