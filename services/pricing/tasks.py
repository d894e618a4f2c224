"""Tasks of the pricing service (run by the platform's worker) and their beat schedule.

The daily computation runs at the methodology's publication time (`specification.publication_time`, in its
time zone, which is the Celery app's). It is idempotent: a second run the same day, a retry after a crash or two
workers at once publish nothing twice (computations are serialised and unchanged values publish nothing).

A day whose run was lost (the worker died computing it, or worker or beat was down at the publication time) is
computed by the catch-up: beat runs it every `PRICING_CATCHUP_EVERY_S` (and the daily job runs it first), and it
computes each published day of the last `PRICING_CATCHUP_DAYS` that has no computation, oldest first.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from celery.schedules import crontab

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import TIMEZONE as CELERY_TIMEZONE
from services.kernel.tasks import task

from .domain.methodology import load_methodology
from .settings import PricingSettings


def daily_schedule() -> crontab:
    """crontab of the publication time. The methodology's time zone must be the Celery app's: a crontab is
    read in the app's time zone, and publishing at 10:00 somewhere else would be a silent methodology change."""
    m = load_methodology()
    tz = m.specification.timezone
    if ZoneInfo(tz) != ZoneInfo(CELERY_TIMEZONE):
        raise ValueError(f"methodology time zone {tz} differs from the Celery app's {CELERY_TIMEZONE}")
    hour, minute = (int(x) for x in m.specification.publication_time.split(":"))
    return crontab(hour=hour, minute=minute)


_catchup_every_s = PricingSettings().catchup_every_s
SCHEDULE = {
    # expires: a publication not started within 6 hours waits for the next day's run (which also picks up any
    # day queued for a restatement) rather than piling up.
    "pricing-daily-indices": {
        "task": "pricing.compute_daily",
        "schedule": daily_schedule(),
        "options": {"expires": 6 * 3600},
    },
    # a tick not run within its period is dropped: the next one finds the same days missing
    "pricing-catch-up": {
        "task": "pricing.catch_up",
        "schedule": _catchup_every_s,
        "options": {"expires": _catchup_every_s},
    },
}


@task(
    "pricing.compute_daily",
    service="pricing",
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=60,
    retry_backoff_max=1800,
    max_retries=5,
)
def compute_daily(rt: ServiceRuntime) -> list[dict]:
    """Publish the due day's series and indices, then restate days that received late inputs."""
    from .handlers import run_daily

    return [{k: str(v) if k == "date" else v for k, v in r.items()} for r in run_daily(rt)]


@task("pricing.catch_up", service="pricing", acks_late=True)
def catch_up(rt: ServiceRuntime) -> list[dict]:
    """Compute the published days of the catch-up horizon that have no computation yet, oldest first."""
    from .handlers import catch_up as run_catch_up

    return [{k: str(v) if k == "date" else v for k, v in r.items()} for r in run_catch_up(rt)]


@task("pricing.compute_day", service="pricing", acks_late=True)
def compute_one_day(rt: ServiceRuntime, day: str, reason: str | None = None) -> dict:
    """Compute one day on demand (a backfill queued by an operator)."""
    from datetime import date

    from .handlers import compute

    o = compute(rt, date.fromisoformat(day), trigger="task", reason=reason)
    return {k: str(v) if k == "date" else v for k, v in o.view().items() if k not in ("series", "notices")}
