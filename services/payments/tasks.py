"""Tasks of the payments service: nightly reconciliation of our ledger with the provider's objects, and the timer
that reads the PaymentIntents still waiting for their payer (hold_requests.py)."""

from __future__ import annotations

import logging

from celery.schedules import crontab

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

from .settings import PaymentsSettings

_sync_every_s = PaymentsSettings().open_payment_sync_s
SCHEDULE = {
    "payments-reconcile": {"task": "payments.reconcile", "schedule": crontab(hour=2, minute=30)},
    # a tick not run within its period is dropped: the next one reads the same intents
    "payments-sync-open-payments": {
        "task": "payments.sync_open_payments",
        "schedule": _sync_every_s,
        "options": {"expires": _sync_every_s},
    },
}


@task("payments.sync_open_payments", service="payments", acks_late=True)
def sync_open_payments(rt: ServiceRuntime) -> int:
    """Apply what payers did with the intents still waiting for them; returns how many changed."""
    from .hold_requests import hold_requests_of

    return hold_requests_of(rt).sync_waiting()


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
