"""Celery tasks of the trading service (picked up by workers/celery_app.py) and their beat schedule.

The closing job keeps its state in the lots table (see closing.py): beat only says "scan now", so a worker
restart, a missed tick or two workers scanning at once change nothing.
"""
from __future__ import annotations

from celery import shared_task

from .settings import TradingSettings

_every_s = TradingSettings().close_interval_s
SCHEDULE = {
    # a tick not run within its period is dropped: the next one scans the same rows
    "trading-close-lots": {"task": "trading.close_due_lots", "schedule": _every_s, "options": {"expires": _every_s}},
}


@shared_task(name="trading.close_due_lots", acks_late=True)
def close_due_lots() -> dict[str, int]:
    """Close every lot whose end time has passed (award or unsold)."""
    from workers.celery_app import runtime

    from .closing import run_due

    return run_due(runtime("trading"))
