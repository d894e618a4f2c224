"""Celery tasks of the accounts service: housekeeping of login codes and refresh tokens."""

from __future__ import annotations

from celery import shared_task
from celery.schedules import crontab

SCHEDULE = {
    "accounts-purge-expired": {"task": "accounts.purge_expired", "schedule": crontab(hour=3, minute=17)},
}


@shared_task(name="accounts.purge_expired", acks_late=True)
def purge_expired() -> int:
    """Delete expired login codes and refresh tokens (they are useless and hold hashed personal data)."""
    from workers.celery_app import runtime

    from .handlers import purge_expired as purge

    return purge(runtime("accounts"))
