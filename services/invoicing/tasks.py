"""Tasks of the invoicing service (run by the platform's worker) and their beat schedule.

`invoicing.export_tax_report(export_id)` generates a tax report file and records its progress on the job row.
It is safe to redeliver (acks_late): a finished job is left alone, an interrupted one starts again.
`invoicing.requeue_stale_exports` sends again the Celery jobs still queued past their deadline or stalled, and runs
again (in a thread of the worker) the thread jobs whose process is gone or silent.
"""

from __future__ import annotations

from typing import Any

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

from .settings import InvoicingSettings

_every_s = InvoicingSettings().export_requeue_every_s
SCHEDULE: dict[str, Any] = {
    "invoicing-requeue-stale-exports": {
        "task": "invoicing.requeue_stale_exports",
        "schedule": _every_s,
        "options": {"expires": _every_s},
    },
}


@task(
    "invoicing.export_tax_report", service="invoicing", acks_late=True, max_retries=3, default_retry_delay=30
)
def export_tax_report(rt: ServiceRuntime, export_id: str) -> dict[str, Any]:
    """Write the file of export `export_id` (代办税费报告表 / 明细报告表 / annual statement)."""
    from .export_jobs import run_export

    job = run_export(rt, export_id)
    return {"id": job["id"], "status": job["status"], "rows": job["rows_done"]}


@task("invoicing.requeue_stale_exports", service="invoicing", acks_late=True)
def requeue_stale_exports(rt: ServiceRuntime) -> list[str]:
    """Send again every Celery export still queued past `INVOICING_EXPORT_QUEUED_DEADLINE_S` or stalled past
    `INVOICING_EXPORT_STALLED_S`; run again the thread exports that will not finish where they started."""
    from .export_jobs import requeue_stale

    return requeue_stale(rt)
