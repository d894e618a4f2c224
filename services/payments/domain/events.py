"""Events internal to payments (only its own consumer reads them; the payout contract is
`services/contracts/payments.py`)."""

from __future__ import annotations

from datetime import datetime

from services.kernel.events import Event


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
