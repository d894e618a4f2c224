"""Trading's tables: lots, bids, deposits, trades; its copies of accounts' firms and booking's settled intake."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()
TS = Timestamp()  # always UTC-aware in code
ID = String(64)
SEQ = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

# --- copies of other services' facts ------------------------------------------------------------------------

# Verified firms (accounts.firm FirmVerified): who may list and bid, and whose user is paid or pays for the firm.
firms = Table(
    "firms",
    metadata,
    Column("firm_id", ID, primary_key=True),
    Column("owner_user_id", ID, nullable=False),
    Column("name", String(200), nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("verified_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# Who acts for which firm (accounts.user RolesChanged.firm_ids, and each firm's owner): two firms one person acts
# for are related parties.
firm_members = Table(
    "firm_members",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("firm_id", ID, primary_key=True),
    Index("ix_firm_members_firm", "firm_id"),
)

# The firm's intake: every settled pickup line of its collectors (booking.pickup PickupSettled), in grams, and how
# much of it lots have taken. A lot sourced from intake takes the oldest lines first (lot_sources).
intake = Table(
    "intake",
    metadata,
    Column("pickup_id", ID, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("firm_id", ID, nullable=False),
    Column("category", String(64), nullable=False),
    Column("qty_g", BigInteger, nullable=False),
    Column("allocated_g", BigInteger, nullable=False, default=0),
    Column("city_code", String(6), nullable=False),
    Column("collector_id", ID, nullable=False),
    Column("settled_at", TS, nullable=False),
    Index("ix_intake_firm_category", "firm_id", "category", "settled_at"),
)

# --- lots and bids ------------------------------------------------------------------------------------------

lots = Table(
    "lots",
    metadata,
    Column("id", ID, primary_key=True),
    Column("seller_firm_id", ID, nullable=False),
    Column("created_by", ID, nullable=False),
    Column("category", String(64), nullable=False),
    Column("grade", String(100), nullable=False),
    Column("qty_kg", BigInteger, nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("reserve_fen_per_t", BigInteger, nullable=False),
    Column("auction", String(16), nullable=False),
    Column("min_increment_fen_per_t", BigInteger, nullable=True),
    Column("deposit_fen", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),  # intake | purchase
    Column("purchase_ref", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("listed_at", TS, nullable=False),
    Column("original_ends_at", TS, nullable=False),
    Column("ends_at", TS, nullable=False),
    Column("extensions", Integer, nullable=False, default=0),
    Column("bid_count", Integer, nullable=False, default=0),
    Column("best_bid_id", ID, nullable=True),
    Column("best_fen_per_t", BigInteger, nullable=True),
    Column("closed_at", TS, nullable=True),
    Column(
        "trade_id", ID, nullable=True
    ),  # the trade of the current round (a second-chance offer after a default)
    Column("returned_at", TS, nullable=True),  # every buyer defaulted or declined: back to the seller
    Column("version", Integer, nullable=False, default=1),
    Index("ix_lots_status_ends_at", "status", "ends_at"),
    Index("ix_lots_seller", "seller_firm_id"),
)

bids = Table(
    "bids",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("lot_id", ID, nullable=False),
    Column("firm_id", ID, nullable=False),
    Column("user_id", ID, nullable=False),
    Column("price_fen_per_t", BigInteger, nullable=False),
    Column("placed_at", TS, nullable=False),
    Column("below_reserve", Boolean, nullable=False, default=False),
    Column("extended", Boolean, nullable=False, default=False),
    Column("ends_at_after", TS, nullable=False),
    Index("ix_bids_lot", "lot_id", "seq"),
)

# Which intake lines a lot was made of (the chain of custody); released again when the lot goes unsold.
lot_sources = Table(
    "lot_sources",
    metadata,
    Column("lot_id", ID, primary_key=True),
    Column("pickup_id", ID, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("qty_g", BigInteger, nullable=False),
    Column(
        "released", Boolean, nullable=False, default=False
    ),  # the lot went unsold: the intake is free again
)

# Deposit holds (保证金) of bidders, through payments' holds: requested → opened → held → released.
deposits = Table(
    "deposits",
    metadata,
    Column("hold_request_id", ID, primary_key=True),
    Column("lot_id", ID, nullable=False),
    Column("firm_id", ID, nullable=False),
    Column("payer_user_id", ID, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("status", String(24), nullable=False),
    Column(
        "forfeit_fee_fen", BigInteger, nullable=True
    ),  # the buyer defaulted: captured for the seller less this
    Column("payment_id", ID, nullable=True),
    Column("hold_id", ID, nullable=True),
    Column("requested_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("lot_id", "firm_id"),
)

# --- trades -------------------------------------------------------------------------------------------------

trades = Table(
    "trades",
    metadata,
    Column("id", ID, primary_key=True),
    Column("lot_id", ID, nullable=False),
    Column("round", Integer, nullable=False, default=1),  # 1: the award; 2, 3, …: second-chance offers
    Column("bid_id", ID, nullable=False),
    Column("seller_firm_id", ID, nullable=False),
    Column("buyer_firm_id", ID, nullable=False),
    Column("category", String(64), nullable=False),
    Column("grade", String(100), nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("qty_kg", BigInteger, nullable=False),
    Column("price_fen_per_t", BigInteger, nullable=False),
    Column("related_party", Boolean, nullable=False),
    Column("status", String(24), nullable=False),
    Column("awarded_at", TS, nullable=False),
    Column("weighbridge_ticket_no", String(64), nullable=True),
    Column("delivered_kg", BigInteger, nullable=True),
    Column("amount_fen", BigInteger, nullable=True),
    Column("fee_fen", BigInteger, nullable=True),
    Column("within_tolerance", Boolean, nullable=True),
    Column("deviation_pct", String(16), nullable=True),
    Column("delivered_at", TS, nullable=True),
    Column("acceptance", String(16), nullable=True),  # not_required | pending | accepted
    Column("accepted_at", TS, nullable=True),
    Column("disputed_at", TS, nullable=True),
    Column("dispute_reason", Text, nullable=True),
    Column("payment_request_id", ID, nullable=True),
    Column("payment_id", ID, nullable=True),
    Column("payment_status", String(24), nullable=True),
    Column("payment_requested_at", TS, nullable=True),
    Column("payout_id", ID, nullable=True),
    Column("settled_at", TS, nullable=True),
    Column("defaulted_at", TS, nullable=True),
    Column(
        "default_reason", String(32), nullable=True
    ),  # payment_overdue | declared_by_seller | declared_by_admin
    Column("default_note", Text, nullable=True),
    Column("deposit_forfeited_fen", BigInteger, nullable=True),
    Column("offered_at", TS, nullable=True),  # a second-chance offer: when made, until when, when it ended
    Column("offer_expires_at", TS, nullable=True),
    Column("offer_ended_at", TS, nullable=True),
    Column("version", Integer, nullable=False, default=1),
    UniqueConstraint("lot_id", "round"),
    Index("ix_trades_status", "status"),
    Index("ix_trades_buyer", "buyer_firm_id"),
    Index("ix_trades_seller", "seller_firm_id"),
)
