"""Pricing's tables.

Everything here is append-only: observations, published values (every version), their audit inputs, correction
notices and computation runs are inserted and never updated or deleted (the restatement queue is the one
piece of working state). Contributors appear only as pseudonymous integer codes (`counterparties`), and no
query of the read side selects them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()

TS = Timestamp()  # always UTC-aware in code
# An integer key that is 64-bit on PostgreSQL and the rowid alias on SQLite (autoincrement works on both).
ID = BigInteger().with_variant(Integer, "sqlite")

# Every published value, every version (restatements add a version; nothing is overwritten).
# kind "price": value = fen per category unit; kind "index": value = index points (base = 100).
published_values = Table(
    "published_values",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("region", String(6), primary_key=True),
    Column("date", Date, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("value", String(32), nullable=True),  # None = insufficient data
    Column("stale", Boolean, nullable=False, default=False),
    Column("source_region", String(6), nullable=True),
    Column("n_obs", Integer, nullable=False, default=0),
    Column("methodology_version", String(32), nullable=False),
    Column("reference", Boolean, nullable=False, default=False),
    Column("published_at", Timestamp(), nullable=False),
    Column("audit", Text, nullable=True),  # JSON disclosure: counts by exclusion reason, band, quorum, ...
    # added by the pricing job (None on the seeded reference rows)
    Column("status", String(20), nullable=True),  # published | insufficient_data
    Column("fingerprint", String(64), nullable=True),  # of the published content and its inputs
    Column("run_id", ID, nullable=True),
)

# The price-setting party of an observation, as a pseudonymous code. `party` (e.g. "firm:fm_…") never leaves
# this table; computations see the integer only (distinct counterparties for the quorum).
counterparties = Table(
    "counterparties",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("party", String(100), nullable=False, unique=True),
    Column("first_seen_at", TS, nullable=False),
)

# Raw inputs (价格采集), immutable. `day` is the calendar day of `observed_at` in the methodology's time zone.
# Integers only where the computation reads (price in fen, quantity in thousandths of the unit) so a whole
# day loads straight into int64 columns.
observations = Table(
    "observations",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("category", String(64), nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("day", Date, nullable=False),
    Column("observed_at", TS, nullable=False),
    Column("unit_price_fen", BigInteger, nullable=False),
    Column("qty_milli", BigInteger, nullable=False),  # quantity × 1000 (kg or piece), exact
    Column("tier", String(16), nullable=False),  # transaction | verified_deal | quote
    Column("kind", String(8), nullable=False),  # trade | quote (what the source says it is)
    Column("counterparty", ID, nullable=False),  # counterparties.id
    Column("related_party", Boolean, nullable=False),
    Column("source", String(32), nullable=False),  # booking.pickup | api | (trading.trade)
    Column("source_ref", String(100), nullable=False),  # pickup id, reporting user, ...
    Column("source_event_id", String(64), nullable=True),  # the integration event it came from
    Column("source_key", String(200), nullable=False, unique=True),  # one observation per source line
    Column("evidence", String(200), nullable=True),  # document reference of a verified deal
    Column("received_at", TS, nullable=False),
    # A day is read in id order (the computation streams it), which is also (nearly) the order rows were
    # written in: an index on (day, id) makes that a sequential read, where (day, category) would jump.
    Index("ix_observations_day_id", "day", "id"),
)

# The inputs of each published price version: observation ids (sorted, delta-encoded, zlib) and the reason
# code of each (0 = used; see audit.py), so every value can be reproduced and every exclusion explained.
series_inputs = Table(
    "series_inputs",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("region", String(6), primary_key=True),
    Column("date", Date, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("n_inputs", Integer, nullable=False),
    Column("input_ids", LargeBinary, nullable=False),
    Column("input_reasons", LargeBinary, nullable=False),
)

# 更正公告: one per restated value (old value, new value, reason), served with the history.
correction_notices = Table(
    "correction_notices",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("code", String(64), nullable=False),
    Column("region", String(6), nullable=False),
    Column("date", Date, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("old_version", Integer, nullable=False),
    Column("new_version", Integer, nullable=False),
    Column("old_value", String(32), nullable=True),
    Column("new_value", String(32), nullable=True),
    Column("old_stale", Boolean, nullable=False),
    Column("new_stale", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("methodology_version", String(32), nullable=False),
    Column("published_at", TS, nullable=False),
    Column("run_id", ID, nullable=False),
    Index("ix_correction_notices_code_region_date", "code", "region", "date"),
)

# One row per computation of a day (the daily job, an admin request, the CLI): when, why, by whom, what came out.
computation_runs = Table(
    "computation_runs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("day", Date, nullable=False, index=True),
    Column("methodology_version", String(32), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | catch_up | api | cli | bench | test
    Column("requested_by", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS, nullable=False),
    Column("n_observations", Integer, nullable=False),
    Column("n_series", Integer, nullable=False),
    Column("n_new_versions", Integer, nullable=False),
    Column("n_restated", Integer, nullable=False),
)

# Days already computed that received late inputs since: the daily job recomputes them (restatement).
restatement_queue = Table(
    "restatement_queue",
    metadata,
    Column("day", Date, primary_key=True),
    Column("late_inputs", Integer, nullable=False),
    Column("first_at", TS, nullable=False),
    Column("last_at", TS, nullable=False),
)
