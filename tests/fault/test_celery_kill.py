"""A Celery worker SIGKILLed in the middle of a task, on the embedded broker (kombu's SQLAlchemy transport on
SQLite). That transport marks a message taken when a worker fetches it, so acks_late redelivers nothing: the
killed task's message is gone. Every task must therefore be recovered by the platform itself — the timers by
their next beat tick (they keep their state in the database), a tax export by the re-dispatch of a job whose
heartbeat stopped (docs/reliability.md lists each task). This test kills the worker while an export is writing
its file and shows the export done by the next worker, from the platform's own beat, with every row.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from datetime import date

from services.invoicing.export_jobs import create_export, dispatch, load_export
from services.invoicing.exports import ReportSpec
from services.kernel.outbox import wait_until
from tests.invoicing.support import issuer_events, platform_for, publish, seller_events, settled
from tests.invoicing.test_exports import read_csv
from workers.supervisor import celery_args, free_port

from .test_kill import embedded_env

INVOICES = 1000
STALLED_S = 4  # the worker beats every second; a job silent for 4 s is sent again


def _worker(settings, log_path, *, beat: bool) -> subprocess.Popen:  # noqa: ANN001
    env = embedded_env(settings.data_dir, free_port())
    env.update(
        INVOICING_EXPORT_RUNNER="celery",
        INVOICING_EXPORT_PROGRESS_EVERY="100",
        INVOICING_EXPORT_FETCH_ROWS="100",
        INVOICING_EXPORT_STALLED_S=str(STALLED_S),
        INVOICING_EXPORT_REQUEUE_EVERY_S="1",
    )
    return subprocess.Popen(
        celery_args(settings, beat=beat),
        env=env,
        stdout=open(log_path, "ab"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _visible_messages(data_dir) -> int:  # noqa: ANN001 - a Path
    with sqlite3.connect(f"file:{data_dir / 'celery.db'}?mode=ro", uri=True, timeout=30) as c:
        (table,) = c.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE '%message' AND type = 'table'"
        ).fetchone()
        return c.execute(f"SELECT count(*) FROM {table} WHERE visible").fetchone()[0]


def _kill_mid_task(worker: subprocess.Popen, db_file, export_id: str) -> dict:  # noqa: ANN001
    """Once the export runs, take the invoicing database's write lock (its next progress write waits on it),
    check the job is still mid-way, and SIGKILL the worker: killed mid-task, whatever the machine's speed."""
    assert wait_until(lambda: load_status(db_file, export_id)[0] != "queued", 300, 0.02), "never started"
    c = sqlite3.connect(db_file, timeout=30, isolation_level=None)
    try:
        c.execute("BEGIN IMMEDIATE")
        status, rows_done = c.execute(
            "SELECT status, rows_done FROM exports WHERE id = ?", (export_id,)
        ).fetchone()
        assert status == "running" and rows_done < INVOICES, (status, rows_done)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
        c.execute("ROLLBACK")
    finally:
        c.close()
    return {"status": status, "rows_done": rows_done}


def load_status(db_file, export_id: str) -> tuple[str, int]:  # noqa: ANN001
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30) as c:
        return c.execute("SELECT status, rows_done FROM exports WHERE id = ?", (export_id,)).fetchone()


def test_an_export_whose_worker_is_killed_mid_task_is_run_again_by_the_platform(
    sqlite_settings, tmp_path, show_figures
):
    platform = platform_for(sqlite_settings, export_runner="celery", export_stalled_s=STALLED_S)
    nov = date(2026, 11, 10)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, *(settled("u_1", "fm_a", 10_000 + k, on=nov) for k in range(INVOICES)))
    rt = platform["invoicing"]
    db_file = sqlite_settings.data_dir / "invoicing.db"
    log = tmp_path / "worker.log"

    first = _worker(sqlite_settings, log, beat=False)
    try:
        job = create_export(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), "u_acc", "celery")
        assert dispatch(rt, job["id"], "celery") == "celery"
        at_kill = _kill_mid_task(first, db_file, job["id"])
    finally:
        _stop(first, signal.SIGKILL)
    # the transport took the message when the worker fetched it: nothing is left to redeliver
    assert _visible_messages(sqlite_settings.data_dir) == 0
    assert load_export(rt.db, job["id"])["status"] == "running"

    second = _worker(sqlite_settings, log, beat=True)
    try:
        assert wait_until(
            lambda: load_export(rt.db, job["id"])["status"] in ("done", "failed")
            or second.poll() is not None,
            600,
            0.5,
        ), log.read_text()[-4000:]
    finally:
        _stop(second)
    done = load_export(rt.db, job["id"])
    assert (done["status"], done["rows_done"], done["rows_total"]) == ("done", INVOICES, INVOICES), (
        done,
        log.read_text()[-4000:],
    )
    out = sqlite_settings.data_dir / "exports" / "invoicing" / f"{job['id']}.csv"
    assert len([r for r in read_csv(out) if r["row_type"] == "invoice"]) == INVOICES
    assert "sending it again" in log.read_text()
    show_figures(
        f"Celery worker killed mid-export at {at_kill}; the next worker's beat sent it again: {INVOICES} rows"
    )
    platform.stop()
