"""The settlement saga: PickupSettled → (invoicing) InvoiceIssued | InvoiceBlocked | time-out → PayoutRequested
→ (payments) PayoutPaid | PayoutFailed → retry under a new payout id.

Money moves at most once per step however often anything is retried or redelivered:
- the consumer inbox drops a redelivered event (same event id);
- the invoice step closes with a conditional UPDATE (`WHERE invoice_status = 'awaiting' AND payout_attempts = 0`),
  so a second answer (a re-published event, a late answer after the time-out, the time-out racing an answer)
  changes nothing;
- each payout id is a primary key of `payouts`: requesting it twice fails the transaction;
- payout ids are deterministic (`po_<pickup>`, then `po_<pickup>_<n>` for retries), so payments, which pays each
  id at most once, recognises a re-sent request.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from services.contracts.invoicing import InvoiceBlocked, InvoiceIssued
from services.contracts.payments import PayoutFailed, PayoutPaid, PayoutRequested
from services.kernel.db import UnitOfWork

from .domain import model as m
from .store import payouts, pickups

log = logging.getLogger(__name__)


def start_payout(
    uow: UnitOfWork,
    pickup_id: str,
    *,
    withheld_fen: int,
    invoice_status: str,
    invoice_id: str | None,
    now: datetime,
    expect: str = m.INVOICE_AWAITING,
) -> bool:
    """Close the invoice step (only if it is still `expect`) and request gross − withheld. False if it was closed."""
    s = uow.session
    row = s.execute(select(pickups).where(pickups.c.id == pickup_id)).one_or_none()
    if row is None or row.status != m.SETTLED:
        return False
    gross = row.weighed_total_fen or 0
    withheld = max(withheld_fen, 0)
    net = max(gross - withheld, 0)
    res = s.execute(
        update(pickups)
        .where(pickups.c.id == pickup_id, pickups.c.invoice_status == expect, pickups.c.payout_attempts == 0)
        .values(
            invoice_status=invoice_status,
            invoice_id=invoice_id,
            withheld_fen=withheld,
            payout_amount_fen=net,
            version=pickups.c.version + 1,
            updated_at=now,
        )
    )
    if res.rowcount != 1:
        return False
    request_payout(uow, row, net, 1, now)
    return True


def request_payout(uow: UnitOfWork, row: Any, amount_fen: int, attempt: int, now: datetime) -> None:
    """Ask payments to pay the resident `amount_fen` under the deterministic id of this attempt."""
    s = uow.session
    if amount_fen <= 0:  # nothing owed (glass, batteries, bulky items only; or all withheld)
        s.execute(
            update(pickups)
            .where(pickups.c.id == row.id)
            .values(payout_id=None, payout_status=m.PAYOUT_NOT_REQUIRED, payout_amount_fen=0)
        )
        return
    payout_id = m.payout_id_for(row.id, attempt)
    s.execute(
        payouts.insert().values(
            payout_id=payout_id,
            pickup_id=row.id,
            attempt=attempt,
            payee_user_id=row.resident_id,
            amount_fen=amount_fen,
            status="requested",
            requested_at=now,
        )
    )
    s.execute(
        update(pickups)
        .where(pickups.c.id == row.id)
        .values(
            payout_id=payout_id,
            payout_status=m.PAYOUT_PENDING,
            payout_attempts=attempt,
            payout_amount_fen=amount_fen,
            payout_reason=None,
        )
    )
    uow.emit(
        PayoutRequested(
            payout_id=payout_id,
            payee_user_id=row.resident_id,
            amount_fen=amount_fen,
            purpose="pickup",
            reference_id=row.id,
            requested_by="booking",
            requested_at=now,
        )
    )


# --- consumers (group booking.saga, wired in consumers.py) ---------------------------------------------------------------------


def when_invoice_issued_request_payout(event: InvoiceIssued, uow: UnitOfWork) -> None:
    if event.kind != "blue":
        return  # a red-letter invoice offsets an earlier one; it does not move this pickup's payout
    now = datetime.now(UTC)
    if start_payout(
        uow,
        event.pickup_id,
        withheld_fen=event.withheld_fen,
        invoice_status=m.INVOICE_ISSUED,
        invoice_id=event.invoice_id,
        now=now,
    ):
        return
    # Already answered (a duplicate), or the time-out paid gross before the invoice came: keep what was
    # withheld on record for reconciliation (the resident was paid that much too much).
    res = uow.session.execute(
        update(pickups)
        .where(pickups.c.id == event.pickup_id, pickups.c.invoice_status == m.INVOICE_TIMED_OUT)
        .values(
            invoice_status=m.INVOICE_ISSUED_LATE,
            invoice_id=event.invoice_id,
            reconcile_fen=event.withheld_fen,
            version=pickups.c.version + 1,
            updated_at=now,
        )
    )
    if res.rowcount:
        log.warning(
            "invoice %s for pickup %s came after the time-out paid gross; %s fen withheld to reconcile",
            event.invoice_id,
            event.pickup_id,
            event.withheld_fen,
        )


def when_invoice_blocked_request_payout(event: InvoiceBlocked, uow: UnitOfWork) -> None:
    """No invoice can be issued now: nothing is withheld, the resident is paid gross."""
    start_payout(
        uow,
        event.pickup_id,
        withheld_fen=0,
        invoice_status=m.INVOICE_BLOCKED,
        invoice_id=event.invoice_id,
        now=datetime.now(UTC),
    )


def when_payout_paid_record(event: PayoutPaid, uow: UnitOfWork) -> None:
    _resolve(uow, event.payout_id, "paid", ("requested",), datetime.now(UTC), provider_ref=event.provider_ref)


def when_payout_failed_record(event: PayoutFailed, uow: UnitOfWork) -> None:
    """Failed, or returned after being paid (payments reversed its ledger): the resident may retry."""
    _resolve(uow, event.payout_id, "failed", ("requested", "paid"), datetime.now(UTC), reason=event.reason)


def _resolve(
    uow: UnitOfWork, payout_id: str, status: str, from_: tuple[str, ...], now: datetime, **values: Any
) -> None:
    s = uow.session
    pickup_id = s.execute(select(payouts.c.pickup_id).where(payouts.c.payout_id == payout_id)).scalar()
    if pickup_id is None:
        return  # not one of booking's payouts
    res = s.execute(
        update(payouts)
        .where(payouts.c.payout_id == payout_id, payouts.c.status.in_(from_))
        .values(status=status, resolved_at=now, **values)
    )
    if res.rowcount != 1:
        return
    s.execute(
        update(pickups)
        .where(pickups.c.id == pickup_id, pickups.c.payout_id == payout_id)
        .values(
            payout_status=status,
            payout_reason=values.get("reason"),
            version=pickups.c.version + 1,
            updated_at=now,
        )
    )
