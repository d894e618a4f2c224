"""Listings' tables: listings, its copy of wipe certificates, orders with their escrow state, reviews.

The search index is not here: it lives behind the search port (its own SQLite file, or Elasticsearch).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

from services.kernel.db import Timestamp, new_metadata

from .domain import model as m

metadata = new_metadata()

Money = BigInteger  # fen

listings = Table(
    "listings",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("title", String(120), nullable=False),
    Column("description", Text, nullable=False),
    Column("category", String(64), nullable=False),
    Column("condition", String(16), nullable=False),
    Column("price_fen", Money, nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("images", Text, nullable=False),  # JSON list of URLs
    # the device, when the listing names one: kind in clear, identifiers encrypted (kernel.pii) and masked, and
    # their digests (contracts.wipe.device_key) to match certificates
    Column("device_kind", String(16), nullable=True),
    Column("imei_enc", Text, nullable=True),
    Column("imei_masked", String(32), nullable=True),
    Column("serial_enc", Text, nullable=True),
    Column("serial_masked", String(64), nullable=True),
    Column("imei_key", String(64), nullable=True, index=True),
    Column("serial_key", String(64), nullable=True, index=True),
    Column("certificate_id", String(64), nullable=True, index=True),  # the certificate it was published on
    Column("unpublished_reason", String(32), nullable=True),
    Column("reserved_order_id", String(64), nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
    Column("published_at", Timestamp(), nullable=True),
)

# listings' copy of the wipe service's certificates (consumer group listings.certificates)
certificates = Table(
    "certificates",
    metadata,
    Column("certificate_id", String(64), primary_key=True),
    Column("device_kind", String(16), nullable=False),
    Column("issued_at", Timestamp(), nullable=True),
    Column("revoked_at", Timestamp(), nullable=True),
    Column("revoked_reason", Text, nullable=True),
)

certificate_devices = Table(
    "certificate_devices",
    metadata,
    Column("device_key", String(64), primary_key=True),
    Column("certificate_id", String(64), primary_key=True),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("listing_id", String(64), nullable=False, index=True),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("category", String(64), nullable=False),
    Column("city_code", String(6), nullable=False),
    # escrow at payments: the hold request (its id is also the payment id the buyer confirms)
    Column("hold_request_id", String(80), nullable=False, unique=True),
    Column(
        "payment_status", String(32), nullable=False
    ),  # requested | requires_payment_method | declined | held | escrowed | captured | cancelled | refunded
    Column("client_secret", Text, nullable=True),
    Column("hold_id", String(64), nullable=True),
    Column("decline_reason", Text, nullable=True),
    # the buyer's payments of the order (1, or more when the buyer is asked to pay again), and why the last one
    # failed after shipping: its authorisation was let go before the escrow capture (cleared once in escrow)
    Column("payment_attempt", Integer, nullable=False, server_default=text("1")),
    Column("payment_failure_reason", String(64), nullable=True),
    Column("payment_failed_at", Timestamp(), nullable=True),
    Column("fee_fen", Money, nullable=True),
    Column("payout_id", String(80), nullable=True),
    Column("carrier", String(64), nullable=True),
    Column("tracking_no", String(64), nullable=True),
    Column("cancel_reason", String(64), nullable=True),
    Column("auto_confirmed", Boolean, nullable=False, default=False),
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
    Column("expires_at", Timestamp(), nullable=False),
    Column("paid_at", Timestamp(), nullable=True),
    # a paid order not shipped by then is cancelled (`not_shipped`): the buyer's authorisation would lapse
    Column("ship_by", Timestamp(), nullable=True),
    Column("shipped_at", Timestamp(), nullable=True),
    Column("completed_at", Timestamp(), nullable=True),
    Column("closed_at", Timestamp(), nullable=True),
    Index("ix_orders_status_expires", "status", "expires_at"),
    Index("ix_orders_status_shipped", "status", "shipped_at"),
    Index("ix_orders_status_ship_by", "status", "ship_by"),
    Index("ix_orders_status_payment_failed", "status", "payment_failed_at"),
    # never two live orders for one listing, whatever races (the reservation is the first guard)
    Index(
        "uq_orders_live_listing",
        "listing_id",
        unique=True,
        sqlite_where=text("status IN ('pending_payment', 'paid', 'shipped', 'completed')"),
        postgresql_where=text("status IN ('pending_payment', 'paid', 'shipped', 'completed')"),
    ),
)
assert {"pending_payment", "paid", "shipped", "completed"} == m.ACTIVE_ORDER

reviews = Table(
    "reviews",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("author_role", String(8), primary_key=True),  # buyer | seller
    Column("author_id", String(64), nullable=False),
    Column("subject_id", String(64), nullable=False, index=True),  # the user reviewed
    Column("rating", SmallInteger, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_at", Timestamp(), nullable=False),
)
