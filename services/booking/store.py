"""Booking's tables."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
)

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()

# Geohashes compare byte-wise (prefix ranges); PostgreSQL gets collation "C" so a locale never reorders them.
GEOHASH = String(12).with_variant(String(12, collation="C"), "postgresql")
TS = Timestamp()  # always UTC-aware in code

# The taxonomy as booking serves it, seeded from services/kernel/taxonomy.toml at start.
categories = Table(
    "categories",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("parent", String(64), nullable=True),
    Column("min_qty", String(16), nullable=False),
    Column("pays", Boolean, nullable=False),
    Column("tax_code", String(32), nullable=False),
)

# Booking's own copy of published prices (fed by pricing.index events; booking never reads pricing's tables).
price_copy = Table(
    "price_copy",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("region", String(6), primary_key=True),
    Column("date", Date, nullable=False),
    Column("version", Integer, nullable=False),
    Column("unit_price_fen", Integer, nullable=True),
    Column("stale", Boolean, nullable=False),
    Column("reference", Boolean, nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
)

# Booking's copy of verified collectors (fed by accounts.collector events): who may see and grab which jobs.
collectors = Table(
    "collectors",
    metadata,
    Column("collector_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False, unique=True),
    Column("firm_id", String(64), nullable=False),
    Column("name_masked", String(64), nullable=False),
    Column("lat", Float, nullable=False),
    Column("lng", Float, nullable=False),
    Column("radius_km", Float, nullable=False),
    Column("categories", Text, nullable=False),  # space-separated leaf codes
    Column("verified_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

pickups = Table(
    "pickups",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("resident_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),  # +1 on every change
    # where: the address text is personal data (encrypted, services.kernel.pii); coordinates feed dispatch
    Column("city_code", String(6), nullable=False),
    Column("district", String(100), nullable=False),
    Column("address_enc", Text, nullable=False),
    Column("lat", Float, nullable=False),
    Column("lng", Float, nullable=False),
    Column("geohash", GEOHASH, nullable=False),  # precision 9
    Column("area", GEOHASH, nullable=False),  # the capacity cell (settings.area_precision)
    # when
    Column("window_start", TS, nullable=False),
    Column("window_end", TS, nullable=False),
    Column("notes", Text, nullable=False),
    Column(
        "categories", Text, nullable=False
    ),  # space-separated leaf codes of the estimate (dispatch filter)
    Column("quote_total_fen", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    # dispatch
    Column("escalated_at", TS, nullable=True),
    Column("collector_id", String(64), nullable=True),
    Column("collector_user_id", String(64), nullable=True),
    Column("firm_id", String(64), nullable=True),
    Column("accepted_at", TS, nullable=True),
    Column("arrived_at", TS, nullable=True),
    # weighing (称重)
    Column("weighed_total_fen", Integer, nullable=True),
    Column("weigh_reason", Text, nullable=True),
    Column("scale_reading", String(200), nullable=True),
    Column("weighed_at", TS, nullable=True),
    Column("weigh_count", Integer, nullable=False, default=0),
    Column("dispute_reason", Text, nullable=True),
    Column("disputed_at", TS, nullable=True),
    Column("settled_at", TS, nullable=True),
    # the end of a pickup that did not settle
    Column("closed_at", TS, nullable=True),
    Column("closed_by", String(16), nullable=True),  # resident | admin | collector | system
    Column("close_reason", Text, nullable=True),
    Column("no_show_party", String(16), nullable=True),
    # the saga after settlement: invoice → payout
    Column("invoice_status", String(16), nullable=True),
    Column("invoice_id", String(64), nullable=True),
    Column("withheld_fen", Integer, nullable=True),
    Column("reconcile_fen", Integer, nullable=True),  # withheld tax reported after the time-out paid gross
    Column("payout_id", String(80), nullable=True),
    Column("payout_status", String(16), nullable=True),
    Column("payout_amount_fen", Integer, nullable=True),
    Column("payout_attempts", Integer, nullable=False, default=0),
    Column("payout_reason", Text, nullable=True),
    Index("ix_pickups_status_geohash", "status", "geohash"),  # open jobs near a point
    Index("ix_pickups_status_window_start", "status", "window_start"),  # expiry / escalation / no-show scans
    Index("ix_pickups_invoice_status_settled_at", "invoice_status", "settled_at"),  # invoice time-out scan
    Index("ix_pickups_resident_id_id", "resident_id", "id"),
    Index("ix_pickups_collector_user_id_id", "collector_user_id", "id"),
)

# One row per category of a pickup: the estimate at booking and the weighed result, both kept.
pickup_lines = Table(
    "pickup_lines",
    metadata,
    Column("pickup_id", String(40), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("unit", String(8), nullable=False),
    Column("tax_code", String(32), nullable=False),
    Column("est_qty", String(20), nullable=True),
    Column("est_unit_price_fen", Integer, nullable=True),
    Column("est_amount_fen", Integer, nullable=True),
    Column("est_price_region", String(6), nullable=True),
    Column("qty", String(20), nullable=True),
    Column("unit_price_fen", Integer, nullable=True),
    Column("amount_fen", Integer, nullable=True),
    Column("price_region", String(6), nullable=True),
    Column("price_as_of", Date, nullable=True),
)

# Places taken per capacity area and slot. Booking takes a place with a conditional UPDATE (booked < capacity).
slot_usage = Table(
    "slot_usage",
    metadata,
    Column("area", GEOHASH, primary_key=True),
    Column("slot_start", TS, primary_key=True),
    Column("booked", Integer, nullable=False),
)

# Every payout booking asked for. The primary key makes a second request under the same id impossible.
payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", String(80), primary_key=True),
    Column("pickup_id", String(40), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("payee_user_id", String(64), nullable=False),
    Column("amount_fen", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # requested | paid | failed
    Column("reason", Text, nullable=True),
    Column("provider_ref", String(200), nullable=True),
    Column("requested_at", TS, nullable=False),
    Column("resolved_at", TS, nullable=True),
)

ratings = Table(
    "ratings",
    metadata,
    Column("pickup_id", String(40), primary_key=True),
    Column("rater_role", String(16), primary_key=True),  # one rating per side
    Column("rater_user_id", String(64), nullable=False),
    Column("ratee_user_id", String(64), nullable=False),
    Column("score", SmallInteger, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_at", TS, nullable=False),
)

complaints = Table(
    "complaints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("pickup_id", String(40), nullable=False, index=True),
    Column("by_user_id", String(64), nullable=False),
    Column("by_role", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON list of {kind, url, sha256, note}
    Column("status", String(16), nullable=False),
    Column("created_at", TS, nullable=False),
)
