"""Stats tables: the settled facts it has counted (one row per pickup, per pickup category, per trade) and the
daily aggregates read by the API.

The facts make every handler idempotent on its own (a pickup or trade is counted when its row is first inserted)
and are what a rebuild or a recount checks the aggregates against. Aggregates are keyed by the fact's own GB/T
2260 code (a county, or a city/province when that is all the event gave) and roll up by code prefix; they are
also keyed by firm, so a firm's own figures come from the same rows. Distinct counts (residents served,
collectors active, pickups) cannot be summed across days or regions, so their members are kept in
`flow_members` and counted at read time over whatever period and region is asked.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, Index, Integer, String, Table

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()

TS = Timestamp()
ID = String(64)

# One per settled pickup (booking.pickup.settled), with the factor table version that made its CO2e.
pickups = Table(
    "pickups",
    metadata,
    Column("pickup_id", ID, primary_key=True),
    Column("resident_id", ID, nullable=False, index=True),
    Column("collector_id", ID, nullable=False),
    Column("firm_id", ID, nullable=False, index=True),
    Column("region_code", String(6), nullable=False),
    Column("day", Date, nullable=False),
    Column("month", Date, nullable=False),
    Column("settled_at", TS, nullable=False),
    Column("mass_g", BigInteger, nullable=False),
    Column("value_fen", BigInteger, nullable=False),
    Column("co2e_g", BigInteger, nullable=False),
    Column("factors_version", String(40), nullable=False),
    Column("recorded_at", TS, nullable=False),
)

pickup_lines = Table(
    "pickup_lines",
    metadata,
    Column("pickup_id", ID, primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("unit", String(8), nullable=False),
    Column("qty_milli", BigInteger, nullable=False),  # kg or pieces × 1000, as weighed
    Column("mass_g", BigInteger, nullable=False),
    Column("mass_estimated", Boolean, nullable=False),
    Column("value_fen", BigInteger, nullable=False),
    Column("co2e_g", BigInteger, nullable=False),
    Column("low_value", Boolean, nullable=False),
    Column("factor_status", String(12), nullable=False),
)

# One per trade (trading.trade): awarded first, settled on the weighbridge weight later (or settled only).
trades = Table(
    "trades",
    metadata,
    Column("trade_id", ID, primary_key=True),
    Column("lot_id", ID, nullable=False),
    Column("seller_firm_id", ID, nullable=False, index=True),
    Column("buyer_firm_id", ID, nullable=False, index=True),
    Column("category", String(64), nullable=False),
    Column("grade", String(40), nullable=False),
    Column("region_code", String(6), nullable=False),
    Column("related_party", Boolean, nullable=False),
    Column("status", String(10), nullable=False),  # awarded | settled
    Column("awarded_g", BigInteger, nullable=True),
    Column("price_fen_per_t", BigInteger, nullable=False),
    Column("awarded_at", TS, nullable=True),
    Column("delivered_g", BigInteger, nullable=True),
    Column("amount_fen", BigInteger, nullable=True),
    Column("co2e_g", BigInteger, nullable=True),  # embodied in the delivered tonnes (not added to totals)
    Column("settled_at", TS, nullable=True),
    Column("day", Date, nullable=True),  # of settlement
    Column("month", Date, nullable=True),
    Column("factors_version", String(40), nullable=True),
)

# Daily sums per (day, region code, category, firm). Pickup figures are the collecting firm's; traded figures
# the selling firm's (the onward flow out of it).
flow_days = Table(
    "flow_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("region_code", String(6), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("firm_id", ID, primary_key=True),
    Column("month", Date, nullable=False),
    Column("collected_g", BigInteger, nullable=False, default=0),
    Column("estimated_g", BigInteger, nullable=False, default=0),  # of which from pieces × typical mass
    Column("pieces_milli", BigInteger, nullable=False, default=0),
    Column("value_fen", BigInteger, nullable=False, default=0),
    Column("low_value_g", BigInteger, nullable=False, default=0),
    Column("co2e_g", BigInteger, nullable=False, default=0),
    Column("traded_g", BigInteger, nullable=False, default=0),
    Column("traded_value_fen", BigInteger, nullable=False, default=0),
    Column("traded_co2e_g", BigInteger, nullable=False, default=0),
    Column("trades", Integer, nullable=False, default=0),
)
Index("ix_flow_days_month_region", flow_days.c.month, flow_days.c.region_code)
Index("ix_flow_days_firm_day", flow_days.c.firm_id, flow_days.c.day)

# Who was counted where and when: kind resident | collector | pickup.
flow_members = Table(
    "flow_members",
    metadata,
    Column("day", Date, primary_key=True),
    Column("region_code", String(6), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("firm_id", ID, primary_key=True),
    Column("kind", String(10), primary_key=True),
    Column("member_id", ID, primary_key=True),
    Column("month", Date, nullable=False),
)
Index("ix_flow_members_month_region", flow_members.c.month, flow_members.c.region_code)

FACT_TABLES = (pickups, pickup_lines, trades, flow_days, flow_members)
