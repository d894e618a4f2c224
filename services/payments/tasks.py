"""Celery tasks of the payments service: nightly reconciliation of our ledger with the provider's objects."""

from __future__ import annotations

from celery import shared_task
from celery.schedules import crontab

SCHEDULE = {
    "payments-reconcile": {"task": "payments.reconcile", "schedule": crontab(hour=2, minute=30)},
}


@shared_task(
    name="payments.reconcile", acks_late=True, autoretry_for=(Exception,), retry_backoff=60, max_retries=3
)
def reconcile() -> dict:
    """Compare the ledger with the provider; differences are logged and returned (and fail the CLI run)."""
    import logging

    from workers.celery_app import runtime

    from .reconcile import reconcile as run

    report = run(runtime("payments").ports["payments"])
    summary = report.to_dict()
    if not report.ok:
        logging.getLogger(__name__).error("payments reconciliation found differences: %s", summary)
    return summary
