"""Booking's tables."""
from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, String, Table

from services.kernel.db import new_metadata

metadata = new_metadata()

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
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
