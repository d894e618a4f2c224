"""Listing commands: create, publish (the wipe-certificate gate), update, withdraw; and the listing view.

One command = one unit of work over one listing: lock its row, check the transition and the rules, write, and
put its event in the outbox in the same transaction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update

from services.contracts.listings import ListingPublished, ListingUnpublished, ListingUpdated
from services.contracts.wipe import device_key
from services.kernel import idempotency, pii
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork, changed_values
from services.kernel.errors import Forbidden, NotFound, RuleViolated
from services.kernel.ids import new_id
from services.kernel.runtime import ServiceRuntime

from .domain import model as m
from .domain.catalogue import categories
from .domain.rules import (
    DeviceFacts,
    ProhibitedItems,
    Refusal,
    one_offer_per_device,
    wipe_certificate_required,
)
from .settings import ListingsSettings, settings_of
from .store import certificate_devices, certificates, listings


def prohibited_rule(s: ListingsSettings) -> ProhibitedItems:
    return ProhibitedItems(frozenset(s.prohibited_categories), tuple(s.prohibited_words))


def refuse(r: Refusal | None) -> None:
    if r is not None:
        raise RuleViolated(r.detail, reason=r.reason)


# --- commands ------------------------------------------------------------------------------------------------


def create_listing(rt: ServiceRuntime, seller_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """A draft (草稿). `data` is validated input (api.ListingIn); the prohibited-items rule runs here."""
    s = settings_of(rt)
    refuse(prohibited_rule(s).check(data["category"], data["title"], data["description"]))
    now = datetime.now(UTC)
    lid = new_id("ls")
    device = data.get("device") or None
    values: dict[str, Any] = dict(
        id=lid,
        seller_id=seller_id,
        status=m.DRAFT,
        version=1,
        title=data["title"],
        description=data["description"],
        category=data["category"],
        condition=data["condition"],
        price_fen=data["price_fen"],
        city_code=data["city_code"],
        images=json.dumps(data.get("images") or []),
        created_at=now,
        updated_at=now,
    )
    if device:
        values["device_kind"] = device["kind"]
        if device.get("imei"):
            values.update(
                imei_enc=pii.encrypt(rt.settings, device["imei"]),
                imei_masked=pii.mask_device_id(device["imei"]),
                imei_key=device_key("imei", device["imei"]),
            )
        if device.get("serial"):
            values.update(
                serial_enc=pii.encrypt(rt.settings, device["serial"]),
                serial_masked=pii.mask_device_id(device["serial"]),
                serial_key=device_key("serial", device["serial"]),
            )
    with UnitOfWork(rt.db) as uow:
        idempotency.made(lid)
        uow.session.execute(listings.insert().values(**values))
        row = _row(uow, lid)
    return listing_view(row, owner_view=True)


def listing_created(rt: ServiceRuntime, seller_id: str, listing_id: str) -> dict[str, Any]:
    """`create_listing`'s reply for the draft it made (its reply lost after the commit), as it stands."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = _row(uow, listing_id)
    if row.seller_id != seller_id:
        raise NotFound(f"no listing with id {listing_id}")
    return listing_view(row, owner_view=True)


def publish_listing(rt: ServiceRuntime, user: Principal, listing_id: str) -> dict[str, Any]:
    s = settings_of(rt)
    with UnitOfWork(rt.db) as uow:
        _lock_certificates_of(uow, listing_id)
        row = _owned_row(uow, listing_id, user)
        m.next_listing_state("publish", row.status)
        refuse(prohibited_rule(s).check(row.category, row.title, row.description))
        facts = device_facts(uow, row, s)
        refuse(wipe_certificate_required(facts))
        refuse(one_offer_per_device(_other_live_listing(uow, row, facts)))
        now = datetime.now(UTC)
        uow.session.execute(
            update(listings)
            .where(listings.c.id == row.id)
            .values(
                status=m.PUBLISHED,
                version=row.version + 1,
                published_at=now,
                updated_at=now,
                unpublished_reason=None,
                certificate_id=facts.valid_certificates[0] if facts.valid_certificates else None,
            )
        )
        row = _row(uow, row.id)
        uow.emit(published_event(row))
    return listing_view(row, owner_view=True)


def listing_status(rt: ServiceRuntime, user: Principal, listing_id: str) -> dict[str, Any]:
    """An action's reply (publish, withdraw) rebuilt, lost after its commit: the listing's status as it stands."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = _row(uow, listing_id)
    if row.seller_id != user.user_id and not user.has("admin"):
        raise NotFound(f"no listing with id {listing_id}")
    return {"id": row.id, "status": row.status}


def update_listing(
    rt: ServiceRuntime, user: Principal, listing_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """The owner changes the price or the description (a draft or a listing on sale). Values it holds already are
    no change: a request that changes nothing writes nothing (no version, no `listing.updated`) and answers the
    listing as it is, whatever its state now (the same PATCH sent again after the listing was reserved)."""
    s = settings_of(rt)
    with UnitOfWork(rt.db) as uow:
        row = _owned_row(uow, listing_id, user)
        values = changed_values(row, {k: v for k, v in changes.items() if v is not None})
        if not values:
            return listing_view(row, owner_view=True)
        m.next_listing_state("update", row.status)
        refuse(prohibited_rule(s).check(row.category, row.title, values.get("description", row.description)))
        uow.session.execute(
            update(listings)
            .where(listings.c.id == row.id)
            .values(version=row.version + 1, updated_at=datetime.now(UTC), **values)
        )
        row = _row(uow, row.id)
        if row.status == m.PUBLISHED:
            uow.emit(ListingUpdated(**_document(row)))
    return listing_view(row, owner_view=True)


def withdraw_listing(rt: ServiceRuntime, user: Principal, listing_id: str) -> dict[str, Any]:
    with UnitOfWork(rt.db) as uow:
        row = _owned_row(uow, listing_id, user, admin_ok=True)
        was = row.status
        m.next_listing_state("withdraw", was)
        now = datetime.now(UTC)
        uow.session.execute(
            update(listings)
            .where(listings.c.id == row.id)
            .values(
                status=m.WITHDRAWN, version=row.version + 1, updated_at=now, unpublished_reason="withdrawn"
            )
        )
        row = _row(uow, row.id)
        if was == m.PUBLISHED:
            uow.emit(ListingUnpublished(listing_id=row.id, version=row.version, reason="withdrawn", at=now))
    return listing_view(row, owner_view=True)


def get_listing(rt: ServiceRuntime, user: Principal | None, listing_id: str) -> dict[str, Any]:
    """Anyone sees a listing that is or was on the market; a draft only its seller (or an admin)."""
    with rt.db.session(readonly=True) as sess:
        row = sess.execute(select(listings).where(listings.c.id == listing_id)).first()
    owner = user is not None and row is not None and (user.user_id == row.seller_id or user.has("admin"))
    if row is None or (row.status in (m.DRAFT, m.WITHDRAWN) and not owner):
        raise NotFound(f"no listing with id {listing_id}")
    return listing_view(row, owner_view=owner)


def list_listings_of(rt: ServiceRuntime, seller_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    with rt.db.session(readonly=True) as sess:
        rows = sess.execute(
            select(listings)
            .where(listings.c.seller_id == seller_id)
            .order_by(listings.c.created_at.desc(), listings.c.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    return [listing_view(r, owner_view=True) for r in rows]


# --- helpers shared with orders and the certificate consumer ----------------------------------------------


def device_facts(uow: UnitOfWork, row: Any, s: ListingsSettings) -> DeviceFacts:
    cat = categories(s.categories_file or None).get(row.category)
    keys = tuple(k for k in (row.imei_key, row.serial_key) if k)
    return DeviceFacts(
        names_device=row.device_kind is not None,
        category_holds_storage=bool(cat and cat.holds_storage),
        device_keys=keys,
        valid_certificates=valid_certificates(uow, keys),
    )


def _lock_certificates_of(uow: UnitOfWork, listing_id: str) -> None:
    """Lock the certificates of the device a listing names (its identifiers never change), before the listing:
    two listings of one device publishing at once wait for each other here (a device-naming listing is published
    only on a certificate), so both cannot pass `_other_live_listing`; and certificates before listings is the
    order the revocation consumer locks in."""
    pre = uow.session.execute(
        select(listings.c.imei_key, listings.c.serial_key).where(listings.c.id == listing_id)
    ).first()
    keys = tuple(k for k in (pre or ()) if k)
    ids = valid_certificates(uow, keys) if keys else ()
    if ids:
        uow.session.execute(
            select(certificates.c.certificate_id)
            .where(certificates.c.certificate_id.in_(ids))
            .with_for_update()
        ).all()


def _other_live_listing(uow: UnitOfWork, row: Any, facts: DeviceFacts) -> str | None:
    """Another published or reserved listing naming one of this device's identifiers (callers hold the locks of
    `_lock_certificates_of`)."""
    if not facts.device_keys or not facts.valid_certificates:
        return None
    keys = list(facts.device_keys)
    other = uow.session.execute(
        select(listings.c.id)
        .where(
            listings.c.id != row.id,
            listings.c.status.in_((m.PUBLISHED, m.RESERVED)),
            or_(listings.c.imei_key.in_(keys), listings.c.serial_key.in_(keys)),
        )
        .limit(1)
    ).first()
    return other.id if other is not None else None


def valid_certificates(uow: UnitOfWork, keys: tuple[str, ...]) -> tuple[str, ...]:
    """Unrevoked certificates naming *every* identifier the listing gives (newest first). One shared key is not
    enough: a listing naming IMEI A and the serial of a phone certified under IMEI B is another device (DOMAIN_RULES:
    identity mismatch with the listed device)."""
    keys = tuple(dict.fromkeys(keys))
    if not keys:
        return ()
    rows = uow.session.execute(
        select(certificates.c.certificate_id)
        .join(certificate_devices, certificate_devices.c.certificate_id == certificates.c.certificate_id)
        .where(certificate_devices.c.device_key.in_(keys), certificates.c.revoked_at.is_(None))
        .group_by(certificates.c.certificate_id, certificates.c.issued_at)
        .having(func.count(func.distinct(certificate_devices.c.device_key)) == len(keys))
        .order_by(certificates.c.issued_at.desc(), certificates.c.certificate_id)
    ).all()
    return tuple(r.certificate_id for r in rows)


def _document(row: Any) -> dict[str, Any]:
    return dict(
        listing_id=row.id,
        version=row.version,
        seller_id=row.seller_id,
        title=row.title,
        description=row.description,
        category=row.category,
        condition=row.condition,
        price_fen=int(row.price_fen),
        city_code=row.city_code,
        published_at=row.published_at,
    )


def published_event(row: Any) -> ListingPublished:
    return ListingPublished(**_document(row))


def _row(uow: UnitOfWork, listing_id: str, lock: bool = False) -> Any:
    q = select(listings).where(listings.c.id == listing_id)
    row = uow.session.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFound(f"no listing with id {listing_id}")
    return row


def _owned_row(uow: UnitOfWork, listing_id: str, user: Principal, admin_ok: bool = False) -> Any:
    row = _row(uow, listing_id, lock=True)
    if row.seller_id != user.user_id and not (admin_ok and user.has("admin")):
        if row.status in (m.DRAFT, m.WITHDRAWN):
            raise NotFound(f"no listing with id {listing_id}")
        raise Forbidden("this listing is not yours", reason="not_owner")
    return row


def listing_view(row: Any, owner_view: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "version": row.version,
        "seller_id": row.seller_id,
        "title": row.title,
        "description": row.description,
        "category": row.category,
        "condition": row.condition,
        "price_fen": int(row.price_fen),
        "city_code": row.city_code,
        "images": json.loads(row.images or "[]"),
        "device": None
        if row.device_kind is None
        else {"kind": row.device_kind, "imei_masked": row.imei_masked, "serial_masked": row.serial_masked},
        "certificate_id": row.certificate_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "published_at": row.published_at,
    }
    if owner_view:
        out["unpublished_reason"] = row.unpublished_reason
    return out
