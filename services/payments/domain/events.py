"""The payments contract over events: other services request payouts; payments reports their outcome.

Topic `payments.payout`, key = payout_id (the requester chooses it, deterministically from its own command, so a
retried request is the same payout: payments pays each payout_id at most once).
"""

from __future__ import annotations

from datetime import datetime

from services.kernel.events import Event


class PayoutRequested(Event):
    type = "cn.recycle.payments.payout.requested.v1"
    topic = "payments.payout"
    key_field = "payout_id"
    source = "/booking"
    doc = "A service asks payments to pay a person or firm (e.g. a resident for a settled pickup, net of withheld tax)."
    payout_id: str
    payee_user_id: str
    amount_fen: int
    purpose: str  # e.g. "pickup"
    reference_id: str  # e.g. the pickup id
    requested_by: str  # the requesting service
    requested_at: datetime
    # added by payments (optional, so existing producers stay valid): resident | seller | firm. Residents are
    # paid into their wallet and paid out once it reaches the payout threshold; sellers and firms at once.
    payee_kind: str = "resident"


class PayoutPaid(Event):
    type = "cn.recycle.payments.payout.paid.v1"
    topic = "payments.payout"
    key_field = "payout_id"
    source = "/payments"
    payout_id: str
    reference_id: str
    amount_fen: int
    provider_ref: str
    paid_at: datetime
    # added by payments: "provider" = paid out through the provider (provider_ref is its transfer id);
    # "balance" = credited to the payee's wallet below the payout threshold (provider_ref = "balance:<payout_id>").
    destination: str = "provider"


class PayoutFailed(Event):
    type = "cn.recycle.payments.payout.failed.v1"
    topic = "payments.payout"
    key_field = "payout_id"
    source = "/payments"
    doc = "The payout failed or was returned; the ledger entries were reversed. The requester may retry with a new id."
    payout_id: str
    reference_id: str
    amount_fen: int
    reason: str
    failed_at: datetime
    # added by payments: True when the payout had been reported paid and the provider returned it later
    returned: bool = False


class WithdrawalRequested(Event):
    type = "cn.recycle.payments.withdrawal.requested.v1"
    topic = "payments.payout"
    key_field = "withdrawal_id"
    source = "/payments"
    doc = (
        "Internal to payments: a wallet balance was reserved for a payout to the payee; payments' own consumer "
        "sends it through the provider (idempotently, keyed by withdrawal_id). Other consumers ignore it."
    )
    withdrawal_id: str
    payee_user_id: str
    amount_fen: int
    requested_at: datetime
