"""Booking's copy of verified collectors, kept from accounts' CollectorVerified events (booking never reads the
accounts tables). Who may list and grab which jobs is decided from this copy."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.contracts.accounts import CollectorVerified
from services.kernel.db import UnitOfWork

from .store import collectors


def when_collector_verified_update_copy(event: CollectorVerified, uow: UnitOfWork) -> None:
    s = uow.session
    values = dict(
        user_id=event.user_id,
        firm_id=event.firm_id,
        name_masked=event.name_masked,
        lat=event.lat,
        lng=event.lng,
        radius_km=event.radius_km,
        categories=" ".join(sorted(set(event.categories))),
        verified_at=event.verified_at,
        updated_at=datetime.now(UTC),
    )
    # one collector record per user: a re-registration under a new collector id replaces the old one
    s.execute(
        delete(collectors).where(
            collectors.c.user_id == event.user_id, collectors.c.collector_id != event.collector_id
        )
    )
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(collectors).values(collector_id=event.collector_id, **values)
    # an older verification arriving late changes nothing
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[collectors.c.collector_id],
            set_=values,
            where=collectors.c.verified_at <= stmt.excluded.verified_at,
        )
    )
