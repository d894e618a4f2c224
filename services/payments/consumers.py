"""Which events payments listens to: payouts other services request, and its own withdrawals.

- `payments.payouts`  payments.payout: PayoutRequested → pay it (or credit the payee's wallet below the payout
                      threshold); WithdrawalRequested (internal) → send it through the provider.

Both are idempotent on their own (keyed by payout_id / withdrawal_id), on top of the consumer's inbox.
"""

from __future__ import annotations

from functools import partial

from services.contracts.payments import PayoutRequested
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime

from .domain.events import WithdrawalRequested
from .handlers import payments_of


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        group(
            "payments.payouts",
            {
                PayoutRequested: partial(when_payout_requested_pay, rt=rt),
                WithdrawalRequested: partial(when_withdrawal_requested_send, rt=rt),
            },
        )
    ]


def when_payout_requested_pay(event: PayoutRequested, uow: UnitOfWork, *, rt: ServiceRuntime) -> None:
    payments_of(rt).pay_requested(uow, event)


def when_withdrawal_requested_send(
    event: WithdrawalRequested, uow: UnitOfWork, *, rt: ServiceRuntime
) -> None:
    payments_of(rt).send_requested(uow, event)
