"""Tasks of listings (run by the platform's worker): the order timers (beat) and rebuilding the search index
(on demand: `REINDEX.publish(settings)`)."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

from .settings import ListingsSettings

_every_s = ListingsSettings().timer_interval_s
SCHEDULE = {
    # a tick not run within its period is dropped: the next one scans the same rows
    "listings-timers": {
        "task": "listings.run_timers",
        "schedule": _every_s,
        "options": {"expires": _every_s},
    },
}


@task("listings.run_timers", service="listings", acks_late=True)
def run_timers(rt: ServiceRuntime) -> dict[str, int]:
    """Expire unpaid orders and auto-confirm shipped ones that are due."""
    from .timers import run_due

    return run_due(rt)


@task("listings.reindex", service="listings", acks_late=True)
def reindex(rt: ServiceRuntime) -> int:
    """Rebuild the search index from the listings table; returns how many listings it holds."""
    from .search import search_of
    from .search.indexer import reindex as run

    return run(rt.db, search_of(rt))


REINDEX = reindex
