"""A tax export run in a background thread (`INVOICING_EXPORT_RUNNER=thread`: no Celery) whose process is
SIGKILLed. A thread job has no message anywhere that a broker could redeliver: only its row, naming the process that
took it. `recycle run`'s supervisor starts the gateway again, and the invoicing service, starting, runs the job
again to the end (`recover_threads`); the accountant sees it `done`, with every row, through the public API. Before,
the job was marked failed at that start ("request it again"), and one left `queued` stayed queued forever.

The kill is made mid-way whatever the machine's speed, as in test_celery_kill.py: once the job runs, the test takes
the invoicing database's write lock (the export's next progress write waits on it), checks the job is still
mid-way and SIGKILLs the process. (A job killed before its thread claimed it, still `queued`, is run again by the
same start-up path: tests/invoicing/test_exports.py shows it on a process that really exited.)
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import urllib.request
import uuid
from datetime import date

from services.kernel.outbox import wait_until
from services.kernel.settings import Settings
from tests.e2e.flow import embedded_run, http_get, http_post, log_tail
from tests.invoicing.support import accountant, issuer_events, platform_for, publish, seller_events, settled
from workers.supervisor import free_port

from .harness import children
from .test_celery_kill import load_status
from .test_kill import SECRETS

INVOICES = 1000


def _seed(data_dir) -> Settings:  # noqa: ANN001 - a Path
    """A firm's November of INVOICES reverse invoices, written by the invoicing service itself (its consumers fed
    the events accounts and booking would publish) into the data directory the run will use."""
    settings = Settings(
        env="test",
        data_dir=data_dir,
        bus="dblog",
        jwt_secret=SECRETS["JWT_SECRET"],
        pii_key=SECRETS["PII_KEY"],
    )
    platform = platform_for(settings)
    publish(platform, *issuer_events("fm_a"), *seller_events(settings, "u_1"))
    publish(platform, *(settled("u_1", "fm_a", 10_000 + k, on=date(2026, 11, 10)) for k in range(INVOICES)))
    platform.stop()
    return settings


def _gateway(run_pid: int) -> int | None:
    found = [pid for pid, args in children(run_pid) if args.endswith("serve --no-background")]
    return found[0] if found else None


def _kill_mid_export(run_pid: int, db_file, export_id: str) -> tuple[str, int, int]:  # noqa: ANN001
    """SIGKILL the gateway (the process whose thread runs the export) while the export is provably mid-way."""
    assert wait_until(lambda: load_status(db_file, export_id)[0] != "queued", 120, 0.01), "never started"
    c = sqlite3.connect(db_file, timeout=30, isolation_level=None)
    try:
        c.execute("BEGIN IMMEDIATE")
        status, rows_done, worker = c.execute(
            "SELECT status, rows_done, worker FROM exports WHERE id = ?", (export_id,)
        ).fetchone()
        assert status == "running" and rows_done < INVOICES, (status, rows_done)
        gateway = _gateway(run_pid)
        assert gateway is not None and worker.endswith(f":{gateway}"), (worker, children(run_pid))
        os.kill(gateway, signal.SIGKILL)
        # reaped by the supervisor, which starts a new gateway (it waits for the lock to migrate, then recovers)
        assert wait_until(lambda: _gateway(run_pid) != gateway, 60, 0.05), children(run_pid)
        c.execute("ROLLBACK")
    finally:
        c.close()
    return status, rows_done, gateway


def test_a_thread_export_whose_process_is_killed_is_run_again_when_the_service_starts(tmp_path, show_figures):
    data = tmp_path / "data"
    data.mkdir()
    settings = _seed(data)
    port = free_port()
    with embedded_run(
        data,
        port,
        INVOICING_EXPORT_RUNNER="thread",
        INVOICING_EXPORT_PROGRESS_EVERY="100",
        INVOICING_EXPORT_FETCH_ROWS="100",
        SUPERVISOR_BACKOFF_S="0.2",
        **SECRETS,
    ) as (base, log, proc):
        # the supervisor has seen the gateway up and started the rest: from now on it restarts what dies
        assert wait_until(
            lambda: {"background", "celery"}
            <= {a.split()[-1] if "celery" not in a else "celery" for _, a in children(proc.pid)},
            120,
            0.2,
        ), children(proc.pid)
        token = accountant(settings, "fm_a")
        status, job = http_post(
            base + "/v1/tax/exports",
            {"period": "2026-11", "format": "csv", "firm_id": "fm_a"},
            token | {"Idempotency-Key": uuid.uuid4().hex},
        )
        assert status == 202, job
        at_kill = _kill_mid_export(proc.pid, data / "invoicing.db", job["id"])

        url = f"{base}/v1/tax/exports/{job['id']}"

        def finished() -> bool:
            try:
                code, body = http_get(url, token)
            except OSError:  # the gateway is starting again
                return False
            return code == 200 and body["status"] in ("done", "failed")

        assert wait_until(finished, 180, 0.3), log_tail(log)
        code, done = http_get(url, token)
        assert (code, done["status"], done["progress"]) == (200, "done", 1.0), (done, log_tail(log))
        req = urllib.request.Request(base + done["download_url"], headers=token)
        with urllib.request.urlopen(req, timeout=30) as r:
            rows = list(csv.DictReader(io.StringIO(r.read().decode("utf-8-sig"))))
        assert len([row for row in rows if row["row_type"] == "invoice"]) == INVOICES
        assert "running it again here" in log.read_text(), log_tail(log)
        assert proc.poll() is None
    show_figures(
        f"thread export: its process SIGKILLed mid-way at {at_kill[:2]}; run again at start-up, {INVOICES} rows"
    )
