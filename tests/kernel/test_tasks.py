"""Tasks: declared by services, handed their runtime by the worker, published through the project's Celery app
from any process (never Celery's default app, which would send them to AMQP on localhost:5672)."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

from services.kernel import tasks
from services.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_publishing_goes_to_the_configured_broker_not_celerys_default(tmp_path):
    import celery

    s = Settings(env="dev", data_dir=tmp_path)
    tasks.publish(s, "invoicing.export_tax_report", "ex_1")
    with sqlite3.connect(tmp_path / "celery.db") as db:  # the embedded broker's queue
        (n,) = db.execute("select count(*) from kombu_message").fetchone()
    assert n == 1
    # nothing was set as Celery's current app by publishing (a shared_task would publish through that one)
    assert tasks.celery_app(s) is not celery.current_app._get_current_object()


def test_a_task_gets_its_runtime_from_whoever_installed_it():
    seen = []

    @tasks.task("tests.echo", service="accounts")
    def echo(rt, x):  # noqa: ANN001, ANN202
        seen.append((rt, x))
        return x

    with tasks.run_inline(lambda service: f"runtime of {service}") as calls:
        echo.publish(Settings(), 7)
    assert calls == [("tests.echo", (7,))] and seen == [("runtime of accounts", 7)]


def test_no_service_imports_workers():
    """The worker hands each task its runtime; services never reach into `workers`."""
    offenders = []
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "workers" or n.startswith("workers.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_every_scheduled_task_of_every_service_is_declared():
    from workers.celery_app import celery_app

    declared = tasks.declared()
    for entry in celery_app.conf.beat_schedule.values():
        assert entry["task"] in declared and entry["task"] in celery_app.tasks
