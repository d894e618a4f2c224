"""The payments port, implemented once over the ledger, whatever the provider.

One command = one unit of work over one aggregate: lock the hold (or the payee), check the guard, call the
provider with the idempotency key of the command, post the balanced ledger entries, commit. The provider call
happens while the aggregate's row is locked, so two commands on one hold run one after the other (the second
sees the first's outcome: "two captures of one hold produce one capture"). If the process dies after the
provider acted but before the commit, the same command retried sends the same idempotency key and the provider
answers with the first result; the reconciliation job finds anything left over.

Lock order (to avoid deadlocks): hold → payee → withdrawal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.contracts.payments import PayoutFailed, PayoutPaid, PayoutRequested
from services.kernel import idempotency
from services.kernel.db import Database, UnitOfWork, retry_on_conflict
from services.kernel.errors import NotFound, RuleViolated, ValidationFailed
from services.kernel.events import Envelope
from services.kernel.ports import Port

from . import store
from .domain import ledger as L
from .domain.events import WithdrawalRequested
from .domain.model import (
    Balance,
    Hold,
    HoldStatus,
    Payout,
    PayoutStatus,
    Refund,
    RefundStatus,
    Withdrawal,
    WithdrawalStatus,
    check_amount,
)
from .domain.provider_events import PAYMENT_INTENT, REFUND, TRANSFER, ProviderEvent, derive_state, normalise
from .domain.rules import (
    command_scoped_id,
    hold_id_for,
    payout_outcome_event_id,
    payout_waits_for_threshold,
    provider_idempotency_key,
    wallet_for,
)
from .ports import CardDeclined, InvalidRequest, PaymentProvider, ProviderUnavailable
from .settings import PaymentsSettings
from .store import hold_commands, holds, payees, payouts, provider_events, refunds, withdrawals

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

log = logging.getLogger(__name__)

# ledger entry kinds
K_AUTHORISE = "authorise"
K_CAPTURE = "capture"
K_HOLD_RELEASE = "hold_release"  # the uncaptured part of a hold goes back (cancel, lapse, partial capture)
K_REFUND = "refund"
K_REFUND_REVERSAL = "refund_reversal"
K_PAYOUT_CREDIT = "payout_credit"
K_PAYOUT_REVERSAL = "payout_reversal"
K_WITHDRAWAL_RESERVE = "withdrawal_reserve"
K_WITHDRAWAL_PAID = "withdrawal_paid"
K_WITHDRAWAL_FAILED = "withdrawal_failed"
K_WITHDRAWAL_RETURNED = "withdrawal_returned"


# the reason recorded on a hold the provider cancelled without us (an authorisation that lapsed)
PROVIDER_CANCELLED = "cancelled by the provider"


def _reused(command_id: str, what: str) -> RuleViolated:
    return RuleViolated(
        f"command id {command_id!r} was already used for {what}",
        reason="command_id_reused",
        field="command_id",
    )


def announced(event: PayoutPaid | PayoutFailed) -> Envelope:
    """A payout's outcome as published, under the id derived from it (each outcome happens once per payout)."""
    outcome = "paid" if isinstance(event, PayoutPaid) else "failed"
    return Envelope.wrap(event, event_id=payout_outcome_event_id(event.payout_id, outcome))


def outcome_of(row: Any) -> PayoutPaid | PayoutFailed | None:
    """The outcome event a held payout reports, rebuilt from its row (when the first copy left the outbox); None
    while a withdrawal is under way."""
    status = PayoutStatus(row.status)
    if status in (PayoutStatus.CREDITED, PayoutStatus.PAID):
        return PayoutPaid(
            payout_id=row.payout_id,
            reference_id=row.reference_id,
            amount_fen=int(row.amount_fen),
            provider_ref=row.provider_ref or "",
            paid_at=row.updated_at,
            destination="balance" if status == PayoutStatus.CREDITED else "provider",
        )
    if status in (PayoutStatus.FAILED, PayoutStatus.RETURNED):
        return PayoutFailed(
            payout_id=row.payout_id,
            reference_id=row.reference_id,
            amount_fen=int(row.amount_fen),
            reason=row.failure_reason or "",
            failed_at=row.updated_at,
            returned=status == PayoutStatus.RETURNED,
        )
    return None


class Payments:
    """The payments port (see `ports.PaymentsPort`)."""

    def __init__(self, db: Database, provider: PaymentProvider, settings: PaymentsSettings | None = None):
        self.db = db
        self.provider = provider
        self.settings = settings or PaymentsSettings()
        # called with every PaymentIntent a provider event names, inside the unit of work that records the event
        # (hold requests: what a payer did with an intent their client confirmed)
        self.intent_watchers: list[Callable[[UnitOfWork, str], None]] = []

    @property
    def currency(self) -> str:
        return self.settings.currency

    # === holds (escrow) =======================================================================================
    def authorise(
        self,
        *,
        command_id: str,
        payer_user_id: str,
        amount_fen: int,
        payment_method: str,
        reference_id: str = "",
    ) -> Hold:
        """Put `amount_fen` on hold on the payer's card (预授权). A decline is an outcome: the hold comes back with
        status `declined` and the provider's decline code. An unknown payment method is a 400 on `payment_method`."""
        check_amount(amount_fen)
        if not command_id:
            raise ValidationFailed.field("command_id", "required")
        if not payment_method:
            raise ValidationFailed.field("payment_method", "required")
        hold_id = hold_id_for(command_id)

        def work() -> Hold:
            with UnitOfWork(self.db) as uow:
                s = uow.session
                row = self._hold_row(s, hold_id, lock=True, missing_ok=True)
                if row is not None:
                    if (row.payer_user_id, row.amount_fen, row.payment_method) != (
                        payer_user_id,
                        amount_fen,
                        payment_method,
                    ):
                        raise _reused(command_id, f"another authorisation ({row.id})")
                    return self._hold_view(s, row)
                # The row first: a concurrent retry of this command waits on it instead of calling the provider.
                self._insert_hold(
                    s,
                    hold_id=hold_id,
                    command_id=command_id,
                    payer_user_id=payer_user_id,
                    reference_id=reference_id,
                    amount_fen=amount_fen,
                    payment_method=payment_method,
                    status="authorising",
                )
                s.flush()
                try:
                    res = self.provider.authorise(
                        amount_fen=amount_fen,
                        currency=self.currency,
                        payment_method=payment_method,
                        idempotency_key=provider_idempotency_key("authorise", command_id),
                        metadata={"hold_id": hold_id, "reference_id": reference_id, "command_id": command_id},
                    )
                except InvalidRequest as exc:
                    if exc.param in (None, "payment_method") and (exc.http_status == 404 or exc.param):
                        raise ValidationFailed.field("payment_method", exc.detail) from None
                    raise
                status = HoldStatus.AUTHORISED if res.status == "authorised" else HoldStatus.DECLINED
                s.execute(
                    update(holds)
                    .where(holds.c.id == hold_id)
                    .values(
                        status=str(status),
                        provider_ref=res.provider_ref or None,
                        decline_code=res.decline_code,
                        decline_message=res.decline_message,
                        updated_at=datetime.now(UTC),
                    )
                )
                if status == HoldStatus.AUTHORISED:
                    self._post_authorised(s, hold_id, amount_fen)
                    self._sync_intent(uow, res.provider_ref)  # events that arrived before this commit
                return self._hold_view(s, self._hold_row(s, hold_id))

        try:
            return retry_on_conflict(work)
        except IntegrityError:  # a concurrent retry of the same command inserted the hold first
            return self.get_hold(hold_id)

    def record_authorised_in(
        self,
        uow: UnitOfWork,
        *,
        command_id: str,
        payer_user_id: str,
        amount_fen: int,
        provider_ref: str,
        payment_method: str,
        reference_id: str = "",
    ) -> Hold:
        """A hold its payer authorised at the provider (a PaymentIntent opened with `open_intent` and confirmed by
        the payer's client or on their behalf): recorded once, the amount put on hold in the ledger. No provider
        call: the caller read the intent's state."""
        check_amount(amount_fen)
        hold_id = hold_id_for(command_id)
        s = uow.session
        row = self._hold_row(s, hold_id, lock=True, missing_ok=True)
        if row is not None:
            if row.provider_ref != provider_ref:
                raise _reused(command_id, f"another authorisation ({row.id})")
            return self._hold_view(s, row)
        self._insert_hold(
            s,
            hold_id=hold_id,
            command_id=command_id,
            payer_user_id=payer_user_id,
            reference_id=reference_id,
            amount_fen=amount_fen,
            payment_method=payment_method,
            status=str(HoldStatus.AUTHORISED),
            provider_ref=provider_ref,
        )
        self._post_authorised(s, hold_id, amount_fen)
        self._sync_intent(uow, provider_ref)  # e.g. the authorisation lapsed before we learnt of it
        return self._hold_view(s, self._hold_row(s, hold_id))

    def capture(self, *, command_id: str, hold_id: str, amount_fen: int | None = None) -> Hold:
        """Capture a hold into escrow: at most what was authorised, once. The rest of the hold is released."""

        def work() -> Hold:
            with UnitOfWork(self.db) as uow:
                return self.capture_in(uow, command_id=command_id, hold_id=hold_id, amount_fen=amount_fen)

        return retry_on_conflict(work)

    def capture_in(
        self, uow: UnitOfWork, *, command_id: str, hold_id: str, amount_fen: int | None = None
    ) -> Hold:
        """`capture` inside the caller's unit of work (a consumer's)."""
        s = uow.session
        row = self._hold_row(s, hold_id, lock=True)
        if self._seen_command(s, command_id, "capture", hold_id):
            return self._hold_view(s, row)
        hold = self._hold_view(s, row)
        amount = hold.amount_fen if amount_fen is None else amount_fen
        hold.ensure_can_capture(amount)
        snap = self.provider.capture(
            row.provider_ref,
            amount_fen=amount,
            idempotency_key=provider_idempotency_key("capture", command_id),
        )
        self._record_capture(s, row, snap.captured_fen or amount)
        self._record_command(s, command_id, "capture", hold_id, amount)
        return self._hold_view(s, self._hold_row(s, hold_id))

    def record_provider_cancelled_in(self, uow: UnitOfWork, *, hold_id: str, reason: str) -> Hold:
        """The provider let an authorised hold go and we found out by acting on it, before its event came: book it
        as the event would (which then changes nothing)."""
        s = uow.session
        row = self._hold_row(s, hold_id, lock=True)
        if row.status == HoldStatus.AUTHORISED:
            self._record_hold_closed(s, row, HoldStatus.CANCELLED, f"{PROVIDER_CANCELLED}: {reason}")
        return self._hold_view(s, self._hold_row(s, hold_id))

    def cancel(self, *, command_id: str, hold_id: str) -> Hold:
        """Release an uncaptured hold (the buyer's card is no longer reserved)."""

        def work() -> Hold:
            with UnitOfWork(self.db) as uow:
                return self.cancel_in(uow, command_id=command_id, hold_id=hold_id)

        return retry_on_conflict(work)

    def cancel_in(self, uow: UnitOfWork, *, command_id: str, hold_id: str) -> Hold:
        """`cancel` inside the caller's unit of work (a consumer's)."""
        s = uow.session
        row = self._hold_row(s, hold_id, lock=True)
        if self._seen_command(s, command_id, "cancel", hold_id):
            return self._hold_view(s, row)
        self._hold_view(s, row).ensure_can_cancel()
        self.provider.cancel(row.provider_ref, idempotency_key=provider_idempotency_key("cancel", command_id))
        self._record_hold_closed(s, row, HoldStatus.CANCELLED, None)
        self._record_command(s, command_id, "cancel", hold_id, None)
        return self._hold_view(s, self._hold_row(s, hold_id))

    def refund(
        self, *, command_id: str, hold_id: str, amount_fen: int | None = None, reason: str = ""
    ) -> Refund:
        """Give captured money back to the buyer: all that is left (default) or part of it. Our ledger refuses a
        refund above what the escrow still holds, whatever the provider would allow."""

        def work() -> Refund:
            with UnitOfWork(self.db) as uow:
                return self.refund_in(
                    uow, command_id=command_id, hold_id=hold_id, amount_fen=amount_fen, reason=reason
                )

        return retry_on_conflict(work)

    def refund_in(
        self,
        uow: UnitOfWork,
        *,
        command_id: str,
        hold_id: str,
        amount_fen: int | None = None,
        reason: str = "",
    ) -> Refund:
        """`refund` inside the caller's unit of work (a consumer's)."""
        refund_id = command_scoped_id("rf", "refund", command_id)
        s = uow.session
        row = self._hold_row(s, hold_id, lock=True)
        prior = s.execute(select(refunds).where(refunds.c.command_id == command_id)).first()
        if prior is not None:
            if prior.hold_id != hold_id:
                raise _reused(command_id, f"a refund of hold {prior.hold_id}")
            return self._refund_view(prior)
        hold = self._hold_view(s, row)
        amount = hold.refundable_fen if amount_fen is None else amount_fen
        if amount_fen is None and amount == 0 and hold.status == HoldStatus.CAPTURED:
            raise RuleViolated(f"hold {hold_id} has nothing left to refund", reason="over_refund")
        hold.ensure_can_refund(amount)
        res = self.provider.refund(
            row.provider_ref,
            amount_fen=amount,
            idempotency_key=provider_idempotency_key("refund", command_id),
            metadata={"hold_id": hold_id, "refund_id": refund_id, "command_id": command_id},
        )
        status = {"succeeded": RefundStatus.SUCCEEDED, "pending": RefundStatus.PENDING}.get(
            res.status, RefundStatus.FAILED
        )
        self._record_refund(
            s,
            refund_id=refund_id,
            command_id=command_id,
            hold_id=hold_id,
            amount_fen=amount,
            status=status,
            provider_ref=res.provider_ref,
            reason=reason,
            failure_reason=res.failure_reason,
            memo=reason,
        )
        self._sync_refund(uow, res.provider_ref, None)  # a failure reported before this commit
        return self._refund_view(s.execute(select(refunds).where(refunds.c.id == refund_id)).one())

    def release(
        self,
        *,
        command_id: str,
        hold_id: str,
        payee_user_id: str,
        payee_kind: str = "seller",
        fee_fen: int = 0,
    ) -> Payout:
        """Pay what is left in a hold's escrow to the payee (the seller), less the platform fee."""
        payout_id = command_scoped_id("po", "release", command_id)

        def work() -> tuple[Payout, str | None]:
            with UnitOfWork(self.db) as uow:
                return self.release_in(
                    uow,
                    command_id=command_id,
                    hold_id=hold_id,
                    payee_user_id=payee_user_id,
                    payee_kind=payee_kind,
                    fee_fen=fee_fen,
                )

        payout, wd = retry_on_conflict(work)
        if wd:
            self._try_send(wd)
            return self.get_payout(payout_id)
        return payout

    def release_in(
        self,
        uow: UnitOfWork,
        *,
        command_id: str,
        hold_id: str,
        payee_user_id: str,
        payee_kind: str = "seller",
        fee_fen: int = 0,
    ) -> tuple[Payout, str | None]:
        """`release` inside the caller's unit of work: the payout, and the withdrawal to send (if any; its
        WithdrawalRequested event sends it when nobody does sooner)."""
        payout_id = command_scoped_id("po", "release", command_id)
        s = uow.session
        row = self._hold_row(s, hold_id, lock=True)
        if self._seen_command(s, command_id, "release", hold_id):
            return self._payout_view(self._payout_row(s, payout_id)), None
        hold = self._hold_view(s, row)
        amount = hold.refundable_fen
        hold.ensure_can_release(amount)
        if not isinstance(fee_fen, int) or fee_fen < 0 or fee_fen >= amount:
            raise ValidationFailed.field("fee_fen", f"between 0 and {amount - 1} fen")
        payout, wd = self._accept_payout(
            uow,
            payout_id=payout_id,
            payee_user_id=payee_user_id,
            payee_kind=payee_kind,
            amount_fen=amount - fee_fen,
            purpose="order",
            reference_id=hold.reference_id or hold_id,
            requested_by="payments",
            source_account=L.escrow_account(hold_id),
            fee_fen=fee_fen,
        )
        self._record_command(s, command_id, "release", hold_id, amount)
        return payout, wd

    # === payouts and wallets ==================================================================================
    def request_payout(
        self,
        *,
        payout_id: str,
        payee_user_id: str,
        amount_fen: int,
        purpose: str,
        reference_id: str,
        requested_by: str,
        payee_kind: str = "resident",
    ) -> Payout:
        """Pay a person or firm (at most once per `payout_id`). Residents' payouts below the threshold stay in
        their wallet (reported paid to the balance); the wallet goes out once it reaches the threshold."""

        def work() -> tuple[Payout, str | None]:
            with UnitOfWork(self.db) as uow:
                return self._accept_payout(
                    uow,
                    payout_id=payout_id,
                    payee_user_id=payee_user_id,
                    payee_kind=payee_kind,
                    amount_fen=amount_fen,
                    purpose=purpose,
                    reference_id=reference_id,
                    requested_by=requested_by,
                    source_account=L.funding_account(requested_by),
                )

        try:
            payout, wd = retry_on_conflict(work)
        except IntegrityError:  # the same payout id for another payee, requested at the same moment
            return self.get_payout(payout_id)
        if wd:
            self._try_send(wd)
            return self.get_payout(payout_id)
        return payout

    def withdraw(
        self, *, command_id: str, user_id: str, wallet: str = "resident", amount_fen: int | None = None
    ) -> Withdrawal:
        """The payee takes money out of their wallet (all of it by default), whatever the threshold."""
        if wallet not in L.WALLET_KINDS:
            raise ValidationFailed.field("wallet", f"one of {list(L.WALLET_KINDS)}")

        def work() -> str:
            with UnitOfWork(self.db) as uow:
                s = uow.session
                self._lock_payee(s, user_id)  # first: a concurrent retry of this command waits, then sees it
                prior = s.execute(select(withdrawals).where(withdrawals.c.command_id == command_id)).first()
                if prior is not None:
                    if prior.payee_user_id != user_id:
                        raise _reused(command_id, "another withdrawal")
                    idempotency.made(prior.id)
                    return prior.id
                balance = L.normal_balance(
                    L.wallet_account(wallet, user_id), store.raw_balance(s, L.wallet_account(wallet, user_id))
                )
                if balance <= 0:
                    raise RuleViolated(f"your {wallet} wallet is empty", reason="nothing_to_withdraw")
                amount = balance if amount_fen is None else check_amount(amount_fen)
                if amount > balance:
                    raise RuleViolated(
                        f"cannot withdraw {amount} fen: the {wallet} wallet holds {balance} fen",
                        reason="insufficient_balance",
                        field="amount_fen",
                    )
                wd_id = self._reserve_withdrawal(uow, user_id, wallet, amount, command_id, None)
                idempotency.made(wd_id)
                return wd_id

        wd_id = retry_on_conflict(work)
        self._try_send(wd_id)
        return self.get_withdrawal(wd_id)

    def register_payee(
        self,
        *,
        user_id: str,
        kind: str,
        provider_account_ref: str | None = None,
        bank_account: str | None = None,
    ) -> str:
        """Record where a payee is paid: an existing connected account, or one opened now at the provider."""
        if wallet_for(kind) == "":
            raise ValidationFailed.field("kind", "one of resident, seller, firm")
        ref = provider_account_ref or self.provider.create_payee_account(
            user_id=user_id,
            kind=kind,
            bank_account=bank_account,
            idempotency_key=provider_idempotency_key("payee", f"{user_id}:{bank_account or ''}"),
        )

        def work() -> str:
            with UnitOfWork(self.db) as uow:
                self._lock_payee(uow.session, user_id)
                uow.session.execute(
                    update(payees)
                    .where(payees.c.user_id == user_id)
                    .values(provider_account_ref=ref, updated_at=datetime.now(UTC))
                )
            return ref

        return retry_on_conflict(work)

    def send_pending_withdrawals(self, limit: int = 100) -> int:
        """Send withdrawals still pending (their event's consumer normally does; the reconciliation sweep too)."""
        with self.db.session(readonly=True) as s:
            ids = [
                r.id
                for r in s.execute(
                    select(withdrawals.c.id)
                    .where(withdrawals.c.status == "pending")
                    .order_by(withdrawals.c.created_at)
                    .limit(limit)
                ).all()
            ]
        for wd_id in ids:
            self._try_send(wd_id)
        return len(ids)

    # --- requested by events (consumers.py) ------------------------------------------------------------------
    def pay_requested(self, uow: UnitOfWork, ev: PayoutRequested) -> None:
        """A payout another service asked for: accepted once by its payout_id (paid, or credited to a wallet).

        Asked again for a payout it holds (the requester never heard the outcome: booking asks again after
        BOOKING_PAYOUT_REREQUEST_MINUTES), nothing is paid twice; its outcome is announced again instead, the
        same event (`payout_outcome_event_id`), since the first announcement may have been lost on the way."""
        held = uow.session.execute(select(payouts).where(payouts.c.payout_id == ev.payout_id)).first()
        if held is not None:
            outcome = outcome_of(held)
            if outcome is not None:  # else a withdrawal is under way: its outcome is announced when it comes
                how = uow.emit_again(announced(outcome))
                log.info("payout %s requested again: its outcome announced again (%s)", ev.payout_id, how)
            return
        try:
            self._accept_payout(
                uow,
                payout_id=ev.payout_id,
                payee_user_id=ev.payee_user_id,
                payee_kind=ev.payee_kind,
                amount_fen=ev.amount_fen,
                purpose=ev.purpose,
                reference_id=ev.reference_id,
                requested_by=ev.requested_by,
                source_account=L.funding_account(ev.requested_by or "unknown"),
            )
        except ValidationFailed as exc:
            # A request we can never pay (bad amount or payee kind): answer it, once, instead of retrying.
            self._refuse_payout(uow, ev, exc.detail + ": " + "; ".join(e["message"] for e in exc.errors))

    def send_requested(self, uow: UnitOfWork, ev: WithdrawalRequested) -> None:
        """A withdrawal this service reserved: sent through the provider, once (keyed by withdrawal_id)."""
        self._send_withdrawal(uow, ev.withdrawal_id)

    # === provider events (webhooks, sandbox pulls) ============================================================
    def handle_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """A webhook: verify its signature, then record and apply it once."""
        event = self.provider.verify_webhook(payload, signature)
        outcome = self.apply_provider_event(event)
        return {"received": True, "event_id": event["id"], "type": event.get("type"), "outcome": outcome}

    def apply_provider_event(self, event: Mapping[str, Any]) -> str:
        """Record a provider event once (by its id) and re-derive its object's state from the whole history.
        Returns "applied" or "duplicate"."""
        pe = normalise(event)

        def work() -> str:
            with UnitOfWork(self.db) as uow:
                s = uow.session
                if s.execute(select(provider_events.c.id).where(provider_events.c.id == pe.id)).first():
                    return "duplicate"
                s.execute(
                    insert(provider_events).values(
                        id=pe.id,
                        provider=self.provider.name,
                        type=pe.type,
                        object_kind=pe.object_kind,
                        object_ref=pe.object_ref,
                        parent_ref=pe.parent_ref,
                        created=pe.created,
                        status=pe.status,
                        amount_fen=pe.amount_fen,
                        failure_reason=pe.failure_reason,
                        payload=json.dumps(event, default=str),
                        received_at=datetime.now(UTC),
                    )
                )
                s.flush()
                if pe.object_kind == PAYMENT_INTENT:
                    self._sync_intent(uow, pe.object_ref)
                    for watch in self.intent_watchers:
                        watch(uow, pe.object_ref)
                elif pe.object_kind == REFUND:
                    self._sync_refund(uow, pe.object_ref, pe.parent_ref)
                elif pe.object_kind == TRANSFER:
                    self._sync_transfer(uow, pe.object_ref, pe.payload)
                return "applied"

        try:
            return retry_on_conflict(work)
        except IntegrityError:
            return "duplicate"  # the same event, delivered twice at once

    def pull_provider_events(self, limit: int = 100) -> int:
        """Fetch and apply events from a provider that does not push webhooks (the sandbox)."""
        n = 0
        while True:
            events = self.provider.pull_events(limit)
            if not events:
                return n
            for ev in events:
                self.apply_provider_event(ev)
            self.provider.ack_events([str(ev["id"]) for ev in events])
            n += len(events)

    # === queries ==============================================================================================
    def hold_in(self, uow: UnitOfWork, hold_id: str) -> Hold:
        """A hold as it stands inside the caller's unit of work, its row locked (a consumer deciding what to do)."""
        s = uow.session
        return self._hold_view(s, self._hold_row(s, hold_id, lock=True))

    def get_hold(self, hold_id: str) -> Hold:
        with self.db.session(readonly=True) as s:
            return self._hold_view(s, self._hold_row(s, hold_id))

    def get_refund(self, refund_id: str) -> Refund:
        with self.db.session(readonly=True) as s:
            row = s.execute(select(refunds).where(refunds.c.id == refund_id)).first()
        if row is None:
            raise NotFound(f"no refund with id {refund_id}")
        return self._refund_view(row)

    def get_payout(self, payout_id: str) -> Payout:
        with self.db.session(readonly=True) as s:
            return self._payout_view(self._payout_row(s, payout_id))

    def get_withdrawal(self, withdrawal_id: str) -> Withdrawal:
        with self.db.session(readonly=True) as s:
            row = s.execute(select(withdrawals).where(withdrawals.c.id == withdrawal_id)).first()
        if row is None:
            raise NotFound(f"no withdrawal with id {withdrawal_id}")
        return self._withdrawal_view(row)

    def list_withdrawals(self, user_id: str, limit: int = 50, before: str | None = None) -> list[Withdrawal]:
        q = select(withdrawals).where(withdrawals.c.payee_user_id == user_id)
        with self.db.session(readonly=True) as s:
            if before:
                ref = s.execute(select(withdrawals.c.created_at).where(withdrawals.c.id == before)).first()
                if ref is not None:
                    q = q.where(
                        (withdrawals.c.created_at < ref.created_at)
                        | ((withdrawals.c.created_at == ref.created_at) & (withdrawals.c.id < before))
                    )
            rows = s.execute(
                q.order_by(withdrawals.c.created_at.desc(), withdrawals.c.id.desc()).limit(limit)
            ).all()
        return [self._withdrawal_view(r) for r in rows]

    def balance(self, user_id: str) -> Balance:
        """A payee's wallets (derived from the ledger) and the withdrawals under way."""
        accounts = {k: L.wallet_account(k, user_id) for k in L.WALLET_KINDS}
        with self.db.session(readonly=True) as s:
            raw = store.raw_balances(s, accounts.values())
            in_transit = sum(
                r.amount_fen
                for r in s.execute(
                    select(withdrawals.c.amount_fen).where(
                        withdrawals.c.payee_user_id == user_id, withdrawals.c.status == "pending"
                    )
                ).all()
            )
        wallets = {k: L.normal_balance(a, raw.get(a, 0)) for k, a in accounts.items()}
        return Balance(user_id, wallets, int(in_transit), self.settings.payout_threshold_fen)

    def account_balance(self, account: str) -> int:
        with self.db.session(readonly=True) as s:
            return L.normal_balance(account, store.raw_balance(s, account))

    def trial_balance(self) -> dict[str, int]:
        """Every account's raw balance (debit positive); they sum to zero."""
        with self.db.session(readonly=True) as s:
            return store.raw_balances(s)

    def ledger_problems(self) -> list[str]:
        with self.db.session(readonly=True) as s:
            return L.invariant_violations(store.raw_balances(s), [v for _, v in store.unbalanced_entries(s)])

    # === internals: holds =====================================================================================
    def _hold_row(self, s: Session, hold_id: str, lock: bool = False, missing_ok: bool = False) -> Any:
        q = select(holds).where(holds.c.id == hold_id)
        row = s.execute(q.with_for_update() if lock else q).first()
        if row is None and not missing_ok:
            raise NotFound(f"no hold with id {hold_id}")
        return row

    def _hold_view(self, s: Session, row: Any) -> Hold:
        escrow = L.escrow_account(row.id)
        moves = store.account_movements(s, escrow)
        captured = -moves.get(K_CAPTURE, 0)
        refunded = moves.get(K_REFUND, 0) + moves.get(K_REFUND_REVERSAL, 0)
        left = L.normal_balance(escrow, sum(moves.values()))
        status = row.status if row.status != "authorising" else "authorised"
        return Hold(
            id=row.id,
            status=HoldStatus(status),
            payer_user_id=row.payer_user_id,
            reference_id=row.reference_id,
            amount_fen=int(row.amount_fen),
            captured_fen=captured,
            refunded_fen=refunded,
            released_fen=captured - refunded - left,
            provider_ref=row.provider_ref,
            decline_code=row.decline_code,
            decline_message=row.decline_message,
            status_reason=row.status_reason,
            currency=row.currency,
        )

    def _insert_hold(
        self,
        s: Session,
        *,
        hold_id: str,
        command_id: str,
        payer_user_id: str,
        reference_id: str,
        amount_fen: int,
        payment_method: str,
        status: str,
        provider_ref: str | None = None,
    ) -> None:
        s.execute(
            insert(holds).values(
                id=hold_id,
                command_id=command_id,
                payer_user_id=payer_user_id,
                reference_id=reference_id,
                amount_fen=amount_fen,
                currency=self.currency,
                payment_method=payment_method,
                status=status,
                provider=self.provider.name,
                provider_ref=provider_ref,
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )

    def _post_authorised(self, s: Session, hold_id: str, amount_fen: int) -> None:
        """The authorised amount moves from the card's authorisations onto the hold."""
        store.post(
            s, L.transfer(K_AUTHORISE, hold_id, L.CARD_AUTHORISATIONS, L.hold_account(hold_id), amount_fen)
        )

    def _seen_command(self, s: Session, command_id: str, op: str, hold_id: str) -> bool:
        if not command_id:
            raise ValidationFailed.field("command_id", "required")
        prior = s.execute(select(hold_commands).where(hold_commands.c.command_id == command_id)).first()
        if prior is None:
            return False
        if prior.op != op or prior.hold_id != hold_id:
            raise _reused(command_id, f"{prior.op} of hold {prior.hold_id}")
        return True

    def _record_command(self, s: Session, command_id: str, op: str, hold_id: str, amount: int | None) -> None:
        s.execute(
            insert(hold_commands).values(
                command_id=command_id, op=op, hold_id=hold_id, amount_fen=amount, created_at=datetime.now(UTC)
            )
        )

    def _record_capture(self, s: Session, row: Any, captured_fen: int, reason: str | None = None) -> None:
        """Capture: the whole hold leaves the authorisations (what is not captured is released), the captured
        amount enters escrow."""
        hold_acc = L.hold_account(row.id)
        open_fen = L.normal_balance(hold_acc, store.raw_balance(s, hold_acc))
        captured_fen = min(captured_fen, open_fen)
        store.post(
            s,
            L.entry(
                K_CAPTURE,
                row.id,
                (hold_acc, open_fen),
                (L.CARD_AUTHORISATIONS, -open_fen),
                (L.PROVIDER_CASH, captured_fen),
                (L.escrow_account(row.id), -captured_fen),
            ),
        )
        s.execute(
            update(holds)
            .where(holds.c.id == row.id)
            .values(status=str(HoldStatus.CAPTURED), status_reason=reason, updated_at=datetime.now(UTC))
        )

    def _record_hold_closed(self, s: Session, row: Any, status: HoldStatus, reason: str | None) -> None:
        hold_acc = L.hold_account(row.id)
        open_fen = L.normal_balance(hold_acc, store.raw_balance(s, hold_acc))
        if open_fen > 0:
            store.post(s, L.transfer(K_HOLD_RELEASE, row.id, hold_acc, L.CARD_AUTHORISATIONS, open_fen))
        s.execute(
            update(holds)
            .where(holds.c.id == row.id)
            .values(status=str(status), status_reason=reason, updated_at=datetime.now(UTC))
        )

    def _record_refund(
        self,
        s: Session,
        *,
        refund_id: str,
        command_id: str,
        hold_id: str,
        amount_fen: int,
        status: RefundStatus,
        provider_ref: str | None,
        reason: str,
        failure_reason: str | None = None,
        memo: str = "",
    ) -> None:
        """The refund's row and, unless it failed, the money leaving the hold's escrow (`memo` on its entry)."""
        s.execute(
            insert(refunds).values(
                id=refund_id,
                command_id=command_id,
                hold_id=hold_id,
                amount_fen=amount_fen,
                status=str(status),
                provider_ref=provider_ref,
                reason=reason,
                failure_reason=failure_reason,
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
        if status != RefundStatus.FAILED:
            store.post(
                s,
                L.transfer(
                    K_REFUND, refund_id, L.escrow_account(hold_id), L.PROVIDER_CASH, amount_fen, memo=memo
                ),
            )

    def _refund_view(self, row: Any) -> Refund:
        return Refund(
            id=row.id,
            hold_id=row.hold_id,
            amount_fen=int(row.amount_fen),
            status=RefundStatus(row.status),
            provider_ref=row.provider_ref,
            reason=row.reason or "",
            failure_reason=row.failure_reason,
        )

    # === internals: payouts ===================================================================================
    def _lock_payee(self, s: Session, user_id: str) -> Any:
        dialect = s.get_bind().dialect.name
        ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(payees)
        s.execute(
            ins.values(
                user_id=user_id, created_at=datetime.now(UTC), updated_at=datetime.now(UTC)
            ).on_conflict_do_nothing(index_elements=["user_id"])
        )
        return s.execute(select(payees).where(payees.c.user_id == user_id).with_for_update()).one()

    def _payout_row(self, s: Session, payout_id: str) -> Any:
        row = s.execute(select(payouts).where(payouts.c.payout_id == payout_id)).first()
        if row is None:
            raise NotFound(f"no payout with id {payout_id}")
        return row

    def _payout_view(self, row: Any) -> Payout:
        return Payout(
            payout_id=row.payout_id,
            payee_user_id=row.payee_user_id,
            payee_kind=row.payee_kind,
            amount_fen=int(row.amount_fen),
            purpose=row.purpose,
            reference_id=row.reference_id,
            requested_by=row.requested_by,
            status=PayoutStatus(row.status),
            withdrawal_id=row.withdrawal_id,
            provider_ref=row.provider_ref,
            failure_reason=row.failure_reason,
        )

    def _withdrawal_view(self, row: Any) -> Withdrawal:
        return Withdrawal(
            id=row.id,
            payee_user_id=row.payee_user_id,
            wallet=row.wallet,
            amount_fen=int(row.amount_fen),
            status=WithdrawalStatus(row.status),
            provider_ref=row.provider_ref,
            trigger_payout_id=row.trigger_payout_id,
            failure_reason=row.failure_reason,
        )

    def _accept_payout(
        self,
        uow: UnitOfWork,
        *,
        payout_id: str,
        payee_user_id: str,
        payee_kind: str,
        amount_fen: int,
        purpose: str,
        reference_id: str,
        requested_by: str,
        source_account: str,
        fee_fen: int = 0,
    ) -> tuple[Payout, str | None]:
        """Credit a payout to the payee's wallet; reserve a withdrawal when the wallet is to go out now.
        Returns the payout and the id of a withdrawal to send (None when it stays in the wallet)."""
        s = uow.session
        existing = s.execute(select(payouts).where(payouts.c.payout_id == payout_id)).first()
        if existing is not None:  # at most one payout per id, ever
            return self._payout_view(existing), None
        if not payout_id:
            raise ValidationFailed.field("payout_id", "required")
        if not payee_user_id:
            raise ValidationFailed.field("payee_user_id", "required")
        check_amount(amount_fen)
        wallet = wallet_for(payee_kind)
        if not wallet:
            raise ValidationFailed.field("payee_kind", "one of resident, seller, firm")
        self._lock_payee(s, payee_user_id)
        # again under the payee's lock: the same payout requested concurrently was committed while we waited
        existing = s.execute(select(payouts).where(payouts.c.payout_id == payout_id)).first()
        if existing is not None:
            return self._payout_view(existing), None
        wallet_acc = L.wallet_account(wallet, payee_user_id)
        store.post(
            s,
            L.entry(
                K_PAYOUT_CREDIT,
                payout_id,
                (source_account, amount_fen + fee_fen),
                (L.PLATFORM_FEES, -fee_fen),
                (wallet_acc, -amount_fen),
                memo=f"{purpose} {reference_id}",
            ),
        )
        balance = L.normal_balance(wallet_acc, store.raw_balance(s, wallet_acc))
        values = dict(
            payout_id=payout_id,
            payee_user_id=payee_user_id,
            payee_kind=payee_kind,
            wallet=wallet,
            amount_fen=amount_fen,
            purpose=purpose,
            reference_id=reference_id,
            requested_by=requested_by,
            source_account=source_account,
            requested_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        wd_id = None
        if payout_waits_for_threshold(wallet, balance, self.settings.payout_threshold_fen):
            ref = f"balance:{payout_id}"
            s.execute(insert(payouts).values(status=str(PayoutStatus.CREDITED), provider_ref=ref, **values))
            uow.emit(
                announced(
                    PayoutPaid(
                        payout_id=payout_id,
                        reference_id=reference_id,
                        amount_fen=amount_fen,
                        provider_ref=ref,
                        paid_at=datetime.now(UTC),
                        destination="balance",
                    )
                )
            )
        else:
            s.execute(insert(payouts).values(status=str(PayoutStatus.PENDING), **values))
            wd_id = self._reserve_withdrawal(
                uow, payee_user_id, wallet, balance, f"payout:{payout_id}", payout_id
            )
            s.execute(update(payouts).where(payouts.c.payout_id == payout_id).values(withdrawal_id=wd_id))
        return self._payout_view(self._payout_row(s, payout_id)), wd_id

    def _refuse_payout(self, uow: UnitOfWork, ev: PayoutRequested, reason: str) -> None:
        s = uow.session
        if s.execute(select(payouts.c.payout_id).where(payouts.c.payout_id == ev.payout_id)).first():
            return
        s.execute(
            insert(payouts).values(
                payout_id=ev.payout_id,
                payee_user_id=ev.payee_user_id or "?",
                payee_kind=ev.payee_kind[:16],
                wallet="",
                amount_fen=ev.amount_fen,
                purpose=ev.purpose,
                reference_id=ev.reference_id,
                requested_by=ev.requested_by,
                source_account="",
                status=str(PayoutStatus.FAILED),
                failure_reason=reason,
                requested_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
        uow.emit(
            announced(
                PayoutFailed(
                    payout_id=ev.payout_id,
                    reference_id=ev.reference_id,
                    amount_fen=ev.amount_fen,
                    reason=reason,
                    failed_at=datetime.now(UTC),
                )
            )
        )

    def _reserve_withdrawal(
        self,
        uow: UnitOfWork,
        user_id: str,
        wallet: str,
        amount_fen: int,
        command_id: str,
        trigger_payout_id: str | None,
    ) -> str:
        s = uow.session
        wd_id = command_scoped_id("wd", "withdraw", command_id)
        s.execute(
            insert(withdrawals).values(
                id=wd_id,
                command_id=command_id,
                payee_user_id=user_id,
                wallet=wallet,
                amount_fen=amount_fen,
                status=str(WithdrawalStatus.PENDING),
                trigger_payout_id=trigger_payout_id,
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
        store.post(
            s,
            L.transfer(
                K_WITHDRAWAL_RESERVE,
                wd_id,
                L.wallet_account(wallet, user_id),
                L.PAYOUTS_IN_TRANSIT,
                amount_fen,
            ),
        )
        # Durable hand-over to the sender: if this process dies now, payments' consumer sends it.
        uow.emit(
            WithdrawalRequested(
                withdrawal_id=wd_id,
                payee_user_id=user_id,
                amount_fen=amount_fen,
                requested_at=datetime.now(UTC),
            )
        )
        return wd_id

    def _try_send(self, wd_id: str) -> None:
        """Send a reserved withdrawal now. If the provider is unavailable it stays pending and its
        WithdrawalRequested event (with the consumer's retries) sends it later."""
        try:

            def work() -> None:
                with UnitOfWork(self.db) as uow:
                    self._send_withdrawal(uow, wd_id)

            retry_on_conflict(work)
        except ProviderUnavailable as exc:
            log.warning("withdrawal %s stays pending: %s", wd_id, exc.detail)

    def _send_withdrawal(self, uow: UnitOfWork, wd_id: str) -> None:
        s = uow.session
        first = s.execute(select(withdrawals.c.payee_user_id).where(withdrawals.c.id == wd_id)).first()
        if first is None:
            log.error("withdrawal %s not found", wd_id)
            return
        payee = self._lock_payee(s, first.payee_user_id)
        wd = s.execute(select(withdrawals).where(withdrawals.c.id == wd_id).with_for_update()).one()
        if wd.status != WithdrawalStatus.PENDING:
            return  # sent already (the API path and the event path may both try)
        destination = payee.provider_account_ref
        if not destination:
            if not getattr(self.provider, "opens_accounts_on_demand", False):
                self._fail_withdrawal(
                    uow, wd, "no_payout_account: the payee has not connected a payout account"
                )
                return
            destination = self.provider.create_payee_account(
                user_id=wd.payee_user_id,
                kind=wd.wallet,
                bank_account=None,
                idempotency_key=provider_idempotency_key("payee", f"{wd.payee_user_id}:"),
            )
            s.execute(
                update(payees)
                .where(payees.c.user_id == wd.payee_user_id)
                .values(provider_account_ref=destination, updated_at=datetime.now(UTC))
            )
        try:
            res = self.provider.transfer(
                destination=destination,
                amount_fen=int(wd.amount_fen),
                currency=self.currency,
                idempotency_key=provider_idempotency_key("withdrawal", wd_id),
                metadata={"withdrawal_id": wd_id, "payee_user_id": wd.payee_user_id},
            )
        except (InvalidRequest, CardDeclined) as exc:
            self._fail_withdrawal(uow, wd, f"{exc.extra.get('reason') or 'rejected'}: {exc.detail}")
            return
        self._withdrawal_paid(uow, wd, res.provider_ref)
        self._sync_transfer(uow, res.provider_ref, None)

    def _withdrawal_paid(self, uow: UnitOfWork, wd: Any, provider_ref: str) -> None:
        s = uow.session
        s.execute(
            update(withdrawals)
            .where(withdrawals.c.id == wd.id)
            .values(
                status=str(WithdrawalStatus.PAID), provider_ref=provider_ref, updated_at=datetime.now(UTC)
            )
        )
        store.post(
            s, L.transfer(K_WITHDRAWAL_PAID, wd.id, L.PAYOUTS_IN_TRANSIT, L.PROVIDER_CASH, int(wd.amount_fen))
        )
        if wd.trigger_payout_id:
            p = self._payout_row(s, wd.trigger_payout_id)
            if p.status == PayoutStatus.PENDING:
                s.execute(
                    update(payouts)
                    .where(payouts.c.payout_id == p.payout_id)
                    .values(
                        status=str(PayoutStatus.PAID), provider_ref=provider_ref, updated_at=datetime.now(UTC)
                    )
                )
                uow.emit(
                    announced(
                        PayoutPaid(
                            payout_id=p.payout_id,
                            reference_id=p.reference_id,
                            amount_fen=p.amount_fen,
                            provider_ref=provider_ref,
                            paid_at=datetime.now(UTC),
                            destination="provider",
                        )
                    )
                )

    def _fail_withdrawal(
        self, uow: UnitOfWork, wd: Any, reason: str, returned_fen: int | None = None
    ) -> None:
        """A withdrawal that failed (never left) or was returned: its money goes back to the wallet, and the
        payout that triggered it is reversed and reported failed."""
        s = uow.session
        wallet_acc = L.wallet_account(wd.wallet, wd.payee_user_id)
        returned = returned_fen is not None
        back = int(wd.amount_fen) if returned_fen is None else min(returned_fen, int(wd.amount_fen))
        if returned:
            store.post(
                s, L.transfer(K_WITHDRAWAL_RETURNED, wd.id, L.PROVIDER_CASH, wallet_acc, back, memo=reason)
            )
        else:
            store.post(
                s, L.transfer(K_WITHDRAWAL_FAILED, wd.id, L.PAYOUTS_IN_TRANSIT, wallet_acc, back, memo=reason)
            )
        s.execute(
            update(withdrawals)
            .where(withdrawals.c.id == wd.id)
            .values(
                status=str(WithdrawalStatus.RETURNED if returned else WithdrawalStatus.FAILED),
                failure_reason=reason,
                updated_at=datetime.now(UTC),
            )
        )
        if not wd.trigger_payout_id:
            return
        p = self._payout_row(s, wd.trigger_payout_id)
        if p.status not in (PayoutStatus.PENDING, PayoutStatus.PAID) or back < int(p.amount_fen):
            return
        self._reverse_entries(s, K_PAYOUT_CREDIT, p.payout_id, K_PAYOUT_REVERSAL, reason)
        s.execute(
            update(payouts)
            .where(payouts.c.payout_id == p.payout_id)
            .values(
                status=str(PayoutStatus.RETURNED if returned else PayoutStatus.FAILED),
                failure_reason=reason,
                updated_at=datetime.now(UTC),
            )
        )
        uow.emit(
            announced(
                PayoutFailed(
                    payout_id=p.payout_id,
                    reference_id=p.reference_id,
                    amount_fen=p.amount_fen,
                    reason=reason,
                    failed_at=datetime.now(UTC),
                    returned=returned,
                )
            )
        )

    def _reverse_entries(self, s: Session, kind: str, ref: str, new_kind: str, memo: str) -> None:
        rows = s.execute(
            select(store.ledger_lines.c.account, store.ledger_lines.c.amount_fen)
            .join(store.ledger_entries, store.ledger_entries.c.id == store.ledger_lines.c.entry_id)
            .where(store.ledger_entries.c.kind == kind, store.ledger_entries.c.ref == ref)
        ).all()
        if rows:
            store.post(s, L.entry(new_kind, ref, *[(r.account, -int(r.amount_fen)) for r in rows], memo=memo))

    # === internals: deriving state from provider events =======================================================
    def _events_of(self, s: Session, object_ref: str) -> list[ProviderEvent]:
        rows = s.execute(select(provider_events).where(provider_events.c.object_ref == object_ref)).all()
        return [
            ProviderEvent(
                id=r.id,
                type=r.type,
                object_kind=r.object_kind,
                object_ref=r.object_ref,
                created=int(r.created),
                status=r.status,
                amount_fen=None if r.amount_fen is None else int(r.amount_fen),
                parent_ref=r.parent_ref,
                failure_reason=r.failure_reason,
            )
            for r in rows
        ]

    def _sync_intent(self, uow: UnitOfWork, pi_ref: str | None) -> None:
        if not pi_ref:
            return
        s = uow.session
        found = s.execute(select(holds.c.id).where(holds.c.provider_ref == pi_ref)).first()
        if found is None:
            return  # not ours (or not yet recorded: our own command syncs it when it commits)
        row = self._hold_row(s, found.id, lock=True)
        state = derive_state(PAYMENT_INTENT, self._events_of(s, pi_ref))
        if state is None or row.status != HoldStatus.AUTHORISED:
            return
        if state.status == "cancelled":
            self._record_hold_closed(
                s, row, HoldStatus.CANCELLED, f"{PROVIDER_CANCELLED}: {state.failure_reason}"
            )
        elif state.status == "captured":
            self._record_capture(s, row, state.amount_fen or int(row.amount_fen), "captured at the provider")

    def _sync_refund(self, uow: UnitOfWork, re_ref: str | None, pi_ref: str | None) -> None:
        if not re_ref:
            return
        s = uow.session
        ours = s.execute(select(refunds.c.hold_id).where(refunds.c.provider_ref == re_ref)).first()
        hold_id = ours.hold_id if ours else None
        if hold_id is None and pi_ref:
            h = s.execute(select(holds.c.id).where(holds.c.provider_ref == pi_ref)).first()
            hold_id = h.id if h else None
        if hold_id is None:
            return
        hold_row = self._hold_row(s, hold_id, lock=True)  # serialises with a refund command still running
        state = derive_state(REFUND, self._events_of(s, re_ref))
        if state is None:
            return
        row = s.execute(select(refunds).where(refunds.c.provider_ref == re_ref)).first()
        if row is None:
            # A refund made at the provider directly (e.g. from its dashboard): book it if it fits the escrow.
            hold = self._hold_view(s, hold_row)
            amount = state.amount_fen or 0
            if (
                state.status == "succeeded"
                and hold.status == HoldStatus.CAPTURED
                and 0 < amount <= hold.refundable_fen
            ):
                self._record_refund(
                    s,
                    refund_id=command_scoped_id("rf", "provider", re_ref),
                    command_id=f"provider:{re_ref}",
                    hold_id=hold_id,
                    amount_fen=amount,
                    status=RefundStatus.SUCCEEDED,
                    provider_ref=re_ref,
                    reason="made at the provider",
                )
            elif state.status == "succeeded":
                log.error(
                    "provider refund %s of hold %s does not fit its escrow; left to reconciliation",
                    re_ref,
                    hold_id,
                )
            return
        if state.status == "failed" and row.status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING):
            store.post(
                s,
                L.transfer(
                    K_REFUND_REVERSAL,
                    row.id,
                    L.PROVIDER_CASH,
                    L.escrow_account(hold_id),
                    int(row.amount_fen),
                    memo=state.failure_reason or "refund failed",
                ),
            )
            s.execute(
                update(refunds)
                .where(refunds.c.id == row.id)
                .values(
                    status=str(RefundStatus.FAILED),
                    failure_reason=state.failure_reason,
                    updated_at=datetime.now(UTC),
                )
            )
        elif state.status == "succeeded" and row.status == RefundStatus.PENDING:
            s.execute(
                update(refunds)
                .where(refunds.c.id == row.id)
                .values(status=str(RefundStatus.SUCCEEDED), updated_at=datetime.now(UTC))
            )

    def _sync_transfer(self, uow: UnitOfWork, tr_ref: str | None, payload: Mapping[str, Any] | None) -> None:
        if not tr_ref:
            return
        s = uow.session
        first = s.execute(
            select(withdrawals.c.id, withdrawals.c.payee_user_id).where(withdrawals.c.provider_ref == tr_ref)
        ).first()
        if first is None and payload:
            # our command may have died after the provider paid: the transfer's metadata names the withdrawal
            wd_id = (((payload.get("data") or {}).get("object") or {}).get("metadata") or {}).get(
                "withdrawal_id"
            )
            if wd_id:
                first = s.execute(
                    select(withdrawals.c.id, withdrawals.c.payee_user_id).where(withdrawals.c.id == wd_id)
                ).first()
        if first is None:
            return
        self._lock_payee(s, first.payee_user_id)
        wd = s.execute(select(withdrawals).where(withdrawals.c.id == first.id).with_for_update()).one()
        state = derive_state(TRANSFER, self._events_of(s, tr_ref))
        if state is None:
            return
        if wd.status == WithdrawalStatus.PENDING:
            self._withdrawal_paid(uow, wd, tr_ref)
            wd = s.execute(select(withdrawals).where(withdrawals.c.id == first.id)).one()
        if state.status == "reversed" and wd.status == WithdrawalStatus.PAID:
            self._fail_withdrawal(
                uow,
                wd,
                f"returned: {state.failure_reason}",
                returned_fen=state.amount_fen or int(wd.amount_fen),
            )


PAYMENTS: Port[Payments] = Port("payments")


def payments_of(rt: ServiceRuntime) -> Payments:
    """The runtime's payments port (built by the service's setup)."""
    return rt.ports[PAYMENTS]
