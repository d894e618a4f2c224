"""Seed booking's reference data (the category taxonomy) at start; idempotent."""

from __future__ import annotations

from sqlalchemy import delete

from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import categories as taxonomy

from .store import categories


def seed(rt: ServiceRuntime) -> None:
    with UnitOfWork(rt.db) as uow:
        uow.session.execute(delete(categories))
        uow.session.execute(
            categories.insert(),
            [
                dict(
                    code=c.code,
                    name=c.name,
                    unit=c.unit,
                    parent=c.parent,
                    min_qty=str(c.min_qty),
                    pays=c.pays,
                    tax_code=c.tax_code,
                )
                for c in taxonomy().values()
            ],
        )
