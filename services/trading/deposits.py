"""Deposits (保证金): a hold of the bidder's money through payments, required to bid when a lot asks for one.

    POST /v1/lots/{id}/deposit ─▶ HoldRequested(hr_dep_<lot>_<firm>, payer = the caller, the lot's deposit)
    payments: HoldOpened ─▶ the bidder confirms (POST /v1/payments/intents/<hold request id>/confirm)
    ─▶ HoldAuthorised: the deposit is `held` and the firm may bid
    at the close: every firm that did not win ─▶ HoldCancelRequested ─▶ HoldCancelled (`released`);
    the winner's deposit is given back the same way once its trade is settled;
    the winner defaults ─▶ HoldCaptureRequested (payee: the seller firm's owner, the fee) ─▶ HoldCaptured
    (`forfeit_requested` → `forfeited`): the seller is compensated for the failed sale (see docs/trading.md);
    if the provider let the hold go first (a lapsed authorisation), payments reports HoldCancelled and refuses the
    capture: `forfeit_requested` → `released`, and the trade forfeited nothing.

Each step is a conditional UPDATE on the deposit's status: a redelivered report changes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from services.contracts.payments import HoldCancelRequested, HoldCaptureRequested, HoldRequested
from services.kernel import idempotency
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import NotFound, RuleViolated
from services.kernel.runtime import ServiceRuntime

from .domain import model as m
from .handlers import acting_firm, firms_related, verified_firm
from .store import deposits, lots, trades

REQUESTED, OPENED, HELD, DECLINED = "requested", "opened", "held", "declined"
RELEASE_REQUESTED, RELEASED = "release_requested", "released"
FORFEIT_REQUESTED, FORFEITED = "forfeit_requested", "forfeited"
LIVE = (REQUESTED, OPENED, HELD, DECLINED)  # not yet given back

log = logging.getLogger(__name__)


def view(row: Any) -> dict[str, Any]:
    return {
        "hold_request_id": row.hold_request_id,
        "payment_id": row.hold_request_id,
        "lot_id": row.lot_id,
        "firm_id": row.firm_id,
        "amount_fen": row.amount_fen,
        "status": row.status,
        "forfeit_fee_fen": row.forfeit_fee_fen,
        "requested_at": row.requested_at,
        "updated_at": row.updated_at,
    }


def request_deposit(
    rt: ServiceRuntime, user: Principal, lot_id: str, firm_id: str | None, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/lots/{id}/deposit: ask payments to hold the lot's deposit of the caller (once per firm and lot)."""
    firm = acting_firm(user, firm_id)

    def write() -> dict[str, Any]:
        at = now or datetime.now(UTC)
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            lot = s.execute(select(lots).where(lots.c.id == lot_id)).one_or_none()
            if lot is None:
                raise NotFound(f"no lot with id {lot_id}")
            known = s.execute(
                select(deposits).where(deposits.c.lot_id == lot_id, deposits.c.firm_id == firm)
            ).first()
            if known is not None:
                idempotency.made(known.hold_request_id)
                return view(known)
            if lot.status != m.LOT_OPEN or at >= lot.ends_at:
                # ended and not yet closed by the job ("ended", as for a bid): no bid can follow, so no money
                # is held for one
                raise RuleViolated(
                    f"lot {lot_id} is closed",
                    current_state=lot.status if lot.status != m.LOT_OPEN else "ended",
                    reason="lot_closed",
                )
            if lot.deposit_fen <= 0:
                raise RuleViolated("this lot asks for no deposit", reason="no_deposit")
            if firm == lot.seller_firm_id:
                raise RuleViolated("a firm cannot bid on its own lot", reason="own_lot")
            if verified_firm(s, firm) is None:
                raise RuleViolated(f"firm {firm} is not a verified firm", reason="firm_unverified")
            if firms_related(s, lot.seller_firm_id, firm):
                raise RuleViolated("the firm is related to the seller", reason="related_firm")
            hold_request_id = idempotency.made(m.deposit_request_id(lot_id, firm))
            s.execute(
                insert(deposits).values(
                    hold_request_id=hold_request_id,
                    lot_id=lot_id,
                    firm_id=firm,
                    payer_user_id=user.user_id,
                    amount_fen=lot.deposit_fen,
                    status=REQUESTED,
                    requested_at=at,
                    updated_at=at,
                )
            )
            uow.emit(
                HoldRequested(
                    hold_request_id=hold_request_id,
                    payer_user_id=user.user_id,
                    amount_fen=lot.deposit_fen,
                    reference_id=lot_id,
                    requested_by="trading",
                    requested_at=at,
                )
            )
            return view(
                s.execute(select(deposits).where(deposits.c.hold_request_id == hold_request_id)).one()
            )

    return retry_on_conflict(write)


def deposit_requested(
    rt: ServiceRuntime, user: Principal, lot_id: str, firm_id: str | None, hold_request_id: str
) -> dict[str, Any]:
    """`request_deposit`'s reply for the deposit it asked for (its reply lost after the commit)."""
    firm = acting_firm(user, firm_id)
    with rt.db.session(readonly=True) as s:
        row = s.execute(
            select(deposits).where(
                deposits.c.hold_request_id == hold_request_id,
                deposits.c.lot_id == lot_id,
                deposits.c.firm_id == firm,
            )
        ).first()
    if row is None:
        raise NotFound(f"firm {firm} has no deposit {hold_request_id}")
    return view(row)


def get_deposit(rt: ServiceRuntime, user: Principal, lot_id: str, firm_id: str | None) -> dict[str, Any]:
    firm = acting_firm(user, firm_id)
    with rt.db.session(readonly=True) as s:
        row = s.execute(
            select(deposits).where(deposits.c.lot_id == lot_id, deposits.c.firm_id == firm)
        ).first()
    if row is None:
        raise NotFound(f"firm {firm} has no deposit on lot {lot_id}")
    return view(row)


def _step(uow: UnitOfWork, hold_request_id: str, from_: tuple[str, ...], to: str, now: datetime) -> Any:
    res = uow.session.execute(
        update(deposits)
        .where(deposits.c.hold_request_id == hold_request_id, deposits.c.status.in_(from_))
        .values(status=to, updated_at=now)
    )
    return res.rowcount == 1


def deposit_opened(uow: UnitOfWork, hold_request_id: str, now: datetime) -> None:
    _step(uow, hold_request_id, (REQUESTED,), OPENED, now)


def deposit_declined(uow: UnitOfWork, hold_request_id: str, now: datetime) -> None:
    _step(uow, hold_request_id, (REQUESTED, OPENED), DECLINED, now)


def deposit_authorised(uow: UnitOfWork, hold_request_id: str, now: datetime) -> None:
    """Held: the firm may bid. If the lot closed meanwhile (the bidder confirmed too late), give it back."""
    if not _step(uow, hold_request_id, (REQUESTED, OPENED, DECLINED), HELD, now):
        return
    row = uow.session.execute(
        select(deposits.c.lot_id).where(deposits.c.hold_request_id == hold_request_id)
    ).one()
    status = uow.session.execute(select(lots.c.status).where(lots.c.id == row.lot_id)).scalar()
    if status != m.LOT_OPEN:
        _release(uow, [hold_request_id], "the lot closed before the deposit was held", now)


def deposit_released(uow: UnitOfWork, hold_request_id: str, now: datetime) -> None:
    if _step(uow, hold_request_id, (RELEASE_REQUESTED, *LIVE), RELEASED, now):
        return
    # a forfeit payments could not take: the provider let the hold go first (a lapsed authorisation; its
    # HoldCaptureRefused follows). Nothing was taken, so the defaulted trade forfeited nothing either.
    if not _step(uow, hold_request_id, (FORFEIT_REQUESTED,), RELEASED, now):
        return
    row = uow.session.execute(select(deposits).where(deposits.c.hold_request_id == hold_request_id)).one()
    log.warning(
        "the forfeited deposit %s of firm %s on lot %s was released by the provider before it was captured",
        hold_request_id,
        row.firm_id,
        row.lot_id,
    )
    uow.session.execute(
        update(trades)
        .where(
            trades.c.lot_id == row.lot_id,
            trades.c.buyer_firm_id == row.firm_id,
            trades.c.status == m.DEFAULTED,
        )
        .values(deposit_forfeited_fen=0)
    )


def release_losers(uow: UnitOfWork, lot_id: str, winner_firm_id: str | None, now: datetime) -> int:
    """At the close: give back the deposit of every firm but the winner (held, or never confirmed)."""
    stmt = select(deposits.c.hold_request_id).where(deposits.c.lot_id == lot_id, deposits.c.status.in_(LIVE))
    if winner_firm_id is not None:
        stmt = stmt.where(deposits.c.firm_id != winner_firm_id)
    ids = list(uow.session.execute(stmt).scalars())
    return _release(uow, ids, "the lot closed: not the winner", now)


def release_winner(uow: UnitOfWork, lot_id: str, firm_id: str, now: datetime) -> int:
    """The trade is settled: the winner's deposit goes back too."""
    ids = list(
        uow.session.execute(
            select(deposits.c.hold_request_id).where(
                deposits.c.lot_id == lot_id, deposits.c.firm_id == firm_id, deposits.c.status.in_(LIVE)
            )
        ).scalars()
    )
    return _release(uow, ids, "the trade is settled", now)


def forfeit(
    uow: UnitOfWork, lot_id: str, firm_id: str, payee_user_id: str, fee_bps: int, now: datetime
) -> int:
    """The winner defaulted: its held deposit is captured for the seller (`payee_user_id`) less the platform's fee;
    one not yet held is given back (there is nothing to take). Returns the amount forfeited (0: none held)."""
    from .domain.defaults import forfeit_fee_fen

    row = uow.session.execute(
        select(deposits).where(deposits.c.lot_id == lot_id, deposits.c.firm_id == firm_id)
    ).first()
    if row is None:
        return 0
    if row.status != HELD:
        _release(uow, [row.hold_request_id], "the buyer defaulted before its deposit was held", now)
        return 0
    fee = forfeit_fee_fen(row.amount_fen, fee_bps)
    res = uow.session.execute(
        update(deposits)
        .where(deposits.c.hold_request_id == row.hold_request_id, deposits.c.status == HELD)
        .values(status=FORFEIT_REQUESTED, forfeit_fee_fen=fee, updated_at=now)
    )
    if res.rowcount != 1:
        return 0
    uow.emit(
        HoldCaptureRequested(
            hold_request_id=row.hold_request_id,
            payee_user_id=payee_user_id,
            payee_kind="firm",
            fee_fen=fee,
            requested_by="trading",
            requested_at=now,
        )
    )
    return row.amount_fen


def deposit_forfeited(uow: UnitOfWork, hold_request_id: str, now: datetime) -> None:
    _step(uow, hold_request_id, (FORFEIT_REQUESTED,), FORFEITED, now)


def _release(uow: UnitOfWork, ids: list[str], reason: str, now: datetime) -> int:
    done = 0
    for hold_request_id in ids:
        if _step(uow, hold_request_id, LIVE, RELEASE_REQUESTED, now):
            uow.emit(
                HoldCancelRequested(
                    hold_request_id=hold_request_id, reason=reason, requested_by="trading", requested_at=now
                )
            )
            done += 1
    return done
