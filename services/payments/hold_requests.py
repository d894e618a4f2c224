"""Holds that other services ask for over the bus (contracts.payments), for escrow (listings' orders) and deposits.

    HoldRequested ─▶ open a PaymentIntent at the provider (manual capture, unconfirmed) ─▶ HoldOpened
                     (with its client secret when the payer's client confirms it: Stripe.js)
    the payer confirms: their client with the client secret (Stripe), or POST /v1/payments/intents/{id}/confirm
    ─▶ we learn what they did: at once (our route), by a signed provider webhook, or by the timer that reads
       the intents still waiting (`sync_waiting`) ─▶ HoldAuthorised (the hold is recorded) | HoldDeclined (retry)
    HoldEscrowRequested ─▶ capture into the platform's escrow, pay nobody yet ─▶ HoldEscrowed   (optional step)
    HoldCaptureRequested ─▶ capture (unless escrowed) + release to the payee less the fee ─▶ HoldCaptured
                            (+ payout events)
    HoldCancelRequested ─▶ close the intent / release the hold / refund the escrow (ours, or a capture the
                           provider made outside ours) ─▶ HoldCancelled | HoldRefunded
    a request the state no longer allows ─▶ HoldCancelRefused (captured: the payee has the money) |
                           HoldCaptureRefused (not paid yet, cancelled, refunded, the authorisation lapsed,
                           a fee or payee that can never be paid: checked before anything is captured)

Request statuses: requires_payment_method → requires_capture (held) → [escrowed →] captured (released to the
payee) | cancelled | refunded.

A refusal is an answer, not a failure: the handler commits it (with the inbox record) instead of raising, so a
valid request that lost a race is never parked in the dead letters. A held request whose hold the provider let go
(a lapsed authorisation, booked by its event) is cancelled and the requester told (`HoldCancelled`,
`authorisation_lapsed`) when that event arrives, or at the latest when the requester next asks.

Whatever told us, the intent's state is read from the provider under the request's row lock and applied by one
function (`_apply`), so the three paths agree and none acts twice: the hold is recorded under the command id
`hr:<request>:intent`; a decline is reported once per attempt (`attempt_ref`: the provider's charge); every
transition is a conditional UPDATE on the locked row. Capture, release, cancel and refund use command ids derived
from the request, so a redelivered request is answered from payments' command log.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from services.contracts.payments import (
    AUTHORISATION_LAPSED,
    HoldAuthorised,
    HoldCancelled,
    HoldCancelRefused,
    HoldCancelRequested,
    HoldCaptured,
    HoldCaptureRefused,
    HoldCaptureRequested,
    HoldDeclined,
    HoldEscrowed,
    HoldEscrowRequested,
    HoldOpened,
    HoldRefunded,
    HoldRequested,
)
from services.kernel import idempotency
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import Conflict, Forbidden, NotFound, ValidationFailed
from services.kernel.ports import Port

from .domain.model import HoldStatus
from .domain.rules import provider_idempotency_key, wallet_for
from .handlers import PROVIDER_CANCELLED, Payments
from .ports import CLIENT_CONFIRMATION, IntentSnapshot, InvalidRequest, ProviderError
from .store import hold_requests

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

log = logging.getLogger(__name__)

WAITING = "requires_payment_method"
HELD = "requires_capture"
ESCROWED = "escrowed"  # captured into the platform's escrow, released to nobody yet
CAPTURED, CANCELLED, REFUNDED = "captured", "cancelled", "refunded"
LAPSED = AUTHORISATION_LAPSED  # the provider let the hold go before it was captured
# why a capture is refused, by the request's status (HoldCaptureRefused.reason)
# how many payments' last refresh a process remembers (the oldest are forgotten: at worst one more provider read)
_REFRESH_MEMORY = 10_000
_CAPTURE_REFUSALS = {WAITING: "not_held", CANCELLED: "already_cancelled", REFUNDED: "already_refunded"}


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
        payments.intent_watchers.append(self._when_intent_event)
        # when each payment was last read from the provider for a poll (this process's memory; see `get`)
        self.clock: Callable[[], float] = time.monotonic
        self._refreshed_at: OrderedDict[str, float] = OrderedDict()
        self._refresh_lock = threading.Lock()

    @property
    def provider(self) -> Any:
        return self.payments.provider

    # --- the payer -------------------------------------------------------------------------------------------
    def get(self, request_id: str, user_id: str, admin: bool = False) -> dict[str, Any]:
        """The payment as we know it; one still waiting for a payer whose client pays at the provider (Stripe.js)
        is read from the provider first, at most once per `intent_refresh_s` per payment, so a client polling
        after paying sees `requires_capture` without waiting for the webhook or the timer."""
        with self.db.session(readonly=True) as s:
            row = s.execute(select(hold_requests).where(hold_requests.c.id == request_id)).first()
        if row is None or (row.payer_user_id != user_id and not admin):
            raise NotFound(f"no payment with id {request_id}")
        if not self._may_refresh(row):
            return view(row)
        try:
            out = retry_on_conflict(lambda: self._sync(request_id))
        except ProviderError as exc:  # the provider is unreachable: what we know is still an answer
            log.warning("could not read the payment intent of hold request %s: %s", request_id, exc)
            return view(row)
        out.pop("updated_at")
        return out

    def _may_refresh(self, row: Any) -> bool:
        """Whether a read of `row` should ask the provider first, and if so claim the refresh (throttled: the
        provider is asked at most once per `intent_refresh_s` per payment, however many clients poll)."""
        if row.status != WAITING or not row.provider_ref:
            return False
        if CLIENT_CONFIRMATION not in self.provider.capabilities:
            return False  # the payer pays only through our confirm route: our table is up to date
        now = self.clock()
        with self._refresh_lock:
            last = self._refreshed_at.get(row.id)
            if last is not None and now - last < self.payments.settings.intent_refresh_s:
                return False
            self._refreshed_at[row.id] = now
            self._refreshed_at.move_to_end(row.id)
            while len(self._refreshed_at) > _REFRESH_MEMORY:
                self._refreshed_at.popitem(last=False)
        return True

    def confirm(self, request_id: str, user_id: str, payment_method: str) -> dict[str, Any]:
        """The payer pays with `payment_method`: the money is held (`requires_capture`) or the method is declined
        (`requires_payment_method` again, with the decline code)."""
        with self.db.session(readonly=True) as s:
            row = s.execute(select(hold_requests).where(hold_requests.c.id == request_id)).first()
        if row is None:
            raise NotFound(f"no payment with id {request_id}")
        if row.payer_user_id != user_id:
            raise Forbidden("only the payer confirms a payment", reason="not_payer")
        if row.status in (HELD, ESCROWED, CAPTURED):
            return view(row)  # confirmed already
        if row.status != WAITING:
            raise Conflict(f"the payment is {row.status}", current_state=row.status)
        intent = row.provider_ref or retry_on_conflict(lambda: self._open_missing_intent(request_id))
        try:
            self.provider.confirm_intent(
                intent,
                payment_method=payment_method,
                # per attempt and method: a double click confirms once; after a decline or a mistyped method the
                # next try is a new call (the method is hashed: sandbox methods may be test card numbers)
                idempotency_key=provider_idempotency_key(
                    "confirm",
                    f"{request_id}:{int(row.declines)}:{hashlib.sha256(payment_method.encode()).hexdigest()[:16]}",
                ),
            )
        except InvalidRequest as exc:
            if exc.param == "payment_method":
                raise ValidationFailed.field("payment_method", exc.detail) from None
            # the intent no longer waits (the payer's client paid, or it was closed): applied below as it is
        out = retry_on_conflict(lambda: self._sync(request_id, confirming=True))
        return _confirmed(out)

    def confirmed(self, request_id: str, user_id: str) -> dict[str, Any]:
        """`confirm`'s reply rebuilt (lost after the commit of the outcome it learnt): the payment as it stands."""
        with self.db.session(readonly=True) as s:
            row = s.execute(select(hold_requests).where(hold_requests.c.id == request_id)).first()
        if row is None:
            raise NotFound(f"no payment with id {request_id}")
        if row.payer_user_id != user_id:
            raise Forbidden("only the payer confirms a payment", reason="not_payer")
        return _confirmed({**view(row), "updated_at": row.updated_at})

    # --- learning what the payer did (webhooks, the timer) ---------------------------------------------------
    def sync_waiting(self, limit: int = 200) -> int:
        """Read every intent still waiting for its payer and apply what they did (the timer: Celery beat runs it
        every `PAYMENTS_OPEN_PAYMENT_SYNC_S`; a provider's webhooks usually told us first). Returns how many
        changed."""
        with self.db.session(readonly=True) as s:
            rows = s.execute(
                select(hold_requests.c.id, hold_requests.c.updated_at)
                .where(hold_requests.c.status == WAITING, hold_requests.c.provider_ref.is_not(None))
                .order_by(hold_requests.c.updated_at)
                .limit(limit)
            ).all()
        changed = 0
        for r in rows:
            try:
                after = retry_on_conflict(lambda rid=r.id: self._sync(rid))
            except ProviderError as exc:  # one intent the provider cannot answer for must not stop the others
                log.warning("could not read the payment intent of hold request %s: %s", r.id, exc)
                continue
            if after["status"] != WAITING or after["updated_at"] != r.updated_at:
                changed += 1
        return changed

    def _when_intent_event(self, uow: UnitOfWork, intent: str) -> None:
        """A provider event named `intent` (inside the unit of work that records the event, once per event id)."""
        s = uow.session
        found = s.execute(
            select(hold_requests.c.id, hold_requests.c.status, hold_requests.c.hold_id).where(
                hold_requests.c.provider_ref == intent
            )
        ).first()
        if found is None:
            return  # not a request's intent
        if found.status == HELD:
            # the provider may have let the hold go (a lapsed authorisation; the event is booked): tell the
            # requester now, not when it next asks, so it stops the sale before goods leave
            self._held_as_the_ledger_says(uow, self._locked(uow, found.id))
            return
        if not _may_change(found):
            return  # its outcome is ours to decide now (capture, cancel, refund)
        row = self._locked(uow, found.id)
        if _may_change(row):
            self._apply(uow, row, self.provider.retrieve_intent(intent))

    def _sync(self, request_id: str, confirming: bool = False) -> dict[str, Any]:
        with UnitOfWork(self.db) as uow:
            if confirming:  # a lost reply is rebuilt only if the key commits with the outcome (`confirmed`)
                idempotency.made(request_id)
            row = self._locked(uow, request_id)
            if row.provider_ref and _may_change(row):
                self._apply(uow, row, self.provider.retrieve_intent(row.provider_ref))
                row = self._locked(uow, request_id)
            return {**view(row), "updated_at": row.updated_at}

    def _apply(self, uow: UnitOfWork, row: Any, snap: IntentSnapshot) -> None:
        """What the intent's state means for the request (its row locked by the caller)."""
        s = uow.session
        now = _now()
        if row.status == CANCELLED:
            if snap.status == "authorised":
                # paid after the request was closed: record the hold and let the money go at once
                hold = self._record_hold(uow, row, snap)
                self.payments.cancel_in(uow, command_id=f"hr:{row.id}:cancel-late", hold_id=hold.id)
                s.execute(
                    update(hold_requests)
                    .where(hold_requests.c.id == row.id)
                    .values(hold_id=hold.id, updated_at=now)
                )
            return
        if snap.status == "authorised":
            hold = self._record_hold(uow, row, snap)
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id, hold_requests.c.status == WAITING)
                .values(
                    status=HELD,
                    hold_id=hold.id,
                    decline_code=None,
                    decline_message=None,
                    attempt_ref=snap.attempt_ref,
                    updated_at=now,
                )
            )
            uow.emit(
                HoldAuthorised(
                    hold_request_id=row.id,
                    hold_id=hold.id,
                    amount_fen=hold.amount_fen,
                    reference_id=row.reference_id,
                    authorised_at=now,
                )
            )
        elif snap.status == "declined" and snap.attempt_ref != row.attempt_ref:
            code = snap.decline_code or "card_declined"
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id, hold_requests.c.status == WAITING)
                .values(
                    declines=int(row.declines) + 1,
                    decline_code=code,
                    decline_message=snap.decline_message,
                    attempt_ref=snap.attempt_ref,
                    updated_at=now,
                )
            )
            uow.emit(
                HoldDeclined(
                    hold_request_id=row.id,
                    reference_id=row.reference_id,
                    decline_code=code,
                    reason=snap.decline_message or code,
                    declined_at=now,
                )
            )
        elif snap.status == "cancelled":
            # closed at the provider, not by us (we mark the row before we cancel): nothing was taken
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id, hold_requests.c.status == WAITING)
                .values(status=CANCELLED, updated_at=now)
            )
            uow.emit(
                HoldCancelled(
                    hold_request_id=row.id,
                    hold_id=None,
                    reference_id=row.reference_id,
                    reason="cancelled at the provider: " + str(snap.raw.get("cancellation_reason") or ""),
                    cancelled_at=now,
                )
            )
        elif snap.status == "captured":
            log.error("the intent of hold request %s was captured before it was held with us", row.id)

    def _record_hold(self, uow: UnitOfWork, row: Any, snap: IntentSnapshot) -> Any:
        if snap.authorised_fen != int(row.amount_fen):
            log.error(
                "intent %s of hold request %s authorised %s fen, not %s",
                snap.provider_ref,
                row.id,
                snap.authorised_fen,
                row.amount_fen,
            )
        return self.payments.record_authorised_in(
            uow,
            command_id=f"hr:{row.id}:intent",
            payer_user_id=row.payer_user_id,
            amount_fen=int(row.amount_fen),
            provider_ref=snap.provider_ref,
            payment_method=snap.payment_method or "unknown",
            reference_id=row.reference_id,
        )

    def _open_intent(self, request_id: str, amount_fen: int, reference_id: str, requested_by: str) -> Any:
        return self.provider.open_intent(
            amount_fen=amount_fen,
            currency=self.payments.currency,
            idempotency_key=provider_idempotency_key("open", request_id),
            metadata={
                "hold_request_id": request_id,
                "reference_id": reference_id,
                "requested_by": requested_by,
            },
        )

    def _client_secret(self, secret: str) -> str | None:
        # only a provider whose payers' clients confirm with it hands it out (the sandbox's payers use our route)
        return secret if CLIENT_CONFIRMATION in self.provider.capabilities else None

    def _open_missing_intent(self, request_id: str) -> str:
        """A request opened before requests opened intents: its intent, opened now."""
        with UnitOfWork(self.db) as uow:
            row = self._locked(uow, request_id)
            if row.provider_ref:
                return str(row.provider_ref)
            opened = self._open_intent(row.id, int(row.amount_fen), row.reference_id, row.requested_by)
            uow.session.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id)
                .values(
                    provider_ref=opened.provider_ref,
                    client_secret=self._client_secret(opened.client_secret),
                    updated_at=_now(),
                )
            )
            return str(opened.provider_ref)

    # --- what the consumers (group payments.holds, consumers.py) do ----------------------------------------------------------------------
    def open_requested(self, uow: UnitOfWork, event: HoldRequested) -> None:
        s = uow.session
        if s.execute(select(hold_requests.c.id).where(hold_requests.c.id == event.hold_request_id)).first():
            return
        opened = self._open_intent(
            event.hold_request_id, event.amount_fen, event.reference_id, event.requested_by
        )
        secret = self._client_secret(opened.client_secret)
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
                client_secret=secret,
                provider_ref=opened.provider_ref,
                created_at=now,
                updated_at=now,
            )
        )
        uow.emit(
            HoldOpened(
                hold_request_id=event.hold_request_id,
                payment_id=event.hold_request_id,
                client_secret=secret,
                amount_fen=event.amount_fen,
                reference_id=event.reference_id,
                opened_at=now,
            )
        )

    def settle_requested(self, uow: UnitOfWork, event: HoldCaptureRequested) -> None:
        """Capture the hold and release it to the payee less the fee. A request the hold's state does not allow is
        answered with `HoldCaptureRefused` (a refusal is an answer, not a failure: the event must not be parked)."""
        s = uow.session
        row = self._held_as_the_ledger_says(uow, self._locked(uow, event.hold_request_id))
        if row.status == CAPTURED:
            return  # the same capture asked again: answered already
        if row.status not in (HELD, ESCROWED):
            self._refuse(uow, row, HoldCaptureRefused, self._capture_refusal(uow, row))
            return
        p = self.payments
        held = p.hold_in(uow, row.hold_id)
        # checked before the capture: a release refused after it would leave the money captured at the provider
        unpayable = _unpayable(
            event, held.amount_fen if held.status == HoldStatus.AUTHORISED else held.refundable_fen
        )
        if unpayable:
            self._refuse(uow, row, HoldCaptureRefused, unpayable)
            return
        if held.status == HoldStatus.AUTHORISED and not self._captured(uow, row):
            self._refuse(uow, self._held_as_the_ledger_says(uow, row), HoldCaptureRefused, LAPSED)
            return
        # else escrowed by our own request, or captured by the provider outside our capture (its event booked
        # that): the escrow holds it already
        hold = p.hold_in(uow, row.hold_id)
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

    def escrow_requested(self, uow: UnitOfWork, event: HoldEscrowRequested) -> None:
        """Capture the hold into the platform's escrow and pay nobody yet: from now on nothing can lapse at the
        provider. Refused like a capture (`HoldCaptureRefused`) when the hold is not held."""
        s = uow.session
        row = self._held_as_the_ledger_says(uow, self._locked(uow, event.hold_request_id))
        if row.status in (ESCROWED, CAPTURED):
            return  # escrowed (or released) already: answered then
        if row.status != HELD:
            self._refuse(uow, row, HoldCaptureRefused, self._capture_refusal(uow, row))
            return
        p = self.payments
        if p.hold_in(uow, row.hold_id).status == HoldStatus.AUTHORISED and not self._captured(uow, row):
            self._refuse(uow, self._held_as_the_ledger_says(uow, row), HoldCaptureRefused, LAPSED)
            return
        # else the provider captured it outside our capture (its event booked that): in escrow already
        hold = p.hold_in(uow, row.hold_id)
        now = _now()
        s.execute(
            update(hold_requests).where(hold_requests.c.id == row.id).values(status=ESCROWED, updated_at=now)
        )
        uow.emit(
            HoldEscrowed(
                hold_request_id=row.id,
                hold_id=row.hold_id,
                reference_id=row.reference_id,
                captured_fen=hold.captured_fen,
                escrowed_at=now,
            )
        )

    def release_requested(self, uow: UnitOfWork, event: HoldCancelRequested) -> None:
        """Give the payer's money back: close the payment, release the hold, or refund what the provider captured
        outside our capture. After our capture the money went to the payee: `HoldCancelRefused`."""
        s = uow.session
        row = self._held_as_the_ledger_says(uow, self._locked(uow, event.hold_request_id))
        now = _now()
        if row.status == WAITING:
            # close the intent first, so that the payer's client cannot pay it afterwards
            hold_id = self._close_intent(uow, row) if row.provider_ref else None
            s.execute(
                update(hold_requests)
                .where(hold_requests.c.id == row.id)
                .values(status=CANCELLED, hold_id=hold_id, updated_at=now)
            )
            uow.emit(
                HoldCancelled(
                    hold_request_id=row.id,
                    hold_id=hold_id,
                    reference_id=row.reference_id,
                    reason=event.reason,
                    cancelled_at=now,
                )
            )
        elif row.status == ESCROWED or (
            row.status == HELD and self.payments.hold_in(uow, row.hold_id).status == HoldStatus.CAPTURED
        ):
            # in escrow (our escrow capture, or one the provider made whose event booked it), never released:
            # refund it all
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
            # a cancel that lost the race to the capture (or a late duplicate): the payee has the money
            self._refuse(uow, row, HoldCancelRefused, "already_captured")
        # CANCELLED, REFUNDED: given back already (answered then)

    def _refuse(
        self,
        uow: UnitOfWork,
        row: Any,
        refusal: type[HoldCancelRefused] | type[HoldCaptureRefused],
        reason: str,
    ) -> None:
        log.warning(
            "%s of hold request %s (reference %s) refused: %s (it is %s)",
            "cancel" if refusal is HoldCancelRefused else "capture",
            row.id,
            row.reference_id,
            reason,
            row.status,
        )
        uow.emit(
            refusal(
                hold_request_id=row.id,
                reference_id=row.reference_id,
                reason=reason,
                current_state=row.status,
                refused_at=_now(),
            )
        )

    def _captured(self, uow: UnitOfWork, row: Any) -> bool:
        """Capture a held request's hold into escrow (one command id for the escrow and the capture-and-release
        requests: whichever comes first captures). False if the provider had let the authorisation go and its
        event has not reached us yet: booked now, as that event would have."""
        hold = self.payments.hold_in(uow, row.hold_id)
        try:
            self.payments.capture_in(uow, command_id=f"hr:{row.id}:capture", hold_id=row.hold_id)
            return True
        except InvalidRequest:
            snap = self.provider.retrieve_intent(hold.provider_ref)
            if snap.status != "cancelled":
                raise
        reason = str(snap.raw.get("cancellation_reason") or "")
        self.payments.record_provider_cancelled_in(uow, hold_id=row.hold_id, reason=reason)
        return False

    def _capture_refusal(self, uow: UnitOfWork, row: Any) -> str:
        """Why a capture or escrow request of a request neither held nor escrowed is refused."""
        if (
            row.status == CANCELLED
            and row.hold_id
            and (self.payments.hold_in(uow, row.hold_id).status_reason or "").startswith(PROVIDER_CANCELLED)
        ):
            return LAPSED  # the provider let the hold go (reported as HoldCancelled when we learnt of it)
        return _CAPTURE_REFUSALS.get(row.status, "not_held")

    def _held_as_the_ledger_says(self, uow: UnitOfWork, row: Any) -> Any:
        """A held request whose hold the provider cancelled meanwhile (the authorisation lapsed: its event closed
        the hold in the ledger) is cancelled too, and the requester told so; returns the row as it is now."""
        if row.status != HELD or self.payments.hold_in(uow, row.hold_id).status != HoldStatus.CANCELLED:
            return row
        now = _now()
        uow.session.execute(
            update(hold_requests).where(hold_requests.c.id == row.id).values(status=CANCELLED, updated_at=now)
        )
        uow.emit(
            HoldCancelled(
                hold_request_id=row.id,
                hold_id=row.hold_id,
                reference_id=row.reference_id,
                reason=LAPSED,
                cancelled_at=now,
            )
        )
        return self._locked(uow, row.id)

    def _close_intent(self, uow: UnitOfWork, row: Any) -> str | None:
        """Cancel a waiting request's intent; if its payer has just paid it, record the hold and release it (the
        hold's id is returned)."""
        try:
            self.provider.cancel(
                row.provider_ref, idempotency_key=provider_idempotency_key("cancel", f"hr:{row.id}:close")
            )
            return None
        except InvalidRequest:
            snap = self.provider.retrieve_intent(row.provider_ref)
            if snap.status == "cancelled":
                return None
            if snap.status != "authorised":
                raise
        hold = self._record_hold(uow, row, snap)
        self.payments.cancel_in(uow, command_id=f"hr:{row.id}:cancel", hold_id=hold.id)
        return str(hold.id)

    def _locked(self, uow: UnitOfWork, request_id: str) -> Any:
        row = uow.session.execute(
            select(hold_requests).where(hold_requests.c.id == request_id).with_for_update()
        ).first()
        if row is None:
            # the request itself comes first on the same partition: this is a bug or a lost request
            raise NotFound(f"no hold request {request_id}")
        return row


def _confirmed(out: dict[str, Any]) -> dict[str, Any]:
    """A confirm's reply: the payment after what the provider said, unless it was cancelled meanwhile."""
    if out["status"] == CANCELLED:
        raise Conflict(
            "the payment was cancelled while it was being confirmed; nothing was taken",
            current_state=CANCELLED,
        )
    return out


def _unpayable(event: HoldCaptureRequested, amount_fen: int) -> str | None:
    """Why a capture request can never be paid out (a requester's bug, refused rather than retried), or None."""
    if not event.payee_user_id:
        return "invalid_payee"
    if not wallet_for(event.payee_kind):
        return "invalid_payee_kind"
    if event.fee_fen < 0 or event.fee_fen >= amount_fen:
        return "invalid_fee"
    return None


def _may_change(row: Any) -> bool:
    """Whether what the payer does with the intent still matters: a request waiting for them, or one closed before
    any hold was recorded (a late payment is released at once)."""
    return row.status == WAITING or (row.status == CANCELLED and row.hold_id is None)


HOLD_REQUESTS: Port[HoldRequests] = Port("payments.hold_requests")


def hold_requests_of(rt: ServiceRuntime) -> HoldRequests:
    """The runtime's hold requests (built by the service's setup)."""
    return rt.ports[HOLD_REQUESTS]
