"""Which events listings listens to.

Groups (each with its own offsets):
- `listings.certificates`  wipe.certificate: its own copy of certificates; a revocation unpublishes listings;
- `listings.payments`      payments.hold: payments' reports on the holds of orders;
- `listings.indexer`       listings.listing: its own listing events into the search index.
"""

from __future__ import annotations

from functools import partial

from services.contracts.listings import ListingPublished, ListingUnpublished, ListingUpdated
from services.contracts.payments import (
    HoldAuthorised,
    HoldCancelled,
    HoldCancelRefused,
    HoldCaptured,
    HoldCaptureRefused,
    HoldDeclined,
    HoldEscrowed,
    HoldOpened,
    HoldRefunded,
)
from services.contracts.wipe import CertificateIssued, CertificateRevoked
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.runtime import ServiceRuntime

from . import orders
from .certificates import when_certificate_issued_keep_copy, when_certificate_revoked_unpublish
from .search import search_of
from .search.indexer import Indexer


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    indexer = Indexer(search_of(rt))
    return [
        group(
            "listings.certificates",
            {
                CertificateIssued: when_certificate_issued_keep_copy,
                CertificateRevoked: when_certificate_revoked_unpublish,
            },
        ),
        group(
            "listings.payments",
            {
                HoldOpened: orders.when_hold_opened_record,
                HoldAuthorised: partial(orders.when_hold_authorised_mark_paid, rt=rt),
                HoldDeclined: orders.when_hold_declined_record,
                HoldEscrowed: orders.when_hold_escrowed_record,
                HoldCaptured: orders.when_hold_captured_record,
                HoldCancelled: orders.when_hold_cancelled_record,
                HoldRefunded: orders.when_hold_refunded_record,
                HoldCaptureRefused: orders.when_hold_capture_refused_log,
                HoldCancelRefused: orders.when_hold_cancel_refused_log,
            },
        ),
        group(
            "listings.indexer",
            {
                ListingPublished: indexer.when_listing_published_index,
                ListingUpdated: indexer.when_listing_updated_index,
                ListingUnpublished: indexer.when_listing_unpublished_drop,
            },
        ),
    ]
