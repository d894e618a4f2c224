"""Pricing's tables."""
from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, String, Table, Text

from services.kernel.db import new_metadata

metadata = new_metadata()

# Every published value, every version (restatements add a version; nothing is overwritten).
published_values = Table(
    "published_values",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("region", String(6), primary_key=True),
    Column("date", Date, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("value", String(32), nullable=True),
    Column("stale", Boolean, nullable=False, default=False),
    Column("source_region", String(6), nullable=True),
    Column("n_obs", Integer, nullable=False, default=0),
    Column("methodology_version", String(32), nullable=False),
    Column("reference", Boolean, nullable=False, default=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("audit", Text, nullable=True),  # JSON: inputs, exclusions and reasons
)
