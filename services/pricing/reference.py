"""Seeded reference prices: the national fallback until the index has data (marked `reference`)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select

from services.contracts.pricing import IndexPublished
from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import leaves

from .store import published_values

NATIONAL = "000000"
REFERENCE_METHODOLOGY = "reference"
REFERENCE_DATE = date(2026, 1, 1)


def seed_reference_prices(rt: ServiceRuntime) -> None:
    """Publish each leaf category's reference price once (idempotent across restarts)."""
    with UnitOfWork(rt.db) as uow:
        have = set(
            uow.session.execute(
                select(published_values.c.code).where(published_values.c.reference.is_(True))
            ).scalars()
        )
        now = datetime.now(UTC)
        for cat in leaves():
            if cat.code in have:
                continue
            row = dict(
                code=cat.code,
                region=NATIONAL,
                date=REFERENCE_DATE,
                version=1,
                kind="price",
                value=str(cat.reference_price_fen),
                stale=False,
                source_region=NATIONAL,
                n_obs=0,
                methodology_version=REFERENCE_METHODOLOGY,
                reference=True,
                published_at=now,
            )
            uow.session.execute(published_values.insert().values(**row))
            uow.emit(
                IndexPublished(
                    series_key=f"{cat.code}@{NATIONAL}",
                    code=cat.code,
                    kind="price",
                    region=NATIONAL,
                    date=REFERENCE_DATE,
                    value=str(cat.reference_price_fen),
                    unit_price_fen=cat.reference_price_fen,
                    version=1,
                    stale=False,
                    source_region=NATIONAL,
                    n_obs=0,
                    methodology_version=REFERENCE_METHODOLOGY,
                    reference=True,
                    published_at=now,
                )
            )
