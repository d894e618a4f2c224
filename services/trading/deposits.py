"""Deposits (保证金): a hold of the bidder's money through payments, required to bid when a lot asks for one,
given back to every firm that did not win at the close."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from services.kernel.db import UnitOfWork

from .store import deposits


def release_losers(uow: UnitOfWork, lot_id: str, firm_ids: set[str], now: datetime) -> int:
    """Ask payments to give back the deposits of `firm_ids` on the lot (once: only held deposits move)."""
    if not firm_ids:
        return 0
    res = uow.session.execute(
        update(deposits)
        .where(deposits.c.lot_id == lot_id, deposits.c.firm_id.in_(firm_ids), deposits.c.status == "held")
        .values(status="release_requested", updated_at=now)
    )
    return res.rowcount
