"""The sandbox provider: a test-mode payment provider that runs in-process, without network.

It behaves like Stripe in test mode, so the code above it cannot tell the difference:

- PaymentIntents with manual capture (authorise → capture at most the amount → refunds up to what was captured),
  cancel, refunds (full and partial), connected accounts and transfers (payouts); an intent can be opened first
  and confirmed later (`open_intent`, `confirm_intent`), each attempt a charge: after a decline the payer tries
  another method on the same intent, as on Stripe. It has no client library, so its payer confirms through our
  route (no `client_confirmation` capability); the client secret exists for the contract's sake;
- Stripe's documented test payment methods and card numbers, including declines (`TEST_PAYMENT_METHODS`,
  `TEST_CARD_NUMBERS`): `pm_card_visa` authorises, `pm_card_chargeCustomerFail` and `4000000000000002` decline;
- Idempotency-Key: a call repeated with the same key returns the first result (a declined call too), the same
  key with other parameters is refused;
- events in Stripe's shape (`{id, type, created, data: {object}}`) that the platform pulls instead of receiving
  webhooks (no network), including the asynchronous ones: a refund on `pm_card_refundFail` / 4000000000005126
  fails after it succeeded; a transfer to an account opened with the test bank account 000111111113 is returned;
- Stripe's clock for authorisations: one still uncaptured `HOLD_VALID_DAYS` after it was made lapses
  (`lapse_authorisations(now)`, `payment_intent.canceled` with `cancellation_reason: automatic`).

Its state lives in its own database (`payments_sandbox`: a file next to the others, or its own PostgreSQL schema),
never in payments' tables: a provider is another system, and the reconciliation job compares the two.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Column, Integer, String, Table, Text, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.contracts.payments import HOLD_VALID_DAYS
from services.kernel.db import Database, ensure_schema, new_metadata
from services.kernel.ids import new_id
from services.kernel.settings import Settings

from ..ports import (
    CONFIRMS_AGAIN_AFTER_DECLINE,
    CONNECT_PAYOUTS,
    IDEMPOTENCY_KEYS,
    PULL_EVENTS,
    REFUSES_OVER_REFUND,
    AuthResult,
    BadSignature,
    CardDeclined,
    IntentSnapshot,
    InvalidRequest,
    OpenedIntent,
    ProviderUnavailable,
    RefundResult,
    TransferResult,
)

T = TypeVar("T")

# payment method → None (authorises) or the decline code. See https://docs.stripe.com/testing
_OK = None
TEST_PAYMENT_METHODS: dict[str, str | None] = {
    "pm_card_visa": _OK,
    "pm_card_visa_debit": _OK,
    "pm_card_mastercard": _OK,
    "pm_card_amex": _OK,
    "pm_card_unionpay": _OK,
    "pm_card_refundFail": _OK,  # authorises and captures; its refunds fail asynchronously
    "pm_card_chargeCustomerFail": "card_declined",
    "pm_card_visa_chargeDeclined": "generic_decline",
    "pm_card_visa_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "pm_card_visa_chargeDeclinedLostCard": "lost_card",
    "pm_card_visa_chargeDeclinedStolenCard": "stolen_card",
    "pm_card_chargeDeclinedExpiredCard": "expired_card",
    "pm_card_chargeDeclinedIncorrectCvc": "incorrect_cvc",
    "pm_card_chargeDeclinedProcessingError": "processing_error",
    "pm_card_chargeDeclinedFraudulent": "fraudulent",
    # 3-D Secure: cannot complete without the cardholder, so a server-side hold is declined
    "pm_card_authenticationRequired": "authentication_required",
}
TEST_CARD_NUMBERS: dict[str, str | None] = {
    "4242424242424242": _OK,
    "4000056655665556": _OK,  # Visa debit
    "5555555555554444": _OK,
    "6200000000000005": _OK,  # UnionPay (银联)
    "4000000000005126": _OK,  # refunds fail asynchronously
    "4000000000000002": "generic_decline",
    "4000000000009995": "insufficient_funds",
    "4000000000009987": "lost_card",
    "4000000000009979": "stolen_card",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
    "4000000000000119": "processing_error",
    "4100000000000019": "fraudulent",
    "4000000000000341": "card_declined",
    "4000002500003155": "authentication_required",
    "4000002760003184": "authentication_required",
}
REFUND_FAILS_LATER = {"pm_card_refundFail", "4000000000005126"}
# test bank accounts of connected accounts (Stripe's Connect test numbers)
BANK_ACCOUNT_NO_ACCOUNT = "000111111116"  # transfers fail: the account does not exist
BANK_ACCOUNT_CLOSED = "000111111113"  # transfers go out, then come back (account closed)

sandbox_metadata = new_metadata()

sbx_intents = Table(
    "sbx_intents",
    sandbox_metadata,
    Column("id", String(64), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("amount_received", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_method", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("cancellation_reason", String(32), nullable=True),
    Column("decline_code", String(64), nullable=True),
    Column("metadata", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
)
# each confirmation of an opened intent (Stripe's charges): the intent's latest one tells its payer's last attempt
sbx_charges = Table(
    "sbx_charges",
    sandbox_metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("payment_intent", String(64), nullable=False, index=True),
    Column("payment_method", String(128), nullable=False),
    Column("decline_code", String(64), nullable=True),
    Column("created", BigInteger, nullable=False),
)
sbx_refunds = Table(
    "sbx_refunds",
    sandbox_metadata,
    Column("id", String(64), primary_key=True),
    Column("payment_intent", String(64), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_reason", String(64), nullable=True),
    Column("metadata", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
)
sbx_accounts = Table(
    "sbx_accounts",
    sandbox_metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("bank_account", String(64), nullable=True),
    Column("created", BigInteger, nullable=False),
)
sbx_transfers = Table(
    "sbx_transfers",
    sandbox_metadata,
    Column("id", String(64), primary_key=True),
    Column("destination", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("amount_reversed", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("metadata", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
)
sbx_idempotency = Table(
    "sbx_idempotency",
    sandbox_metadata,
    Column("key", String(300), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", Text, nullable=True),
    Column("created", BigInteger, nullable=False),
)
sbx_events = Table(
    "sbx_events",
    sandbox_metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("delivered", Integer, nullable=False, default=0),
)

_RESULT_TYPES: dict[str, type] = {
    c.__name__: c for c in (AuthResult, IntentSnapshot, OpenedIntent, RefundResult, TransferResult)
}


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number]
    odd = digits[-1::-2]
    even = [sum(divmod(2 * d, 10)) for d in digits[-2::-2]]
    return (sum(odd) + sum(even)) % 10 == 0


def decline_code_for(payment_method: str) -> str | None:
    """None when the test payment method authorises; the decline code when it declines. Raises InvalidRequest for
    an unknown payment method (as Stripe answers `resource_missing`)."""
    pm = payment_method.strip()
    if pm in TEST_PAYMENT_METHODS:
        return TEST_PAYMENT_METHODS[pm]
    digits = pm.replace(" ", "").replace("-", "")
    if digits.isdigit():
        if digits in TEST_CARD_NUMBERS:
            return TEST_CARD_NUMBERS[digits]
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return None
        raise InvalidRequest(
            "Your card number is incorrect.", code="incorrect_number", param="payment_method"
        )
    raise InvalidRequest(f"No such PaymentMethod: '{pm}'", code="resource_missing", param="payment_method")


class SandboxProvider:
    name = "sandbox"
    capabilities = frozenset(
        {CONNECT_PAYOUTS, IDEMPOTENCY_KEYS, PULL_EVENTS, REFUSES_OVER_REFUND, CONFIRMS_AGAIN_AFTER_DECLINE}
    )
    # a payee without a payout account gets a sandbox one on their first payout (the embedded run just works)
    opens_accounts_on_demand = True

    def __init__(self, db: Database):
        self.db = db
        ensure_schema(db.engine, db.schema)
        sandbox_metadata.create_all(db.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxProvider:
        return cls(
            Database(
                settings.db_url("payments_sandbox"),
                schema=settings.db_schema("payments_sandbox"),
                pool_size=5,
            )
        )

    def close(self) -> None:
        self.db.dispose()

    # --- idempotency: the first outcome of a key is the outcome ---------------------------------------------
    def _idempotent(self, key: str, op: str, params: Mapping[str, Any], fn: Callable[[Any], T]) -> T:
        request_hash = hashlib.sha256(
            json.dumps([op, params], sort_keys=True, default=str).encode()
        ).hexdigest()
        for _ in range(3):
            try:
                with self.db.session() as s, s.begin():
                    s.execute(
                        insert(sbx_idempotency).values(
                            key=key, request_hash=request_hash, response=None, created=int(time.time())
                        )
                    )
                    try:
                        result = fn(s)
                    except (CardDeclined, InvalidRequest) as exc:
                        # Stripe stores the result of any request that started executing, declines included.
                        s.execute(
                            update(sbx_idempotency)
                            .where(sbx_idempotency.c.key == key)
                            .values(response=json.dumps({"error": _error_json(exc)}))
                        )
                        failure: Exception = exc
                    else:
                        s.execute(
                            update(sbx_idempotency)
                            .where(sbx_idempotency.c.key == key)
                            .values(
                                response=json.dumps(
                                    {"type": type(result).__name__, "data": _result_json(result)}
                                )
                            )
                        )
                        return result
                raise failure
            except IntegrityError:
                pass  # the key exists: replay its outcome
            with self.db.session(readonly=True) as s:
                row = s.execute(select(sbx_idempotency).where(sbx_idempotency.c.key == key)).first()
            if row is None:
                continue
            if row.request_hash != request_hash:
                raise InvalidRequest(
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    code="idempotency_error",
                )
            if row.response is None:
                raise ProviderUnavailable("a request with this idempotency key is still being processed")
            stored = json.loads(row.response)
            if "error" in stored:
                raise _error_from_json(stored["error"])
            return _RESULT_TYPES[stored["type"]](**stored["data"])  # type: ignore[return-value]
        raise ProviderUnavailable("idempotency key contention")

    # --- PaymentIntents ---------------------------------------------------------------------------------------
    def authorise(
        self,
        *,
        amount_fen: int,
        currency: str,
        payment_method: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> AuthResult:
        params = dict(
            amount=amount_fen, currency=currency, payment_method=payment_method, metadata=dict(metadata)
        )

        def run(s: Any) -> AuthResult:
            decline = decline_code_for(payment_method)
            pi_id = "pi_sbx_" + new_id()[-20:]
            s.execute(
                insert(sbx_intents).values(
                    id=pi_id,
                    amount=amount_fen,
                    amount_received=0,
                    currency=currency,
                    payment_method=payment_method,
                    status="requires_payment_method" if decline else "requires_capture",
                    decline_code=decline,
                    metadata=json.dumps(dict(metadata)),
                    created=int(time.time()),
                )
            )
            if decline:
                self._event(s, "payment_intent.payment_failed", self._intent_json(s, pi_id))
                raise CardDeclined(decline, _DECLINE_MESSAGES.get(decline, "Your card was declined."), pi_id)
            self._event(s, "payment_intent.amount_capturable_updated", self._intent_json(s, pi_id))
            return AuthResult(pi_id, "authorised")

        try:
            return self._idempotent(idempotency_key, "authorise", params, run)
        except CardDeclined as exc:
            return AuthResult(exc.provider_ref or "", "declined", exc.code, exc.detail)

    def open_intent(
        self, *, amount_fen: int, currency: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> OpenedIntent:
        params = dict(amount=amount_fen, currency=currency, metadata=dict(metadata))

        def run(s: Any) -> OpenedIntent:
            pi_id = "pi_sbx_" + new_id()[-20:]
            s.execute(
                insert(sbx_intents).values(
                    id=pi_id,
                    amount=amount_fen,
                    amount_received=0,
                    currency=currency,
                    payment_method="",
                    status="requires_payment_method",
                    metadata=json.dumps(dict(metadata)),
                    created=int(time.time()),
                )
            )
            return OpenedIntent(pi_id, _client_secret(pi_id))

        return self._idempotent(idempotency_key, "open", params, run)

    def confirm_intent(self, provider_ref: str, *, payment_method: str, idempotency_key: str) -> AuthResult:
        def run(s: Any) -> AuthResult:
            pi = self._intent(s, provider_ref, lock=True)
            if pi.status != "requires_payment_method":
                raise InvalidRequest(
                    f"This PaymentIntent's payment_method could not be updated because it has a status of "
                    f"{pi.status}.",
                    code="payment_intent_unexpected_state",
                )
            decline = decline_code_for(payment_method)
            s.execute(
                insert(sbx_charges).values(
                    id="ch_sbx_" + new_id()[-20:],
                    payment_intent=provider_ref,
                    payment_method=payment_method,
                    decline_code=decline,
                    created=int(time.time()),
                )
            )
            s.execute(
                update(sbx_intents)
                .where(sbx_intents.c.id == provider_ref)
                .values(
                    payment_method=payment_method,
                    status="requires_payment_method" if decline else "requires_capture",
                    decline_code=decline,
                )
            )
            if decline:
                self._event(s, "payment_intent.payment_failed", self._intent_json(s, provider_ref))
                raise CardDeclined(
                    decline, _DECLINE_MESSAGES.get(decline, "Your card was declined."), provider_ref
                )
            self._event(s, "payment_intent.amount_capturable_updated", self._intent_json(s, provider_ref))
            return AuthResult(provider_ref, "authorised")

        try:
            return self._idempotent(
                idempotency_key, "confirm", dict(pi=provider_ref, payment_method=payment_method), run
            )
        except CardDeclined as exc:
            return AuthResult(provider_ref, "declined", exc.code, exc.detail)

    def confirm_with_client_secret(self, client_secret: str, payment_method: str) -> AuthResult:
        """What a payer's client would do with the client secret (the contract suite's payer; the sandbox has no
        client library, so the platform's route calls `confirm_intent` instead)."""
        pi_id = client_secret.split("_secret_")[0]
        if client_secret != _client_secret(pi_id):
            raise InvalidRequest("Invalid client secret.", code="invalid_client_secret", http_status=401)
        return self.confirm_intent(pi_id, payment_method=payment_method, idempotency_key=new_id("client"))

    def capture(self, provider_ref: str, *, amount_fen: int, idempotency_key: str) -> IntentSnapshot:
        def run(s: Any) -> IntentSnapshot:
            pi = self._intent(s, provider_ref, lock=True)
            if pi.status != "requires_capture":
                raise InvalidRequest(
                    f"This PaymentIntent could not be captured because it has a status of {pi.status}.",
                    code="payment_intent_unexpected_state",
                )
            if amount_fen > pi.amount:
                raise InvalidRequest(
                    "The amount to capture exceeds the amount capturable.",
                    code="amount_too_large",
                    param="amount_to_capture",
                )
            s.execute(
                update(sbx_intents)
                .where(sbx_intents.c.id == provider_ref)
                .values(status="succeeded", amount_received=amount_fen)
            )
            self._event(s, "payment_intent.succeeded", self._intent_json(s, provider_ref))
            return self._snapshot(s, provider_ref)

        return self._idempotent(idempotency_key, "capture", dict(pi=provider_ref, amount=amount_fen), run)

    def cancel(self, provider_ref: str, *, idempotency_key: str) -> IntentSnapshot:
        def run(s: Any) -> IntentSnapshot:
            self._cancel(s, provider_ref, "requested_by_customer")
            return self._snapshot(s, provider_ref)

        return self._idempotent(idempotency_key, "cancel", dict(pi=provider_ref), run)

    def _cancel(self, s: Any, provider_ref: str, reason: str) -> None:
        pi = self._intent(s, provider_ref, lock=True)
        if pi.status not in ("requires_capture", "requires_payment_method"):
            raise InvalidRequest(
                f"You cannot cancel this PaymentIntent because it has a status of {pi.status}.",
                code="payment_intent_unexpected_state",
            )
        s.execute(
            update(sbx_intents)
            .where(sbx_intents.c.id == provider_ref)
            .values(status="canceled", cancellation_reason=reason)
        )
        self._event(s, "payment_intent.canceled", self._intent_json(s, provider_ref))

    def refund(
        self, provider_ref: str, *, amount_fen: int, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundResult:
        def run(s: Any) -> RefundResult:
            pi = self._intent(s, provider_ref, lock=True)
            if pi.status != "succeeded":
                raise InvalidRequest(
                    "This PaymentIntent has no successful charge to refund.", code="charge_not_refundable"
                )
            left = pi.amount_received - self._refunded(s, provider_ref)
            if amount_fen > left:
                raise InvalidRequest(
                    f"Refund amount ({amount_fen}) is greater than unrefunded amount on charge ({left})",
                    code="amount_too_large",
                    param="amount",
                )
            re_id = "re_sbx_" + new_id()[-20:]
            s.execute(
                insert(sbx_refunds).values(
                    id=re_id,
                    payment_intent=provider_ref,
                    amount=amount_fen,
                    status="succeeded",
                    metadata=json.dumps(dict(metadata)),
                    created=int(time.time()),
                )
            )
            self._event(s, "refund.created", self._refund_json(s, re_id))
            if pi.payment_method.replace(" ", "") in REFUND_FAILS_LATER:
                # "Some time later, its status transitions to failed and sends charge.refund.updated"
                s.execute(
                    update(sbx_refunds)
                    .where(sbx_refunds.c.id == re_id)
                    .values(status="failed", failure_reason="expired_or_canceled_card")
                )
                self._event(s, "charge.refund.updated", self._refund_json(s, re_id), delay_s=1)
            return RefundResult(re_id, "succeeded", amount_fen)

        return self._idempotent(idempotency_key, "refund", dict(pi=provider_ref, amount=amount_fen), run)

    # --- Connect: accounts and transfers ---------------------------------------------------------------------
    def create_payee_account(
        self, *, user_id: str, kind: str, bank_account: str | None, idempotency_key: str
    ) -> str:
        def run(s: Any) -> TransferResult:
            acct = "acct_sbx_" + new_id()[-16:]
            s.execute(
                insert(sbx_accounts).values(
                    id=acct, user_id=user_id, kind=kind, bank_account=bank_account, created=int(time.time())
                )
            )
            return TransferResult(acct, "account", 0)  # (the idempotency store keeps one of its result types)

        return self._idempotent(
            idempotency_key, "account", dict(user=user_id, kind=kind, bank=bank_account), run
        ).provider_ref

    def transfer(
        self,
        *,
        destination: str,
        amount_fen: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> TransferResult:
        def run(s: Any) -> TransferResult:
            acct = s.execute(select(sbx_accounts).where(sbx_accounts.c.id == destination)).first()
            if acct is None:
                raise InvalidRequest(
                    f"No such destination: '{destination}'", code="resource_missing", param="destination"
                )
            if acct.bank_account == BANK_ACCOUNT_NO_ACCOUNT:
                raise InvalidRequest(
                    "The bank account of the destination account does not exist.",
                    code="no_account",
                    param="destination",
                )
            tr_id = "tr_sbx_" + new_id()[-20:]
            s.execute(
                insert(sbx_transfers).values(
                    id=tr_id,
                    destination=destination,
                    amount=amount_fen,
                    amount_reversed=0,
                    currency=currency,
                    metadata=json.dumps(dict(metadata)),
                    created=int(time.time()),
                )
            )
            self._event(s, "transfer.created", self._transfer_json(s, tr_id))
            if acct.bank_account == BANK_ACCOUNT_CLOSED:
                self._reverse(s, tr_id, "account_closed", delay_s=1)
            return TransferResult(tr_id, "paid", amount_fen)

        return self._idempotent(
            idempotency_key, "transfer", dict(dest=destination, amount=amount_fen, currency=currency), run
        )

    def _reverse(self, s: Any, tr_id: str, reason: str, delay_s: int = 0) -> None:
        tr = s.execute(select(sbx_transfers).where(sbx_transfers.c.id == tr_id).with_for_update()).first()
        if tr is None:
            raise InvalidRequest(f"No such transfer: '{tr_id}'", code="resource_missing")
        meta = json.loads(tr.metadata) | {"reversal_reason": reason}
        s.execute(
            update(sbx_transfers)
            .where(sbx_transfers.c.id == tr_id)
            .values(amount_reversed=tr.amount, metadata=json.dumps(meta))
        )
        self._event(s, "transfer.reversed", self._transfer_json(s, tr_id), delay_s=delay_s)

    # --- reads (reconciliation) ------------------------------------------------------------------------------
    def retrieve_intent(self, provider_ref: str) -> IntentSnapshot:
        with self.db.session(readonly=True) as s:
            return self._snapshot(s, provider_ref)

    def retrieve_refund(self, provider_ref: str) -> RefundResult:
        with self.db.session(readonly=True) as s:
            r = s.execute(select(sbx_refunds).where(sbx_refunds.c.id == provider_ref)).first()
        if r is None:
            raise InvalidRequest(
                f"No such refund: '{provider_ref}'", code="resource_missing", http_status=404
            )
        return RefundResult(r.id, r.status, r.amount, r.failure_reason)

    def retrieve_transfer(self, provider_ref: str) -> TransferResult:
        with self.db.session(readonly=True) as s:
            t = s.execute(select(sbx_transfers).where(sbx_transfers.c.id == provider_ref)).first()
        if t is None:
            raise InvalidRequest(
                f"No such transfer: '{provider_ref}'", code="resource_missing", http_status=404
            )
        return TransferResult(t.id, "reversed" if t.amount_reversed else "paid", t.amount, t.amount_reversed)

    # --- events ----------------------------------------------------------------------------------------------
    def verify_webhook(self, payload: bytes, signature: str | None) -> Mapping[str, Any]:
        raise BadSignature("the sandbox provider sends no webhooks (its events are pulled)")

    def pull_events(self, limit: int = 100) -> list[Mapping[str, Any]]:
        with self.db.session(readonly=True) as s:
            rows = s.execute(
                select(sbx_events.c.payload)
                .where(sbx_events.c.delivered == 0)
                .order_by(sbx_events.c.seq)
                .limit(limit)
            ).all()
        return [json.loads(r.payload) for r in rows]

    def ack_events(self, event_ids: list[str]) -> None:
        if event_ids:
            with self.db.session() as s, s.begin():
                s.execute(update(sbx_events).where(sbx_events.c.id.in_(event_ids)).values(delivered=1))

    # --- what happens on the provider's side without us (tests and demos drive these) -------------------------
    def expire_authorisation(self, provider_ref: str) -> None:
        """An uncaptured authorisation lapses (Stripe cancels it after 7 days)."""
        with self.db.session() as s, s.begin():
            self._cancel(s, provider_ref, "automatic")

    def lapse_authorisations(self, now: float | None = None) -> list[str]:
        """What Stripe's clock does: every authorisation still uncaptured `HOLD_VALID_DAYS` after it was made
        (its last charge, or the intent's creation when it was created confirmed) lapses. `now`: epoch seconds
        (tests move the clock). Returns the intents that lapsed."""
        cutoff = (time.time() if now is None else now) - HOLD_VALID_DAYS * 86400
        authorised_at = func.coalesce(
            select(func.max(sbx_charges.c.created))
            .where(sbx_charges.c.payment_intent == sbx_intents.c.id)
            .scalar_subquery(),
            sbx_intents.c.created,
        )
        with self.db.session() as s, s.begin():
            due = s.scalars(
                select(sbx_intents.c.id).where(
                    sbx_intents.c.status == "requires_capture", authorised_at <= cutoff
                )
            ).all()
            for pi in due:
                self._cancel(s, pi, "automatic")
        return list(due)

    def reverse_transfer(self, provider_ref: str, reason: str = "returned") -> None:
        """The payee's bank returns a payout (转账退回)."""
        with self.db.session() as s, s.begin():
            self._reverse(s, provider_ref, reason)

    def fail_refund(self, provider_ref: str, reason: str = "expired_or_canceled_card") -> None:
        with self.db.session() as s, s.begin():
            s.execute(
                update(sbx_refunds)
                .where(sbx_refunds.c.id == provider_ref)
                .values(status="failed", failure_reason=reason)
            )
            self._event(s, "charge.refund.updated", self._refund_json(s, provider_ref))

    # --- internals -------------------------------------------------------------------------------------------
    def _intent(self, s: Any, provider_ref: str, lock: bool = False) -> Any:
        q = select(sbx_intents).where(sbx_intents.c.id == provider_ref)
        row = s.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise InvalidRequest(
                f"No such payment_intent: '{provider_ref}'", code="resource_missing", http_status=404
            )
        return row

    def _refunded(self, s: Any, provider_ref: str) -> int:
        rows = s.execute(
            select(sbx_refunds.c.amount, sbx_refunds.c.status).where(
                sbx_refunds.c.payment_intent == provider_ref
            )
        ).all()
        return sum(r.amount for r in rows if r.status in ("succeeded", "pending"))

    def _latest_charge(self, s: Any, provider_ref: str) -> Any:
        return s.execute(
            select(sbx_charges)
            .where(sbx_charges.c.payment_intent == provider_ref)
            .order_by(sbx_charges.c.seq.desc())
            .limit(1)
        ).first()

    def _snapshot(self, s: Any, provider_ref: str) -> IntentSnapshot:
        pi = self._intent(s, provider_ref)
        status = {
            "requires_capture": "authorised",
            "succeeded": "captured",
            "canceled": "cancelled",
            "requires_payment_method": "declined" if pi.decline_code else "open",
        }.get(pi.status, "other")
        charge = self._latest_charge(s, provider_ref)
        return IntentSnapshot(
            pi.id,
            status,
            pi.amount,
            pi.amount_received,
            self._refunded(s, provider_ref),
            payment_method=pi.payment_method or None,
            decline_code=pi.decline_code if status == "declined" else None,
            decline_message=_DECLINE_MESSAGES.get(pi.decline_code or "", "Your card was declined.")
            if status == "declined"
            else None,
            attempt_ref=charge.id if charge is not None else None,
        )

    def _intent_json(self, s: Any, pi_id: str) -> dict[str, Any]:
        pi = self._intent(s, pi_id)
        return {
            "id": pi.id,
            "object": "payment_intent",
            "amount": pi.amount,
            "amount_capturable": pi.amount if pi.status == "requires_capture" else 0,
            "amount_received": pi.amount_received,
            "currency": pi.currency,
            "status": pi.status,
            "capture_method": "manual",
            "cancellation_reason": pi.cancellation_reason,
            "last_payment_error": {"code": "card_declined", "decline_code": pi.decline_code}
            if pi.decline_code
            else None,
            "latest_charge": getattr(self._latest_charge(s, pi_id), "id", None),
            "metadata": json.loads(pi.metadata),
            "created": pi.created,
        }

    def _refund_json(self, s: Any, re_id: str) -> dict[str, Any]:
        r = s.execute(select(sbx_refunds).where(sbx_refunds.c.id == re_id)).one()
        return {
            "id": r.id,
            "object": "refund",
            "amount": r.amount,
            "payment_intent": r.payment_intent,
            "status": r.status,
            "failure_reason": r.failure_reason,
            "metadata": json.loads(r.metadata),
            "created": r.created,
        }

    def _transfer_json(self, s: Any, tr_id: str) -> dict[str, Any]:
        t = s.execute(select(sbx_transfers).where(sbx_transfers.c.id == tr_id)).one()
        return {
            "id": t.id,
            "object": "transfer",
            "amount": t.amount,
            "amount_reversed": t.amount_reversed,
            "reversed": t.amount_reversed >= t.amount,
            "currency": t.currency,
            "destination": t.destination,
            "metadata": json.loads(t.metadata),
            "created": t.created,
        }

    def _event(self, s: Any, etype: str, obj: dict[str, Any], delay_s: int = 0) -> None:
        ev_id = "evt_sbx_" + new_id()[-20:]
        payload = {
            "id": ev_id,
            "object": "event",
            "type": etype,
            "created": int(time.time()) + delay_s,
            "livemode": False,
            "data": {"object": obj},
        }
        s.execute(insert(sbx_events).values(id=ev_id, type=etype, payload=json.dumps(payload), delivered=0))


def _client_secret(pi_id: str) -> str:
    # derived from the id, so nothing more to store; not a secret worth the name, and the sandbox never hands it to
    # a payer (it has no client library: its payers confirm through the platform's route)
    return f"{pi_id}_secret_" + hashlib.sha256(f"sandbox-client-secret:{pi_id}".encode()).hexdigest()[:24]


_DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "fraudulent": "Your card was declined.",
}


def _result_json(result: Any) -> dict[str, Any]:
    data = asdict(result)
    data.pop("raw", None)
    return data


def _error_json(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, CardDeclined):
        return {"kind": "declined", "code": exc.code, "message": exc.detail, "ref": exc.provider_ref}
    assert isinstance(exc, InvalidRequest)
    return {
        "kind": "invalid",
        "code": exc.code,
        "message": exc.detail,
        "param": exc.param,
        "http_status": exc.http_status,
    }


def _error_from_json(d: dict[str, Any]) -> Exception:
    if d["kind"] == "declined":
        return CardDeclined(d["code"], d["message"], d.get("ref"))
    return InvalidRequest(
        d["message"], code=d.get("code"), param=d.get("param"), http_status=d.get("http_status", 400)
    )
