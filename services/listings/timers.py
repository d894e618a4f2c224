"""Timers of orders: unpaid orders expire (the listing goes back on sale), paid orders not shipped by their
`ship_by` are cancelled (`not_shipped`: the hold is released before the provider lets the authorisation lapse,
and the listing goes back on sale), shipped orders whose money is in escrow are confirmed for the buyer after
`auto_confirm_days` (one whose buyer was asked to pay again is left for them, the seller or an admin). The state
is in the orders table: every scan selects the rows due now and changes each in its own unit of work under a
conditional UPDATE, so a missed scan is caught up by the next and two scans at once (or a scan racing the buyer)
cannot both act.

Run by Celery beat (tasks.py) every `timer_interval_s`; tests call `run_due(rt, now)`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.kernel.db import UnitOfWork
from services.kernel.errors import Conflict
from services.kernel.runtime import ServiceRuntime
from services.kernel.sweep import each_due

from .domain import model as m
from .orders import close, complete
from .settings import settings_of
from .store import orders


def run_due(rt: ServiceRuntime, now: datetime | None = None) -> dict[str, int]:
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    return {
        "expired": _each(
            rt,
            s.timer_batch,
            select(orders).where(orders.c.status == m.PENDING_PAYMENT, orders.c.expires_at <= now),
            lambda uow, row: close(uow, row, "expire", reason="unpaid"),
        ),
        "not_shipped": _each(
            rt,
            s.timer_batch,
            select(orders).where(orders.c.status == m.PAID, orders.c.ship_by <= now),
            lambda uow, row: close(uow, row, "cancel", reason="not_shipped"),
        ),
        "auto_confirmed": _each(
            rt,
            s.timer_batch,
            # only money in escrow is released: a shipped order whose buyer must pay again waits for them
            select(orders).where(
                orders.c.status == m.SHIPPED,
                orders.c.payment_status == m.IN_ESCROW,
                orders.c.shipped_at <= now - timedelta(days=s.auto_confirm_days),
            ),
            lambda uow, row: complete(uow, rt, row, auto=True),
        ),
    }


def _each(rt: ServiceRuntime, batch: int, query: Any, act: Callable[[UnitOfWork, Any], bool]) -> int:
    """Apply `act` to every due order whose status has not moved since the scan read it, each in its own unit of
    work with the order's row locked; returns how many changed."""

    def locked(row: Any) -> bool:
        try:
            with UnitOfWork(rt.db) as uow:
                fresh = uow.session.execute(
                    select(orders).where(orders.c.id == row.id).with_for_update()
                ).one()
                return fresh.status == row.status and act(uow, fresh)
        except Conflict:
            return False  # moved on meanwhile (paid, cancelled)

    return each_due(rt.db, query, orders.c.id, batch, locked, "listings timer failed on order")
