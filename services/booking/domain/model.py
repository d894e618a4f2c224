"""The pickup (上门回收订单) as a state machine, and the rules that need no I/O.

    requested ──accept──▶ accepted ──arrive──▶ arrived ──weigh──▶ weighed ──settle──▶ settled
        │                    │                    │                 │  ▲
        │ cancel / expire    │ cancel / no_show   │ no_show         │  │ weigh again
        │ (reschedule)       │                    │                 │  │
        ▼                    ▼                    ▼                 ▼  │
    cancelled, expired    cancelled, no_show    no_show, cancelled  disputed ──cancel (admin)──▶ cancelled

Every transition the service makes is checked against `TRANSITIONS`; anything else is a `Conflict` (409) that
names the current state. Time rules (cut-offs, waits) are separate: they refuse with 422 and a reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from decimal import Decimal

from services.kernel.errors import Conflict, RuleViolated

REQUESTED = "requested"
ACCEPTED = "accepted"
ARRIVED = "arrived"
WEIGHED = "weighed"
DISPUTED = "disputed"
SETTLED = "settled"
CANCELLED = "cancelled"
EXPIRED = "expired"
NO_SHOW = "no_show"

STATUSES = (REQUESTED, ACCEPTED, ARRIVED, WEIGHED, DISPUTED, SETTLED, CANCELLED, EXPIRED, NO_SHOW)
TERMINAL = frozenset({SETTLED, CANCELLED, EXPIRED, NO_SHOW})

# action -> {from state: to state}
TRANSITIONS: dict[str, dict[str, str]] = {
    "accept": {REQUESTED: ACCEPTED},
    "arrive": {ACCEPTED: ARRIVED},
    "weigh": {ARRIVED: WEIGHED, WEIGHED: WEIGHED, DISPUTED: WEIGHED},
    "settle": {WEIGHED: SETTLED},
    "dispute": {WEIGHED: DISPUTED},
    "cancel": {REQUESTED: CANCELLED, ACCEPTED: CANCELLED},
    "reschedule": {REQUESTED: REQUESTED},
    "admin_cancel": {
        REQUESTED: CANCELLED,
        ACCEPTED: CANCELLED,
        ARRIVED: CANCELLED,
        WEIGHED: CANCELLED,
        DISPUTED: CANCELLED,
    },
    "expire": {REQUESTED: EXPIRED},
    "no_show": {ACCEPTED: NO_SHOW, ARRIVED: NO_SHOW},
}
# every edge any action may take (the property tests check observed changes against this)
EDGES = frozenset((a, b) for t in TRANSITIONS.values() for a, b in t.items())
# states in which the pickup holds its places in the slots of its window
HOLDS_CAPACITY = frozenset({REQUESTED, ACCEPTED})

# payout.status (public): pending → paid | failed; not_required when nothing is owed
PAYOUT_PENDING, PAYOUT_PAID, PAYOUT_FAILED, PAYOUT_NOT_REQUIRED = "pending", "paid", "failed", "not_required"
# where the saga waits for invoicing
INVOICE_AWAITING, INVOICE_ISSUED, INVOICE_BLOCKED = "awaiting", "issued", "blocked"
INVOICE_TIMED_OUT, INVOICE_SKIPPED, INVOICE_ISSUED_LATE = "timed_out", "skipped", "issued_late"


def next_state(action: str, current: str) -> str:
    """The state `action` leads to from `current`, or Conflict (409) naming the current state."""
    to = TRANSITIONS[action].get(current)
    if to is None:
        raise Conflict(f"cannot {action.replace('_', ' ')} a pickup that is {current}", current_state=current)
    return to


def payout_id_for(pickup_id: str, attempt: int = 1) -> str:
    """Deterministic: the first payout of a pickup is always `po_<pickup id>`, retry n is `po_<pickup id>_n`."""
    base = "po_" + pickup_id
    return base if attempt == 1 else f"{base}_{attempt}"


# --- time windows ----------------------------------------------------------------------------------


def check_window(
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    tz: tzinfo,
    opens: time,
    closes: time,
    slot_minutes: int,
    max_slots: int,
    min_lead_minutes: int,
    max_days_ahead: int,
) -> list[datetime]:
    """The slot starts (UTC-aware) a window covers, or RuleViolated saying which rule it breaks.

    A window starts and ends on slot boundaries of the local day, inside service hours, 1..max_slots slots long,
    at least `min_lead_minutes` from now and at most `max_days_ahead` days ahead.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise RuleViolated(
            "window times need an offset (RFC 3339), e.g. 2026-05-01T09:00:00+08:00",
            reason="window_offset_missing",
            field="window",
        )
    ls, le = start.astimezone(tz), end.astimezone(tz)
    if le <= ls:
        raise RuleViolated("the window must end after it starts", reason="window_order", field="window.end")
    for name, t in (("start", ls), ("end", le)):
        if (t.hour * 60 + t.minute) % slot_minutes or t.second or t.microsecond:
            raise RuleViolated(
                f"window {name} must fall on a {slot_minutes}-minute slot boundary",
                reason="window_not_on_slot",
                field=f"window.{name}",
            )
    if ls.date() != le.date() or ls.time() < opens or le.time() > closes:
        raise RuleViolated(
            f"service hours are {opens:%H:%M}–{closes:%H:%M} ({tz.key}), one day per window",
            reason="outside_service_hours",
            field="window",
        )
    n = int((le - ls).total_seconds() // 60) // slot_minutes
    if n > max_slots:
        raise RuleViolated(
            f"a window may span at most {max_slots * slot_minutes} minutes",
            reason="window_too_long",
            field="window",
        )
    if start < now + timedelta(minutes=min_lead_minutes):
        raise RuleViolated(
            f"the window must start at least {min_lead_minutes} minutes from now",
            reason="window_too_soon",
            field="window.start",
        )
    if start > now + timedelta(days=max_days_ahead):
        raise RuleViolated(
            f"bookings open at most {max_days_ahead} days ahead",
            reason="window_too_far",
            field="window.start",
        )
    s_utc = start.astimezone(UTC)
    return [s_utc + timedelta(minutes=slot_minutes * i) for i in range(n)]


def qty_allowed(unit: str, qty: Decimal) -> bool:
    """Pieces (件) are whole numbers; kilograms have at most 3 places (parse_qty has checked)."""
    return unit != "piece" or qty == qty.to_integral_value()


def needs_reason(estimate: dict[str, Decimal], weighed: dict[str, Decimal], threshold_pct: int) -> bool:
    """Weighed quantities this far from the estimate (any category, or a category added or left out) must say
    why; the scale reading is kept either way."""
    for code in set(estimate) | set(weighed):
        est, final = estimate.get(code, Decimal(0)), weighed.get(code, Decimal(0))
        if abs(final - est) * 100 > threshold_pct * est:
            return True
    return False
