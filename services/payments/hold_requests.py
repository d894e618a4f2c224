"""Holds that other services ask for over the bus (contracts.payments), for escrow (listings' orders) and deposits.

    HoldRequested ─▶ open: the payment waits for its payer (HoldOpened)
    payer confirms (POST /v1/payments/intents/{id}/confirm) ─▶ authorise ─▶ HoldAuthorised | HoldDeclined (retry)
    HoldCaptureRequested ─▶ capture + release to the payee less the fee ─▶ HoldCaptured (+ payout events)
    HoldCancelRequested ─▶ close the payment / release the hold / refund the capture ─▶ HoldCancelled | HoldRefunded

Each step acts once: the request id is the primary key; the hold is authorised under the command id
`hr:<request>:<declines so far>` (a retried or concurrent confirm is the same authorisation; after a decline the
next try is a new one); capture, release, cancel and refund use command ids derived from the request, so a
redelivered request is answered from payments' command log; every transition of the request row is a
conditional UPDATE on its locked row.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from services.contracts.payments import (
    HoldAuthorised,
    HoldCancelled,
    HoldCancelRequested,
    HoldCaptured,
    HoldCaptureRequested,
    HoldDeclined,
    HoldOpened,
    HoldRefunded,
    HoldRequested,
)
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import Conflict, Forbidden, NotFound
from services.kernel.ports import Port

from .domain.model import HoldStatus
from .handlers import Payments
from .store import hold_requests

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

log = logging.getLogger(__name__)

WAITING = "requires_payment_method"
HELD = "requires_capture"
CAPTURED, CANCELLED, REFUNDED = "captured", "cancelled", "refunded"


def _now() -> datetime:
    return datetime.now(UTC)


def view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "amount_fen": int(row.amount_fen),
        "reference_id": row.reference_id,
        "hold_id": row.hold_id,
        "decline_code": row.decline_code,
        "decline_message": row.decline_message,
        "client_secret": row.client_secret,
    }


class HoldRequests:
    def __init__(self, payments: Payments):
        self.payments = payments
        self.db = payments.db

    # --- the payer -------------------------------------------------------------------------------------------
    def get(self, request_id: str, user_id: str, admin: bool = False) -> dict[str, Any]:
        with self.db.session(readonly=True) as s:
            row = s.execute(select(hold_requests).where(hold_requests.c.id == request_id)).first()
        if row is None or (row.payer_user_id != user_id and not admin):
            raise NotFound(f"no payment with id {request_id}")
        return view(row)

    def confirm(self, request_id: str, user_id: str, payment_method: str) -> dict[str, Any]:
        """The payer pays with `payment_method`: the money is held (`requires_capture`) or the method is declined
        (`requires_payment_method` again, with the decline code)."""
        with self.db.session(readonly=True) as s:
            row = s.execute(select(hold_requests).where(hold_requests.c.id == request_id)).first()
        if row is None:
            raise NotFound(f"no payment with id {request_id}")
        if row.payer_user_id != user_id:
            raise Forbidden("only the payer confirms a payment", reason="not_payer")
        if row.status in (HELD, CAPTURED):
            return view(row)  # confirmed already
        if row.status != WAITING:
            raise Conflict(f"the payment is {row.status}", current_state=row.status)
        declines = int(row.declines)
        hold = self.payments.authorise(
            command_id=f"hr:{request_id}:{declines}",
            payer_user_id=user_id,
            amount_fen=int(row.amount_fen),
            payment_method=payment_method,
            reference_id=row.reference_id,
        )

        def record() -> dict[str, Any]:
            with UnitOfWork(self.db) as uow:
                s = uow.session
                cur = s.execute(
                    select(hold_requests).where(hold_requests.c.id == request_id).with_for_update()
                ).one()
                now = _now()
                if cur.status == WAITING and int(cur.declines) == declines:
                    if hold.status == HoldStatus.AUTHORISED:
                        s.execute(
                            update(hold_requests)
                            .where(hold_requests.c.id == request_id)
                            .values(
                                status=HELD,
                                hold_id=hold.id,
                                decline_code=None,
                                decline_message=None,
                                updated_at=now,
                            )
                        )
                        uow.emit(
                            HoldAuthorised(
                                hold_request_id=request_id,
                                hold_id=hold.id,
                                amount_fen=hold.amount_fen,
                                reference_id=cur.reference_id,
                                authorised_at=now,
                            )
                        )
                    else:
                        code = hold.decline_code or "card_declined"
                        s.execute(
                            update(hold_requests)
                            .where(hold_requests.c.id == request_id)
                            .values(
                                declines=declines + 1,
                                decline_code=code,
                                decline_message=hold.decline_message,
                                updated_at=now,
                            )
                        )
                        uow.emit(
                            HoldDeclined(
                                hold_request_id=request_id,
                                reference_id=cur.reference_id,
                                decline_code=code,
                                reason=hold.decline_message or code,
                                declined_at=now,
                            )
                        )
                elif cur.status == CANCELLED and hold.status == HoldStatus.AUTHORISED and cur.hold_id is None:
                    # closed while the payer was paying: let the money go at once
                    self.payments.cancel_in(uow, command_id=f"hr:{request_id}:cancel-late", hold_id=hold.id)
                    s.execute(
                        update(hold_requests)
                        .where(hold_requests.c.id == request_id)
                        .values(hold_id=hold.id, updated_at=now)
                    )
                    return {**view(cur), "late": True}
                return view(s.execute(select(hold_requests).where(hold_requests.c.id == request_id)).one())

        out = retry_on_conflict(record)
        if out.pop("late", False):
            raise Conflict(
                "the payment was cancelled while it was being confirmed; nothing was taken",
                current_state=CANCELLED,
            )
        return out

    # --- what the consumers (group payments.holds, consumers.py) do ----------------------------------------------------------------------
    def open_requested(self, uow: UnitOfWork, event: HoldRequested) -> None:
        s = uow.session
        if s.execute(select(hold_requests.c.id).where(hold_requests.c.id == event.hold_request_id)).first():
            return
        now = _now()
        s.execute(
            insert(hold_requests).values(
                id=event.hold_request_id,
                payer_user_id=event.payer_user_id,
                amount_fen=event.amount_fen,
                reference_id=event.reference_id,
                requested_by=event.requested_by,
                status=WAITING,
                declines=0,
                client_secret=None,
                created_at=now,
                updated_at=now,
            )
        )
        uow.emit(
            HoldOpened(
                hold_request_id=event.hold_request_id,
                payment_id=event.hold_request_id,
                client_secret=None,
                amount_fen=event.amount_fen,
                reference_id=event.reference_id,
                opened_at=now,
            )
        )

    def settle_requested(self, uow: UnitOfWork, event: HoldCaptureRequested) -> None:
        s = uow.session
        row = self._locked(uow, event.hold_request_id)
        if row.status == CAPTURED:
            return
        if row.status != HELD:
            log.error("capture of hold request %s refused: it is %s", row.id, row.status)
            return
        p = self.payments
        hold = p.capture_in(uow, command_id=f"hr:{row.id}:capture", hold_id=row.hold_id)
        payout, _ = p.release_in(
            uow,
            command_id=f"hr:{row.id}:release",
            hold_id=row.hold_id,
            payee_user_id=event.payee_user_id,
            payee_kind=event.payee_kind,
            fee_fen=event.fee_fen,
        )
        now = _now()
        s.execute(
            update(hold_requests).where(hold_requests.c.id == row.id).values(status=CAPTURED, updated_at=now)
        )
        uow.emit(
            HoldCaptured(
                hold_request_id=row.id,
                hold_id=row.hold_id,
                reference_id=row.reference_id,
                captured_fen=hold.captured_fen,
                fee_fen=event.fee_fen,
                released_fen=payout.amount_fen,
                payout_id=payout.payout_id,
                captured_at=now,
            )
        )

    def release_requested(self, uow: UnitOfWork, event: HoldCancelRequested) -> None:
        s = uow.session
        row = self._locked(uow, event.hold_request_id)
        now = _now()
        if row.status == WAITING:
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id)
                .values(status=CANCELLED, updated_at=now)
            )
            uow.emit(
                HoldCancelled(
                    hold_request_id=row.id,
                    hold_id=None,
                    reference_id=row.reference_id,
                    reason=event.reason,
                    cancelled_at=now,
                )
            )
        elif row.status == HELD:
            self.payments.cancel_in(uow, command_id=f"hr:{row.id}:cancel", hold_id=row.hold_id)
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id)
                .values(status=CANCELLED, updated_at=now)
            )
            uow.emit(
                HoldCancelled(
                    hold_request_id=row.id,
                    hold_id=row.hold_id,
                    reference_id=row.reference_id,
                    reason=event.reason,
                    cancelled_at=now,
                )
            )
        elif row.status == CAPTURED:
            refund = self.payments.refund_in(
                uow, command_id=f"hr:{row.id}:refund", hold_id=row.hold_id, reason=event.reason
            )
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id)
                .values(status=REFUNDED, updated_at=now)
            )
            uow.emit(
                HoldRefunded(
                    hold_request_id=row.id,
                    hold_id=row.hold_id,
                    reference_id=row.reference_id,
                    refund_id=refund.id,
                    amount_fen=refund.amount_fen,
                    refunded_at=now,
                )
            )

    def _locked(self, uow: UnitOfWork, request_id: str) -> Any:
        row = uow.session.execute(
            select(hold_requests).where(hold_requests.c.id == request_id).with_for_update()
        ).first()
        if row is None:
            # the request itself comes first on the same partition: this is a bug or a lost request
            raise NotFound(f"no hold request {request_id}")
        return row


HOLD_REQUESTS: Port[HoldRequests] = Port("payments.hold_requests")


def hold_requests_of(rt: ServiceRuntime) -> HoldRequests:
    """The runtime's hold requests (built by the service's setup)."""
    return rt.ports[HOLD_REQUESTS]
