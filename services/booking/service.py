from services.accounts.domain.events import CollectorVerified
from services.invoicing.domain.events import InvoiceBlocked, InvoiceIssued
from services.kernel.consumer import ConsumerSpec
from services.kernel.db import UnitOfWork
from services.kernel.events import Envelope
from services.kernel.runtime import ServiceRuntime, ServiceSpec
from services.payments.domain.events import PayoutFailed, PayoutPaid
from services.pricing.domain.events import IndexPublished

from .api import router
from .collectors import when_collector_verified_update_copy
from .feed import feed_of
from .prices import when_index_published_update_price_copy
from .saga import (
    when_invoice_blocked_request_payout,
    when_invoice_issued_request_payout,
    when_payout_failed_record,
    when_payout_paid_record,
)
from .seed import seed
from .settings import BookingSettings, price_cache
from .store import metadata


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    def on_index_published(env: Envelope, uow: UnitOfWork) -> None:
        when_index_published_update_price_copy(env, uow)
        price_cache(rt).clear()

    return [
        ConsumerSpec("booking.prices", ["pricing.index"], {IndexPublished.type: on_index_published}),
        ConsumerSpec(
            "booking.collectors",
            ["accounts.collector"],
            {CollectorVerified.type: when_collector_verified_update_copy},
        ),
        # the settlement saga: invoicing's answer, then payments' outcome
        ConsumerSpec(
            "booking.saga",
            ["invoicing.invoice", "payments.payout"],
            {
                InvoiceIssued.type: when_invoice_issued_request_payout,
                InvoiceBlocked.type: when_invoice_blocked_request_payout,
                PayoutPaid.type: when_payout_paid_record,
                PayoutFailed.type: when_payout_failed_record,
            },
        ),
    ]


def setup(rt: ServiceRuntime) -> None:
    rt.ports.setdefault("settings", BookingSettings())
    price_cache(rt)
    feed_of(rt)


SERVICE = ServiceSpec(
    name="booking", metadata=metadata, router=router, consumers=consumers, seed=seed, setup=setup
)
