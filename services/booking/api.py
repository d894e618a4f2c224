"""Booking routes."""
from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import select

from services.kernel.db import UnitOfWork
from services.kernel.http import Ctx, Router

from .store import categories

router = Router("booking")


class CategoryOut(BaseModel):
    code: str
    name: str
    unit: str | None
    parent: str | None
    min_qty: str | None = None
    pays: bool | None = None


@router.get("/v1/categories", public=True, response=list[CategoryOut])
async def list_categories(ctx: Ctx) -> list[dict]:
    """The category taxonomy (families and leaves, with unit: kg or piece)."""

    def load() -> list[dict]:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            rows = uow.session.execute(select(categories).order_by(categories.c.code)).all()
        return [dict(code=r.code, name=r.name, unit=r.unit or None, parent=r.parent,
                     min_qty=r.min_qty if r.parent else None, pays=r.pays if r.parent else None) for r in rows]

    return await ctx.run(load)
