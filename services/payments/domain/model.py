"""Payments' aggregates and their state guards. Pure: no I/O.

- A *hold* (预授权) is card money the provider reserved for an order: authorised → captured (escrow) or cancelled.
  A hold captures once, at most what was authorised (Stripe releases the rest); refunds come out of its escrow.
- A *refund* gives captured money back; never more than the escrow still holds.
- A *payout* is a request to pay a person or firm (e.g. a resident for a pickup). It is credited to the payee's
  wallet first; a *withdrawal* then moves a wallet's balance to the payee through the provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.kernel.errors import Conflict, RuleViolated, ValidationFailed

CURRENCY = "cny"
MAX_AMOUNT_FEN = 99_999_999  # the provider's ceiling for one charge (Stripe: 8 digits)


class HoldStatus(StrEnum):
    AUTHORISED = "authorised"
    DECLINED = "declined"
    CAPTURED = "captured"
    CANCELLED = "cancelled"


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PayoutStatus(StrEnum):
    CREDITED = "credited"  # in the payee's wallet, below the threshold: reported as paid (to the balance)
    PENDING = "pending"  # a withdrawal to the provider is under way
    PAID = "paid"
    FAILED = "failed"  # never reached the payee; its ledger entries were reversed
    RETURNED = "returned"  # paid, then returned by the provider; its ledger entries were reversed


class WithdrawalStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    RETURNED = "returned"


def check_amount(amount_fen: int, field: str = "amount_fen") -> int:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool):
        raise ValidationFailed.field(field, "an integer number of fen")
    if amount_fen <= 0:
        raise ValidationFailed.field(field, "must be a positive number of fen")
    if amount_fen > MAX_AMOUNT_FEN:
        raise ValidationFailed.field(field, f"at most {MAX_AMOUNT_FEN} fen")
    return amount_fen


@dataclass(frozen=True)
class Hold:
    """A hold as callers see it; captured and refunded amounts are derived from the ledger."""

    id: str
    status: HoldStatus
    payer_user_id: str
    reference_id: str
    amount_fen: int  # authorised
    captured_fen: int
    refunded_fen: int
    released_fen: int  # paid on to the seller (and fees)
    provider_ref: str | None
    decline_code: str | None = None
    decline_message: str | None = None
    status_reason: str | None = None
    currency: str = CURRENCY

    @property
    def refundable_fen(self) -> int:
        return self.captured_fen - self.refunded_fen - self.released_fen

    def ensure_can_capture(self, amount_fen: int) -> None:
        if self.status != HoldStatus.AUTHORISED:
            raise Conflict(
                f"hold {self.id} is {self.status}; only an authorised hold can be captured",
                current_state=str(self.status),
            )
        check_amount(amount_fen)
        if amount_fen > self.amount_fen:
            raise RuleViolated(
                f"cannot capture {amount_fen} fen: only {self.amount_fen} fen were authorised",
                reason="over_capture",
                field="amount_fen",
            )

    def ensure_can_cancel(self) -> None:
        if self.status != HoldStatus.AUTHORISED:
            hint = "; refund it instead" if self.status == HoldStatus.CAPTURED else ""
            raise Conflict(
                f"hold {self.id} is {self.status}; only an authorised hold can be cancelled{hint}",
                current_state=str(self.status),
            )

    def ensure_can_refund(self, amount_fen: int) -> None:
        if self.status != HoldStatus.CAPTURED:
            raise Conflict(
                f"hold {self.id} is {self.status}; only a captured hold can be refunded",
                current_state=str(self.status),
            )
        check_amount(amount_fen)
        if amount_fen > self.refundable_fen:
            raise RuleViolated(
                f"cannot refund {amount_fen} fen: only {self.refundable_fen} fen of the "
                f"{self.captured_fen} fen captured remain refundable",
                reason="over_refund",
                field="amount_fen",
            )

    def ensure_can_release(self, amount_fen: int) -> None:
        if self.status != HoldStatus.CAPTURED:
            raise Conflict(
                f"hold {self.id} is {self.status}; only a captured hold can be released to the payee",
                current_state=str(self.status),
            )
        if amount_fen <= 0:
            raise RuleViolated(
                f"hold {self.id} has nothing left in escrow to release", reason="nothing_to_release"
            )


@dataclass(frozen=True)
class Refund:
    id: str
    hold_id: str
    amount_fen: int
    status: RefundStatus
    provider_ref: str | None
    reason: str = ""
    failure_reason: str | None = None


@dataclass(frozen=True)
class Payout:
    payout_id: str
    payee_user_id: str
    payee_kind: str
    amount_fen: int
    purpose: str
    reference_id: str
    requested_by: str
    status: PayoutStatus
    withdrawal_id: str | None
    provider_ref: str | None
    failure_reason: str | None = None


@dataclass(frozen=True)
class Withdrawal:
    id: str
    payee_user_id: str
    wallet: str
    amount_fen: int
    status: WithdrawalStatus
    provider_ref: str | None
    trigger_payout_id: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class Balance:
    """A payee's money with us: wallet balances (derived from postings) and withdrawals under way."""

    user_id: str
    wallets: dict[str, int]
    in_transit_fen: int
    threshold_fen: int
    currency: str = CURRENCY

    @property
    def available_fen(self) -> int:
        return sum(self.wallets.values())
