"""Settlement: once the delivered weight stands (within the tolerance, or accepted by the buyer), the buyer pays
the amount on the weighbridge weight and the seller is paid that less the platform's fee.

Money moves through payments over the bus (contracts.payments, topic `payments.hold`), the way booking asks for
payouts, so it works the same when trading and payments run in different processes:

    request_payment ─▶ HoldRequested(hr_<trade>, payer = the buyer firm's owner, amount)
    payments: HoldOpened ─▶ the buyer confirms (POST /v1/payments/intents/hr_<trade>/confirm) ─▶ HoldAuthorised
    ─▶ HoldCaptureRequested(payee = the seller firm's owner, payee_kind "firm", fee) ─▶ HoldCaptured
    ─▶ the trade is settled: TradeSettled (pricing, stats), the winner's deposit is given back

Each step happens once: the hold request id follows from the trade; every step is a conditional UPDATE on the
trade's `payment_status`, so a redelivered report (or two at once) finds the step taken and does nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from services.contracts.payments import HoldCaptureRequested, HoldRequested
from services.contracts.trading import TradeSettled
from services.kernel.db import UnitOfWork

from .domain import model as m
from .store import firms, trades

REQUESTED_BY = "trading"
# trades.payment_status: requested → awaiting_payer → authorised (capture asked) → captured; declined: try again
PAY_REQUESTED, PAY_AWAITING, PAY_DECLINED = "requested", "awaiting_payer", "declined"
PAY_AUTHORISED, PAY_CAPTURED = "authorised", "captured"
PAY_CANCELLED = (
    "cancelled"  # the buyer defaulted: the payment was closed (a late authorisation is given back)
)


def owner_of(s: Any, firm_id: str) -> str:
    owner = s.execute(select(firms.c.owner_user_id).where(firms.c.firm_id == firm_id)).scalar()
    if owner is None:
        raise RuntimeError(f"firm {firm_id} is not in trading's copy of verified firms")
    return owner


def request_payment(uow: UnitOfWork, trade_id: str, now: datetime) -> bool:
    """Ask payments for the buyer's money for a delivered trade whose weight stands (once)."""
    s = uow.session
    hold_request_id = m.payment_request_id(trade_id)
    res = s.execute(
        update(trades)
        .where(trades.c.id == trade_id, trades.c.status == m.DELIVERED, trades.c.payment_request_id.is_(None))
        .values(
            payment_request_id=hold_request_id,
            payment_status=PAY_REQUESTED,
            payment_requested_at=now,
            version=trades.c.version + 1,
        )
    )
    if res.rowcount != 1:
        return False
    t = s.execute(select(trades).where(trades.c.id == trade_id)).one()
    uow.emit(
        HoldRequested(
            hold_request_id=hold_request_id,
            payer_user_id=owner_of(s, t.buyer_firm_id),
            amount_fen=t.amount_fen,
            reference_id=trade_id,
            requested_by=REQUESTED_BY,
            requested_at=now,
        )
    )
    return True


def _step(uow: UnitOfWork, hold_request_id: str, from_: tuple[str, ...], to: str, **values: Any) -> Any:
    """Move the trade paid by `hold_request_id` from one payment step to the next; None if it is not ours or the
    step was taken already."""
    s = uow.session
    res = s.execute(
        update(trades)
        .where(trades.c.payment_request_id == hold_request_id, trades.c.payment_status.in_(from_))
        .values(payment_status=to, version=trades.c.version + 1, **values)
    )
    if res.rowcount != 1:
        return None
    return s.execute(select(trades).where(trades.c.payment_request_id == hold_request_id)).one()


def payment_opened(uow: UnitOfWork, hold_request_id: str, payment_id: str) -> None:
    _step(uow, hold_request_id, (PAY_REQUESTED,), PAY_AWAITING, payment_id=payment_id)


def payment_declined(uow: UnitOfWork, hold_request_id: str) -> None:
    _step(uow, hold_request_id, (PAY_REQUESTED, PAY_AWAITING), PAY_DECLINED)


def payment_authorised(uow: UnitOfWork, hold_request_id: str, now: datetime) -> None:
    """The buyer's money is held: capture it and release it to the seller less the fee."""
    t = _step(uow, hold_request_id, (PAY_REQUESTED, PAY_AWAITING, PAY_DECLINED), PAY_AUTHORISED)
    if t is None:
        return
    uow.emit(
        HoldCaptureRequested(
            hold_request_id=hold_request_id,
            payee_user_id=owner_of(uow.session, t.seller_firm_id),
            payee_kind="firm",
            fee_fen=t.fee_fen or 0,
            requested_by=REQUESTED_BY,
            requested_at=now,
        )
    )


def payment_captured(uow: UnitOfWork, hold_request_id: str, payout_id: str, now: datetime) -> str | None:
    """The buyer paid and the seller is being paid: the trade is settled. Returns its id (None if not ours)."""
    t = _step(
        uow,
        hold_request_id,
        (PAY_AUTHORISED,),
        PAY_CAPTURED,
        payout_id=payout_id,
        settled_at=now,
        status=m.next_state("settle", m.DELIVERED),
    )
    if t is None:
        return None
    uow.emit(
        TradeSettled(
            trade_id=t.id,
            lot_id=t.lot_id,
            seller_firm_id=t.seller_firm_id,
            buyer_firm_id=t.buyer_firm_id,
            category=t.category,
            grade=t.grade,
            city_code=t.city_code,
            related_party=t.related_party,
            delivered_t=m.kg_to_tonnes_str(t.delivered_kg),
            price_fen_per_t=t.price_fen_per_t,
            amount_fen=t.amount_fen,
            fee_fen=t.fee_fen or 0,
            settled_at=now,
        )
    )
    return t.id
