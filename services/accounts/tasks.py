"""Tasks of the accounts service: housekeeping of login codes and refresh tokens."""

from __future__ import annotations

from celery.schedules import crontab

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

SCHEDULE = {
    "accounts-purge-expired": {"task": "accounts.purge_expired", "schedule": crontab(hour=3, minute=17)},
}


@task("accounts.purge_expired", service="accounts", acks_late=True)
def purge_expired(rt: ServiceRuntime) -> int:
    """Delete expired login codes and refresh tokens (they are useless and hold hashed personal data)."""
    from .handlers import purge_expired as purge

    return purge(rt)
