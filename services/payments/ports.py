"""The payments port (what other code calls) and the provider port (what each adapter implements).

`PaymentsPort` is the one port of the issue: authorise (hold), capture, cancel, refund, pay out, balances. Its
implementation (`handlers.Payments`) keeps the real ledger whatever the provider; it is composed with a
`PaymentProvider` chosen by configuration alone (`PAYMENTS=sandbox|stripe`, see `adapters.make_provider`).
Every money-moving method takes a `command_id` chosen by the caller: the same command retried acts once, and the
provider call it makes carries an idempotency key derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.kernel.errors import DomainError

from .domain.model import Balance, Hold, Payout, Refund, Withdrawal

# --- capability flags of a provider (the contract suite reads them) ------------------------------------------
#: connected accounts and transfers (payouts to people and firms)
CONNECT_PAYOUTS = "connect_payouts"
#: the provider honours Idempotency-Key (a replayed call returns the first result)
IDEMPOTENCY_KEYS = "idempotency_keys"
#: the provider pushes signed webhooks
WEBHOOKS = "webhooks"
#: the provider's events can be pulled (the sandbox: no network, so no webhooks)
PULL_EVENTS = "pull_events"
#: the provider itself refuses a refund above what is left of the charge
REFUSES_OVER_REFUND = "refuses_over_refund"
#: the payer's own client confirms an opened PaymentIntent with its client secret (Stripe.js); without it (the
#: sandbox: no network, no client library) the payer confirms through our route, which calls `confirm_intent`
CLIENT_CONFIRMATION = "client_confirmation"
#: after a declined attempt the same PaymentIntent can be confirmed again with another method (Stripe does)
CONFIRMS_AGAIN_AFTER_DECLINE = "confirms_again_after_decline"


class PaymentsPort(Protocol):
    def authorise(
        self,
        *,
        command_id: str,
        payer_user_id: str,
        amount_fen: int,
        payment_method: str,
        reference_id: str = "",
    ) -> Hold: ...

    def capture(self, *, command_id: str, hold_id: str, amount_fen: int | None = None) -> Hold: ...

    def cancel(self, *, command_id: str, hold_id: str) -> Hold: ...

    def refund(
        self, *, command_id: str, hold_id: str, amount_fen: int | None = None, reason: str = ""
    ) -> Refund: ...

    def release(
        self,
        *,
        command_id: str,
        hold_id: str,
        payee_user_id: str,
        payee_kind: str = "seller",
        fee_fen: int = 0,
    ) -> Payout: ...

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
    ) -> Payout: ...

    def withdraw(
        self, *, command_id: str, user_id: str, wallet: str = "resident", amount_fen: int | None = None
    ) -> Withdrawal: ...

    def register_payee(
        self,
        *,
        user_id: str,
        kind: str,
        provider_account_ref: str | None = None,
        bank_account: str | None = None,
    ) -> str: ...

    def balance(self, user_id: str) -> Balance: ...

    def get_hold(self, hold_id: str) -> Hold: ...

    def get_payout(self, payout_id: str) -> Payout: ...

    def get_withdrawal(self, withdrawal_id: str) -> Withdrawal: ...


# --- the provider port ---------------------------------------------------------------------------------------


class ProviderError(DomainError):
    """The provider refused or failed a call."""


class CardDeclined(ProviderError):
    """The card (or payment method) was declined: an outcome, not a fault."""

    def __init__(self, code: str, message: str, provider_ref: str | None = None):
        super().__init__(message, reason=code)
        self.code = code
        self.provider_ref = provider_ref


class InvalidRequest(ProviderError):
    """The provider rejected the request (unknown object or payment method, bad state, ...). `param` names the
    field when the provider said which."""

    status = 422
    slug = "provider-rejected"
    title = "Rejected by the payment provider"

    def __init__(
        self, message: str, code: str | None = None, param: str | None = None, http_status: int = 400
    ):
        super().__init__(message, reason=code or "invalid_request")
        self.code = code
        self.param = param
        self.http_status = http_status


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or failed (network, 5xx, rate limit): retry the same command."""

    status = 502
    slug = "provider-unavailable"
    title = "Payment provider unavailable"


@dataclass(frozen=True)
class AuthResult:
    provider_ref: str
    status: str  # authorised | declined
    decline_code: str | None = None
    decline_message: str | None = None


@dataclass(frozen=True)
class OpenedIntent:
    """A PaymentIntent opened for its payer to confirm: unconfirmed, manual capture."""

    provider_ref: str
    client_secret: (
        str  # what the payer's client confirms with (Stripe.js); never logged, never in events' keys
    )


@dataclass(frozen=True)
class IntentSnapshot:
    """A PaymentIntent as the provider sees it now (for reconciliation, and to learn what its payer did)."""

    provider_ref: str
    # open (waiting for its payer: no payment method yet, or 3-D Secure under way) | authorised | captured |
    # cancelled | declined (the payer's last attempt failed; they may try again) | other
    status: str
    authorised_fen: int
    captured_fen: int
    refunded_fen: int | None = None  # refunds of the captured amount, when the provider tells
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    payment_method: str | None = None
    decline_code: str | None = None
    decline_message: str | None = None
    # the payer's last attempt (Stripe: its latest charge): one decline is reported once, however often it is read
    attempt_ref: str | None = None


@dataclass(frozen=True)
class RefundResult:
    provider_ref: str
    status: str  # succeeded | pending | failed
    amount_fen: int
    failure_reason: str | None = None


@dataclass(frozen=True)
class TransferResult:
    provider_ref: str
    status: str  # paid | reversed
    amount_fen: int
    amount_reversed_fen: int = 0


class PaymentProvider(Protocol):
    name: str
    capabilities: frozenset[str]

    def authorise(
        self,
        *,
        amount_fen: int,
        currency: str,
        payment_method: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> AuthResult: ...

    def open_intent(
        self, *, amount_fen: int, currency: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> OpenedIntent:
        """A PaymentIntent (manual capture) that its payer confirms later; `retrieve_intent` tells what they did."""
        ...

    def confirm_intent(self, provider_ref: str, *, payment_method: str, idempotency_key: str) -> AuthResult:
        """Confirm an opened PaymentIntent on its payer's behalf with `payment_method` (our confirm route). A
        decline leaves it open for another method; a PaymentIntent no longer waiting is `InvalidRequest`."""
        ...

    def capture(self, provider_ref: str, *, amount_fen: int, idempotency_key: str) -> IntentSnapshot: ...

    def cancel(self, provider_ref: str, *, idempotency_key: str) -> IntentSnapshot: ...

    def refund(
        self, provider_ref: str, *, amount_fen: int, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundResult: ...

    def create_payee_account(
        self, *, user_id: str, kind: str, bank_account: str | None, idempotency_key: str
    ) -> str: ...

    def transfer(
        self,
        *,
        destination: str,
        amount_fen: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> TransferResult: ...

    def retrieve_intent(self, provider_ref: str) -> IntentSnapshot: ...

    def retrieve_refund(self, provider_ref: str) -> RefundResult: ...

    def retrieve_transfer(self, provider_ref: str) -> TransferResult: ...

    def verify_webhook(self, payload: bytes, signature: str | None) -> Mapping[str, Any]:
        """The event in a webhook whose signature checks out; raises `BadSignature` otherwise."""
        ...

    def pull_events(self, limit: int = 100) -> list[Mapping[str, Any]]:
        """Undelivered events (providers without webhooks); acknowledged with `ack_events`."""
        ...

    def ack_events(self, event_ids: list[str]) -> None: ...

    def close(self) -> None: ...


class BadSignature(DomainError):
    """A webhook whose signature is missing, wrong or too old: refused, and nothing is recorded."""

    status = 400
    slug = "bad-webhook-signature"
    title = "Webhook signature rejected"

    def __init__(self, detail: str, field: str = "Stripe-Signature"):
        # names what was wrong, as every 400 does: the signature header, or the signed `body` itself
        super().__init__(detail, errors=[{"field": field, "message": detail}])
