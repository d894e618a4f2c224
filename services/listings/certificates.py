"""Listings' copy of the wipe service's certificates (consumer group `listings.certificates`).

Each handler is idempotent on its own: rows are keyed by the certificate id and the device key, a revocation is
never undone by a late or replayed issue, and a listing already unpublished is left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from services.contracts.listings import ListingUnpublished
from services.contracts.wipe import CertificateIssued, CertificateRevoked
from services.kernel.db import UnitOfWork

from .domain import model as m
from .handlers import valid_certificates
from .orders import close
from .store import certificate_devices, certificates, listings, orders


def _keep(uow: UnitOfWork, certificate_id: str, device_kind: str, keys: list[str], **values: Any) -> None:
    s = uow.session
    exists = s.execute(
        select(certificates.c.certificate_id).where(certificates.c.certificate_id == certificate_id)
    ).first()
    if exists is None:
        s.execute(
            certificates.insert().values(certificate_id=certificate_id, device_kind=device_kind, **values)
        )
    have = {
        r.device_key
        for r in s.execute(
            select(certificate_devices.c.device_key).where(
                certificate_devices.c.certificate_id == certificate_id
            )
        )
    }
    new = [k for k in dict.fromkeys(keys) if k not in have]
    if new:
        s.execute(
            certificate_devices.insert(), [{"device_key": k, "certificate_id": certificate_id} for k in new]
        )


def when_certificate_issued_keep_copy(event: CertificateIssued, uow: UnitOfWork) -> None:
    _keep(uow, event.certificate_id, event.device_kind, event.device_keys, issued_at=event.issued_at)
    uow.session.execute(
        update(certificates)
        .where(certificates.c.certificate_id == event.certificate_id, certificates.c.issued_at.is_(None))
        .values(issued_at=event.issued_at, device_kind=event.device_kind)
    )


def when_certificate_revoked_unpublish(event: CertificateRevoked, uow: UnitOfWork) -> None:
    """Listings published on this certificate go back to draft, unless another valid certificate covers the
    same device (a re-erased device gets a new certificate). A reserved one whose order has not shipped goes to
    draft too, its order cancelled (`certificate_revoked`, the buyer's money given back): nothing has left the
    seller, and a device whose erasure no longer holds (failed secondary verification, revoked tool) or that is
    reported lost or stolen is not sold on. Once shipped the order runs on (the item is with the buyer or on its
    way); the listing goes to draft if that order ends without a sale."""
    s = uow.session
    _keep(
        uow,
        event.certificate_id,
        "unknown",
        event.device_keys,
        revoked_at=event.revoked_at,
        revoked_reason=event.reason,
    )
    s.execute(
        update(certificates)
        .where(certificates.c.certificate_id == event.certificate_id, certificates.c.revoked_at.is_(None))
        .values(revoked_at=event.revoked_at, revoked_reason=event.reason)
    )
    # the orders reserving such listings first, locked: order commands lock an order, then its listing
    reserving = [
        r.reserved_order_id
        for r in s.execute(
            select(listings.c.reserved_order_id).where(
                listings.c.certificate_id == event.certificate_id,
                listings.c.status == m.RESERVED,
                listings.c.reserved_order_id.is_not(None),
            )
        )
    ]
    live = (
        {o.id: o for o in s.execute(select(orders).where(orders.c.id.in_(reserving)).with_for_update())}
        if reserving
        else {}
    )
    rows = s.execute(
        select(listings)
        .where(
            listings.c.certificate_id == event.certificate_id,
            listings.c.status.in_((m.PUBLISHED, m.RESERVED)),
        )
        .with_for_update()
    ).all()
    now = datetime.now(UTC)
    for row in rows:
        others = valid_certificates(uow, tuple(k for k in (row.imei_key, row.serial_key) if k))
        if others:
            s.execute(update(listings).where(listings.c.id == row.id).values(certificate_id=others[0]))
            continue
        if row.status == m.RESERVED:
            # if its order ends without a sale the listing goes back to draft (orders.release_listing)
            s.execute(
                update(listings)
                .where(listings.c.id == row.id)
                .values(certificate_id=None, unpublished_reason="certificate_revoked", updated_at=now)
            )
            order = live.get(row.reserved_order_id)
            if order is not None and order.status in (m.PENDING_PAYMENT, m.PAID):
                close(uow, order, "cancel", reason="certificate_revoked")
            continue
        s.execute(
            update(listings)
            .where(listings.c.id == row.id)
            .values(
                status=m.next_listing_state("unpublish", row.status),
                version=row.version + 1,
                certificate_id=None,
                unpublished_reason="certificate_revoked",
                updated_at=now,
            )
        )
        uow.emit(
            ListingUnpublished(
                listing_id=row.id, version=row.version + 1, reason="certificate_revoked", at=now
            )
        )
