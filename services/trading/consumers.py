"""Which events trading listens to, and the handlers that keep its own copies of other services' facts.

Groups (each its own offsets):
- `trading.accounts`  accounts.firm FirmVerified (who may trade, whose user pays or is paid for the firm);
                      accounts.user RolesChanged (who acts for which firm: related parties);
- `trading.intake`    booking.pickup PickupSettled (the firm's intake: its collectors' settled pickups, by line);
- `trading.payments`  payments.hold reports on the holds trading asked for: deposits (`hr_dep_…`, deposits.py;
                      captured only when forfeited by a defaulted buyer) and the buyers' payments of trades
                      (`hr_tr_…`, settlement.py). Trading never asks for a cancel after a capture nor a capture
                      after a cancel (conditional updates on the deposit's and the trade's rows), so payments'
                      refusals are logged: a forfeit refused because the authorisation lapsed was released by the
                      HoldCancelled before it; any other refusal is a bug for an operator.

Every handler is idempotent on its own (upserts keyed by the fact's id), on top of the consumer's inbox.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import delete, insert, select, update

from services.contracts.accounts import FirmVerified, RolesChanged
from services.contracts.booking import PickupSettled
from services.contracts.payments import (
    HoldAuthorised,
    HoldCancelled,
    HoldCancelRefused,
    HoldCaptured,
    HoldCaptureRefused,
    HoldDeclined,
    HoldOpened,
)
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime

from . import deposits, settlement
from .domain.model import DEPOSIT_PREFIX
from .store import firm_members, firms, intake, trades

log = logging.getLogger(__name__)


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        group(
            "trading.accounts",
            {FirmVerified: when_firm_verified_keep_firm, RolesChanged: when_roles_changed_keep_firm_members},
        ),
        group("trading.intake", {PickupSettled: when_pickup_settled_record_intake}),
        group(
            "trading.payments",
            {
                HoldOpened: when_hold_opened_record,
                HoldDeclined: when_hold_declined_record,
                HoldAuthorised: when_hold_authorised_go_on,
                HoldCaptured: when_hold_captured_settle_trade_or_forfeit_deposit,
                HoldCancelled: when_hold_cancelled_release_deposit,
                HoldCaptureRefused: when_hold_capture_refused_log,
                HoldCancelRefused: when_hold_cancel_refused_log,
            },
        ),
    ]


def when_firm_verified_keep_firm(event: FirmVerified, uow: UnitOfWork) -> None:
    s, now = uow.session, datetime.now(UTC)
    values = dict(
        owner_user_id=event.owner_user_id,
        name=event.name,
        city_code=event.city_code,
        verified_at=event.verified_at,
        updated_at=now,
    )
    if not s.execute(update(firms).where(firms.c.firm_id == event.firm_id).values(**values)).rowcount:
        s.execute(insert(firms).values(firm_id=event.firm_id, **values))
    _add_member(uow, event.owner_user_id, event.firm_id)


def when_roles_changed_keep_firm_members(event: RolesChanged, uow: UnitOfWork) -> None:
    """The firms a user acts for now (owner, accountant, collector): replaces what we knew of that user."""
    s = uow.session
    now_for = set(event.firm_ids)
    known = set(
        s.execute(select(firm_members.c.firm_id).where(firm_members.c.user_id == event.user_id)).scalars()
    )
    gone = known - now_for
    if gone:
        s.execute(
            delete(firm_members).where(
                firm_members.c.user_id == event.user_id, firm_members.c.firm_id.in_(gone)
            )
        )
    for firm_id in sorted(now_for - known):
        s.execute(insert(firm_members).values(user_id=event.user_id, firm_id=firm_id))


def _add_member(uow: UnitOfWork, user_id: str, firm_id: str) -> None:
    s = uow.session
    if (
        s.execute(
            select(firm_members.c.user_id).where(
                firm_members.c.user_id == user_id, firm_members.c.firm_id == firm_id
            )
        ).first()
        is None
    ):
        s.execute(insert(firm_members).values(user_id=user_id, firm_id=firm_id))


def when_pickup_settled_record_intake(event: PickupSettled, uow: UnitOfWork) -> None:
    """Each weighed line (kg) of a settled pickup is intake of the collector's firm (grams, kept whole)."""
    s = uow.session
    if s.execute(select(intake.c.pickup_id).where(intake.c.pickup_id == event.pickup_id).limit(1)).first():
        return
    rows = []
    for i, line in enumerate(event.lines):
        if line.unit != "kg":
            continue
        qty_g = int(Decimal(line.qty) * 1000)
        if qty_g <= 0:
            continue
        rows.append(
            dict(
                pickup_id=event.pickup_id,
                line_no=i,
                firm_id=event.firm_id,
                category=line.category,
                qty_g=qty_g,
                allocated_g=0,
                city_code=event.city_code,
                collector_id=event.collector_id,
                settled_at=event.settled_at,
            )
        )
    if rows:
        s.execute(insert(intake), rows)


def _is_deposit(hold_request_id: str) -> bool:
    return hold_request_id.startswith(DEPOSIT_PREFIX)


def when_hold_opened_record(event: HoldOpened, uow: UnitOfWork) -> None:
    if _is_deposit(event.hold_request_id):
        deposits.deposit_opened(uow, event.hold_request_id, datetime.now(UTC))
    else:
        settlement.payment_opened(uow, event.hold_request_id, event.payment_id)


def when_hold_declined_record(event: HoldDeclined, uow: UnitOfWork) -> None:
    if _is_deposit(event.hold_request_id):
        deposits.deposit_declined(uow, event.hold_request_id, datetime.now(UTC))
    else:
        settlement.payment_declined(uow, event.hold_request_id)


def when_hold_authorised_go_on(event: HoldAuthorised, uow: UnitOfWork) -> None:
    """A deposit held lets the firm bid; a buyer's payment held is captured for the seller."""
    if _is_deposit(event.hold_request_id):
        deposits.deposit_authorised(uow, event.hold_request_id, datetime.now(UTC))
    else:
        settlement.payment_authorised(uow, event.hold_request_id, datetime.now(UTC))


def when_hold_captured_settle_trade_or_forfeit_deposit(event: HoldCaptured, uow: UnitOfWork) -> None:
    """The buyer's payment captured settles its trade; a deposit captured is a defaulted buyer's, forfeited."""
    now = datetime.now(UTC)
    if _is_deposit(event.hold_request_id):
        deposits.deposit_forfeited(uow, event.hold_request_id, now)
        return
    trade_id = settlement.payment_captured(uow, event.hold_request_id, event.payout_id, now)
    if trade_id is not None:
        t = uow.session.execute(
            select(trades.c.lot_id, trades.c.buyer_firm_id).where(trades.c.id == trade_id)
        ).one()
        deposits.release_winner(uow, t.lot_id, t.buyer_firm_id, now)


def when_hold_cancelled_release_deposit(event: HoldCancelled, uow: UnitOfWork) -> None:
    if _is_deposit(event.hold_request_id):
        deposits.deposit_released(uow, event.hold_request_id, datetime.now(UTC))


def when_hold_capture_refused_log(event: HoldCaptureRefused, uow: UnitOfWork) -> None:
    if _is_deposit(event.hold_request_id) and event.reason == "authorisation_lapsed":
        log.warning("deposit %s could not be forfeited: the authorisation lapsed", event.hold_request_id)
        return
    log.error(
        "payments refused to capture hold request %s (reference %s): %s, it is %s",
        event.hold_request_id,
        event.reference_id,
        event.reason,
        event.current_state,
    )


def when_hold_cancel_refused_log(event: HoldCancelRefused, uow: UnitOfWork) -> None:
    log.error(
        "payments refused to give back hold request %s (reference %s): %s, it is %s",
        event.hold_request_id,
        event.reference_id,
        event.reason,
        event.current_state,
    )
