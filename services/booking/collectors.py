"""Booking's copy of verified collectors, kept from accounts' CollectorVerified events (booking never reads the
accounts tables). Who may list and grab which jobs is decided from this copy."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.kernel.db import UnitOfWork
from services.kernel.events import Envelope

from .store import collectors


def when_collector_verified_update_copy(env: Envelope, uow: UnitOfWork) -> None:
    d = env.data
    s = uow.session
    values = dict(
        user_id=d["user_id"],
        firm_id=d["firm_id"],
        name_masked=d.get("name_masked", ""),
        lat=float(d["lat"]),
        lng=float(d["lng"]),
        radius_km=float(d["radius_km"]),
        categories=" ".join(sorted(set(d["categories"]))),
        verified_at=datetime.fromisoformat(d["verified_at"]),
        updated_at=datetime.now(UTC),
    )
    # one collector record per user: a re-registration under a new collector id replaces the old one
    s.execute(
        delete(collectors).where(
            collectors.c.user_id == d["user_id"], collectors.c.collector_id != d["collector_id"]
        )
    )
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(collectors).values(collector_id=d["collector_id"], **values)
    # an older verification arriving late changes nothing
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[collectors.c.collector_id],
            set_=values,
            where=collectors.c.verified_at <= stmt.excluded.verified_at,
        )
    )
