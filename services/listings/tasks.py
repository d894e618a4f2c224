"""Celery tasks of listings: the order timers (beat) and rebuilding the search index (on demand)."""
from __future__ import annotations

from celery import shared_task

from .settings import ListingsSettings

_every_s = ListingsSettings().timer_interval_s
SCHEDULE = {
    # a tick not run within its period is dropped: the next one scans the same rows
    "listings-timers": {"task": "listings.run_timers", "schedule": _every_s, "options": {"expires": _every_s}},
}


@shared_task(name="listings.run_timers", acks_late=True)
def run_timers() -> dict[str, int]:
    """Expire unpaid orders and auto-confirm shipped ones that are due."""
    from workers.celery_app import runtime

    from .timers import run_due

    return run_due(runtime("listings"))


@shared_task(name="listings.reindex", acks_late=True)
def reindex() -> int:
    """Rebuild the search index from the listings table; returns how many listings it holds."""
    from workers.celery_app import runtime

    from .search import search_of
    from .search.indexer import reindex as run

    rt = runtime("listings")
    return run(rt.db, search_of(rt))
