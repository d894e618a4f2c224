"""Celery tasks of the invoicing service (picked up by workers/celery_app.py).

`invoicing.export_tax_report(export_id)` generates a tax report file and records its progress on the job row.
It is safe to redeliver (acks_late): a finished job is left alone, an interrupted one starts again.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

SCHEDULE: dict[str, Any] = {}

# Tests (and tools) that host the invoicing runtime themselves point the tasks at it; a worker uses its own.
_runtime_override: Any = None


def use_runtime(rt: Any) -> None:
    """Run the tasks of this process against `rt` (None: the worker's own runtime)."""
    global _runtime_override
    _runtime_override = rt


def _runtime() -> Any:
    if _runtime_override is not None:
        return _runtime_override
    from workers.celery_app import runtime

    return runtime("invoicing")


@shared_task(name="invoicing.export_tax_report", acks_late=True, max_retries=3, default_retry_delay=30)
def export_tax_report(export_id: str) -> dict[str, Any]:
    """Write the file of export `export_id` (代办税费报告表 / 明细报告表 / annual statement)."""
    from .export_jobs import run_export

    job = run_export(_runtime(), export_id)
    return {"id": job["id"], "status": job["status"], "rows": job["rows_done"]}
