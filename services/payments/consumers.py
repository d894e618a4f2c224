"""Which events payments listens to: payouts other services request, and its own withdrawals.

- `payments.payouts`  payments.payout: PayoutRequested → pay it (or credit the payee's wallet below the payout
                      threshold); WithdrawalRequested (internal) → send it through the provider.

- `payments.holds`    payments.hold: holds other services ask for (escrow of listings' orders, trading's deposits
                      and settlements): HoldRequested → open the payment; HoldEscrowRequested → capture into
                      escrow; HoldCaptureRequested → capture (unless escrowed) and release; HoldCancelRequested →
                      close, release or refund (hold_requests.py).

All are idempotent on their own (keyed by payout_id / withdrawal_id / hold_request_id), on top of the consumer's
inbox.
"""

from __future__ import annotations

from functools import partial

from services.contracts.payments import (
    HoldCancelRequested,
    HoldCaptureRequested,
    HoldEscrowRequested,
    HoldRequested,
    PayoutRequested,
)
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime

from .domain.events import WithdrawalRequested
from .handlers import payments_of
from .hold_requests import hold_requests_of


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        group(
            "payments.payouts",
            {
                PayoutRequested: partial(when_payout_requested_pay, rt=rt),
                WithdrawalRequested: partial(when_withdrawal_requested_send, rt=rt),
            },
        ),
        group(
            "payments.holds",
            {
                HoldRequested: partial(when_hold_requested_open, rt=rt),
                HoldEscrowRequested: partial(when_hold_escrow_requested_capture, rt=rt),
                HoldCaptureRequested: partial(when_hold_capture_requested_settle, rt=rt),
                HoldCancelRequested: partial(when_hold_cancel_requested_release, rt=rt),
            },
        ),
    ]


def when_payout_requested_pay(event: PayoutRequested, uow: UnitOfWork, *, rt: ServiceRuntime) -> None:
    payments_of(rt).pay_requested(uow, event)


def when_withdrawal_requested_send(
    event: WithdrawalRequested, uow: UnitOfWork, *, rt: ServiceRuntime
) -> None:
    payments_of(rt).send_requested(uow, event)


def when_hold_requested_open(event: HoldRequested, uow: UnitOfWork, *, rt: ServiceRuntime) -> None:
    hold_requests_of(rt).open_requested(uow, event)


def when_hold_escrow_requested_capture(
    event: HoldEscrowRequested, uow: UnitOfWork, *, rt: ServiceRuntime
) -> None:
    hold_requests_of(rt).escrow_requested(uow, event)


def when_hold_capture_requested_settle(
    event: HoldCaptureRequested, uow: UnitOfWork, *, rt: ServiceRuntime
) -> None:
    hold_requests_of(rt).settle_requested(uow, event)


def when_hold_cancel_requested_release(
    event: HoldCancelRequested, uow: UnitOfWork, *, rt: ServiceRuntime
) -> None:
    hold_requests_of(rt).release_requested(uow, event)
