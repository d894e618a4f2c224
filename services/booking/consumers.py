"""Which events booking listens to, each group with its own offsets:

- `booking.prices`      pricing.index: IndexPublished → the local price copy quotes are made from;
- `booking.collectors`  accounts.collector: CollectorVerified → who may see and grab jobs, where;
- `booking.saga`        invoicing.invoice, payments.payout: the settlement saga (saga.py): invoicing's answer
                        requests the payout, payments' outcome is recorded on the pickup.

Every handler is idempotent on its own (conditional updates, upserts keyed by the fact's id), on top of the inbox.
"""

from __future__ import annotations

from functools import partial

from services.contracts.accounts import CollectorVerified
from services.contracts.invoicing import InvoiceBlocked, InvoiceIssued
from services.contracts.payments import PayoutFailed, PayoutPaid
from services.contracts.pricing import IndexPublished
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime

from .collectors import when_collector_verified_update_copy
from .prices import update_price_copy
from .saga import (
    when_invoice_blocked_request_payout,
    when_invoice_issued_request_payout,
    when_payout_failed_record,
    when_payout_paid_record,
)
from .settings import price_cache


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        group("booking.prices", {IndexPublished: partial(when_index_published_update_price_copy, rt=rt)}),
        group("booking.collectors", {CollectorVerified: when_collector_verified_update_copy}),
        group(
            "booking.saga",
            {
                InvoiceIssued: when_invoice_issued_request_payout,
                InvoiceBlocked: when_invoice_blocked_request_payout,
                PayoutPaid: when_payout_paid_record,
                PayoutFailed: when_payout_failed_record,
            },
        ),
    ]


def when_index_published_update_price_copy(
    event: IndexPublished, uow: UnitOfWork, *, rt: ServiceRuntime
) -> None:
    update_price_copy(event, uow)
    price_cache(rt).clear()  # this process quotes from the new price at once
