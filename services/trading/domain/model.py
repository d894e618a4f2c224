"""Lots and trades as state machines, and the quantities they carry. Pure: no I/O.

    lot:    open ──close (a winner)──▶ awarded ──(every buyer defaulted, declined or let its offer lapse)──▶ returned
              └──close (no bid at or above reserve)──▶ unsold

    trade:  awarded ──deliver──▶ delivered ──captured (the buyer paid)──▶ settled
              │                    │  ▲
              │    dispute (outside│  │ deliver again (a new weighbridge ticket)
              │    tolerance only) ▼  │
              │                  disputed
              └──(not collected: the seller declares; not paid in time: the deadline job)──▶ defaulted

    second-chance offer (a later round of the same lot, to the next-best bid after a default):
            offered ──accept──▶ awarded (then as above)
               ├──decline──▶ declined
               └──deadline──▶ lapsed

A delivery whose weight is outside the tolerance of the declared one needs the buyer's acceptance (`acceptance`
pending → accepted) before payment is requested; within the tolerance it needs none. While the buyer's payment is
under way the trade stays `delivered` (its `payment_status` says how far the payment is).

Every transition is checked against `TRANSITIONS`; anything else is a `Conflict` (409) naming the current state.
Quantities are integers in kilograms (a tonnage has 3 decimal places); money is integer fen.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation

from services.kernel.errors import Conflict

# --- lots ------------------------------------------------------------------------------------------------
LOT_OPEN, LOT_AWARDED, LOT_UNSOLD, LOT_RETURNED = "open", "awarded", "unsold", "returned"
LOT_STATUSES = (LOT_OPEN, LOT_AWARDED, LOT_UNSOLD, LOT_RETURNED)
SEALED, ASCENDING = "sealed", "ascending"
AUCTIONS = (SEALED, ASCENDING)
SOURCE_INTAKE, SOURCE_PURCHASE = "intake", "purchase"

# --- trades ----------------------------------------------------------------------------------------------
AWARDED = "awarded"
DELIVERED = "delivered"
DISPUTED = "disputed"
SETTLED = "settled"
DEFAULTED = "defaulted"  # the buyer did not collect or pay in time: its deposit is forfeited
OFFERED = "offered"  # a second-chance offer to the next-best bidder, waiting for its answer
DECLINED = "declined"  # ... refused
LAPSED = "lapsed"  # ... not answered in time
TRADE_STATUSES = (AWARDED, DELIVERED, DISPUTED, SETTLED, DEFAULTED, OFFERED, DECLINED, LAPSED)
# trades.acceptance: does the buyer have to accept the delivered weight?
ACCEPTANCE_NOT_REQUIRED, ACCEPTANCE_PENDING, ACCEPTED = "not_required", "pending", "accepted"

# action -> {from: to}
TRANSITIONS: dict[str, dict[str, str]] = {
    "close_awarded": {LOT_OPEN: LOT_AWARDED},
    "close_unsold": {LOT_OPEN: LOT_UNSOLD},
    "deliver": {AWARDED: DELIVERED, DISPUTED: DELIVERED},
    "accept_delivery": {DELIVERED: DELIVERED},
    "dispute_delivery": {DELIVERED: DISPUTED},
    "settle": {DELIVERED: SETTLED},
    "default": {AWARDED: DEFAULTED, DELIVERED: DEFAULTED},
    "accept_offer": {OFFERED: AWARDED},
    "decline_offer": {OFFERED: DECLINED},
    "lapse_offer": {OFFERED: LAPSED},
    "return_lot": {LOT_AWARDED: LOT_RETURNED},
}


def next_state(action: str, current: str) -> str:
    """The state `action` leads to from `current`, or Conflict (409) naming the current state."""
    to = TRANSITIONS[action].get(current)
    if to is None:
        raise Conflict(f"cannot {action.replace('_', ' ')} in state {current}", current_state=current)
    return to


# --- quantities ------------------------------------------------------------------------------------------
KG_PER_T = 1000
G_PER_KG = 1000


def tonnes_to_kg(value: str | int | Decimal) -> int:
    """A tonnage (at most 3 decimal places: kilogram precision) as whole kilograms; ValueError otherwise."""
    try:
        t = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not t.is_finite() or t.adjusted() >= 9:
        raise ValueError("not a tonnage")
    kg = t * KG_PER_T
    if kg != kg.to_integral_value():
        raise ValueError("at most 3 decimal places (kilograms)")
    return int(kg)


def kg_to_tonnes_str(kg: int) -> str:
    """Whole kilograms as a tonnage string with 3 places (`20500` → `"20.500"`)."""
    sign = "-" if kg < 0 else ""
    kg = abs(kg)
    return f"{sign}{kg // KG_PER_T}.{kg % KG_PER_T:03d}"


def grams_to_kg_floor(g: int) -> int:
    return g // G_PER_KG


def payment_request_id(trade_id: str) -> str:
    """The hold the buyer pays the trade with (deterministic: a re-sent request is the same payment)."""
    return f"hr_{trade_id}"


DEPOSIT_PREFIX = "hr_dep_"


def deposit_request_id(lot_id: str, firm_id: str) -> str:
    """The deposit hold of one firm on one lot: deterministic (one per firm and lot), short enough for any id
    column (a digest of both ids)."""
    return DEPOSIT_PREFIX + hashlib.sha256(f"{lot_id}:{firm_id}".encode()).hexdigest()[:32]


def trade_id_for(lot_id: str, round_no: int = 1) -> str:
    """One trade per lot and round: its id follows from the lot's (and the round's, for a second-chance offer
    after a default), so a close or a deadline run twice cannot make two."""
    base = "tr_" + lot_id.removeprefix("lot_")
    return base if round_no == 1 else f"{base}_r{round_no}"
