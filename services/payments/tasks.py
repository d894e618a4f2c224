"""Tasks of the payments service: nightly reconciliation of our ledger with the provider's objects."""

from __future__ import annotations

import logging

from celery.schedules import crontab

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

SCHEDULE = {
    "payments-reconcile": {"task": "payments.reconcile", "schedule": crontab(hour=2, minute=30)},
}


@task(
    "payments.reconcile",
    service="payments",
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=60,
    max_retries=3,
)
def reconcile(rt: ServiceRuntime) -> dict:
    """Compare the ledger with the provider; differences are logged and returned (and fail the CLI run)."""
    from .handlers import payments_of
    from .reconcile import reconcile as run

    report = run(payments_of(rt))
    summary = report.to_dict()
    if not report.ok:
        logging.getLogger(__name__).error("payments reconciliation found differences: %s", summary)
    return summary
