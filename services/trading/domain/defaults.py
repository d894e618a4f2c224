"""Buyer default (违约) and second-chance offers as rules over plain facts. Pure: no I/O.

When does a buyer default?
- It owes an answer or money: the weight it has to accept (outside the tolerance) since the delivery, or the
  payment requested since then. Past `payment_deadline_s` the deadline job declares it in default (`overdue`).
- It has not come to load (no delivery recorded) `collect_deadline_s` after the award. Only the seller may declare
  that (a missing delivery may as well be the seller's doing, so no job does it on its own).
A disputed weight is the seller's move (deliver again) and never makes the buyer default.

After a default, the lot is offered to the next-best bid at or above reserve of a firm that has not had it yet
(defaulted, declined or let an offer lapse), at that bid's own price; with none left the lot goes back to the seller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from .model import ACCEPTANCE_PENDING, AWARDED, DELIVERED, OFFERED
from .rules import BidFacts, Refusal, winner

# trades.payment_status values that mean the buyer has not paid (settlement.py)
UNPAID = ("requested", "awaiting_payer", "declined")

# why a trade defaulted (trades.default_reason, TradeDefaulted.reason)
PAYMENT_OVERDUE = "payment_overdue"
DECLARED_BY_SELLER = "declared_by_seller"
DECLARED_BY_ADMIN = "declared_by_admin"


@dataclass(frozen=True)
class Deadlines:
    """The configurable numbers (TRADING_* settings)."""

    payment_deadline_s: int
    collect_deadline_s: int
    offer_deadline_s: int


@dataclass(frozen=True)
class TradeFacts:
    status: str
    awarded_at: datetime
    delivered_at: datetime | None = None
    acceptance: str | None = None
    payment_status: str | None = None
    payment_requested_at: datetime | None = None
    offer_expires_at: datetime | None = None


def buyer_owes_since(t: TradeFacts) -> datetime | None:
    """Since when the buyer has owed an answer to the weight or the payment; None when it owes nothing now."""
    if t.status != DELIVERED:
        return None
    if t.acceptance == ACCEPTANCE_PENDING:
        return t.delivered_at
    if t.payment_status in UNPAID:
        return t.payment_requested_at
    return None


def overdue_at(t: TradeFacts, d: Deadlines) -> datetime | None:
    since = buyer_owes_since(t)
    return None if since is None else since + timedelta(seconds=d.payment_deadline_s)


def payment_overdue(t: TradeFacts, now: datetime, d: Deadlines) -> bool:
    """The deadline job's rule: the buyer has owed its answer or its money for `payment_deadline_s`."""
    at = overdue_at(t, d)
    return at is not None and now >= at


def collect_deadline(t: TradeFacts, d: Deadlines) -> datetime:
    return t.awarded_at + timedelta(seconds=d.collect_deadline_s)


def may_declare_default(t: TradeFacts, now: datetime, d: Deadlines) -> Refusal | None:
    """May the seller (or an admin) declare the buyer in default now? None: yes."""
    if t.status == AWARDED:
        due = collect_deadline(t, d)
        if now < due:
            return Refusal("deadline_not_passed", f"the buyer has until {due.isoformat()} to come and load")
        return None
    at = overdue_at(t, d)
    if at is None:
        return Refusal("not_in_default", f"the buyer owes nothing now (trade {t.status})")
    if now < at:
        return Refusal("deadline_not_passed", f"the buyer has until {at.isoformat()} to answer or pay")
    return None


def deadline_of(t: TradeFacts, d: Deadlines) -> datetime | None:
    """The deadline a refusal names: collecting (awarded) or answering and paying (delivered)."""
    return collect_deadline(t, d) if t.status == AWARDED else overdue_at(t, d)


def offer_lapsed(t: TradeFacts, now: datetime) -> bool:
    return t.status == OFFERED and t.offer_expires_at is not None and now >= t.offer_expires_at


def next_offer(bids: Iterable[BidFacts], reserve_fen_per_t: int, had_it: set[str]) -> BidFacts | None:
    """The best bid at or above reserve of a firm that has not had the lot yet (earliest on equal prices)."""
    return winner((b for b in bids if b.firm_id not in had_it), reserve_fen_per_t)


def forfeit_fee_fen(deposit_fen: int, fee_bps: int) -> int:
    """The platform's fee on a forfeited deposit: the same rate as on a sale, half-up to the fen."""
    return int((Decimal(deposit_fen) * fee_bps / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
