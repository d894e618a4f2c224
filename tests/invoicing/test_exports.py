"""Tax exports: the 明细报告表 / 报告表 / annual statements, CSV parsed back and XLSX opened with openpyxl; the
month settlement they apply checked against the domain's; the API (202, progress, download, access control), the
Celery task and the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from datetime import date, timedelta
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from typer.testing import CliRunner

from services.invoicing import tasks
from services.invoicing.domain.tax import RedLetterLine, month_settlement
from services.invoicing.export_jobs import create_export, dispatch, load_export, requeue_stale
from services.invoicing.exports import DETAIL_KEYS, SUMMARY_ITEMS, ReportSpec, write_report
from services.invoicing.issuing import issue_red_letter, load_taxes
from services.invoicing.store import invoices

from .support import (
    accountant,
    app_client,
    at,
    auth,
    issuer_events,
    platform_for,
    publish,
    seller_events,
    settled,
)

NOV = date(2026, 11, 10)
MONEY = [k for k in DETAIL_KEYS if k.endswith("_fen")]


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


def scenario(platform, settings, seed: int = 7) -> None:
    """Sellers around the exemption threshold, invoiced by two firms in October and November, with full and
    partial red letters in the same month and in a later month."""
    rng = random.Random(seed)
    publish(platform, *issuer_events("fm_a"), *issuer_events("fm_b", city_code="130102"))
    events = []
    for k in range(12):
        seller = f"u_{k:02d}"
        events += seller_events(settings, seller)
    publish(platform, *events)
    pickups = []
    for k in range(12):
        seller = f"u_{k:02d}"
        for month in (10, 11):
            for _ in range(rng.randint(1, 4)):
                amount = rng.choice(
                    [1_000_000, 2_500_000, 4_000_000, 6_000_000, 8_000_000, 3_333_333, 12_345]
                )
                firm = "fm_a" if rng.random() < 0.7 else "fm_b"
                pickups.append(
                    settled(
                        seller,
                        firm,
                        [amount, rng.randint(1, 500_000)],
                        on=date(2026, month, rng.randint(1, 28)),
                    )
                )
    publish(platform, *pickups)
    rt = platform["invoicing"]
    with rt.db.session() as s:
        blues = s.execute(
            select(invoices)
            .where(invoices.c.kind == "blue", invoices.c.status == "issued")
            .order_by(invoices.c.number)
        ).all()
    for b in rng.sample(blues, 10):
        when = at(date(2026, 11, 29)) if rng.random() < 0.5 else at(max(b.invoice_date, date(2026, 11, 1)))
        lines = None if rng.random() < 0.5 else [RedLetterLine(0, rng.randint(1, 12_000), Decimal("0"))]
        issue_red_letter(rt, b.id, reason="退回", lines=lines, by="u_acc", now=when)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_the_detail_report_settles_each_seller_month_as_the_domain_does(settings, tmp_path):
    platform = platform_for(settings)
    scenario(platform, settings)
    rt = platform["invoicing"]
    out = tmp_path / "detail.csv"
    n = write_report(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), out)
    rows = read_csv(out)
    inv_rows = [r for r in rows if r["row_type"] == "invoice"]
    assert len(inv_rows) == n > 0
    # the domain's settlement of every seller-month (all issuers), invoice by invoice
    with rt.db.session() as s:
        month = s.execute(
            select(invoices).where(
                invoices.c.status == "issued",
                invoices.c.invoice_date.between(date(2026, 11, 1), date(2026, 11, 30)),
            )
        ).all()
        expected = {}
        for seller in {r.seller_id for r in month}:
            mine = [r for r in month if r.seller_id == seller]
            settled_month = month_settlement([load_taxes(s, r) for r in mine])
            for r, si in zip(mine, settled_month.invoices):
                expected[r.number] = (si, settled_month.taxable)
    assert {r["invoice_number"] for r in inv_rows} == {
        num
        for num, _ in expected.items()
        if any(m.number == num and m.issuer_firm_id == "fm_a" for m in month)
    }
    flipped = 0
    for r in inv_rows:
        si, taxable = expected[r["invoice_number"]]
        assert int(r["vat_due_fen"]) == si.settled.vat_fen
        assert int(r["vat_adjustment_fen"]) == si.vat_adjustment_fen
        assert int(r["surcharges_adjustment_fen"]) == si.surcharges_adjustment_fen
        assert int(r["surcharges_due_fen"]) == si.settled.surcharges_fen
        assert int(r["city_maintenance_due_fen"]) == si.settled.city_maintenance_fen
        assert int(r["exempt_sales_fen"]) + int(r["taxable_sales_excl_fen"]) == si.settled.sales_excl_fen
        assert (r["month_vat_status"] == "免税") == si.settled.exempt
        assert int(r["vat_fen"]) == si.issued.vat_fen and int(r["iit_fen"]) == si.issued.iit_fen
        flipped += si.changed
    assert flipped > 0  # the scenario does exercise the settlement
    # every seller total is the sum of its invoices, and the firm total of the sellers'
    firm_total = rows[-1]
    assert firm_total["row_type"] == "firm_total"
    for key in MONEY:
        assert int(firm_total[key]) == sum(int(r[key]) for r in inv_rows), key
        for seller in {r["seller_id"] for r in inv_rows}:
            (st,) = [r for r in rows if r["row_type"] == "seller_total" and r["seller_id"] == seller]
            assert int(st[key]) == sum(int(r[key]) for r in inv_rows if r["seller_id"] == seller), key
    assert sum(int(r["red_offset_fen"]) for r in inv_rows) < 0
    # XLSX: the same rows, and the totals sheet
    xlsx = tmp_path / "detail.xlsx"
    write_report(rt.db, ReportSpec("fm_a", "detail", "2026-11", "xlsx"), xlsx)
    wb = load_workbook(xlsx, read_only=True)
    assert wb.sheetnames == ["明细", "汇总"]
    sheet = list(wb["明细"].iter_rows(values_only=True))
    assert sheet[0][0].startswith("代办税费明细报告表 2026-11") and sheet[2] == DETAIL_KEYS
    assert [[("" if v is None else str(v)) for v in row] for row in sheet[3:]] == [
        list(r.values()) for r in rows
    ]
    totals = {row[0]: row[2] for row in list(wb["汇总"].iter_rows(values_only=True))[3:]}
    assert totals["vat_due_fen"] == int(firm_total["vat_due_fen"]) and totals["sellers"] == len(
        {r["seller_id"] for r in inv_rows}
    )
    # the summary report alone, CSV
    summary = tmp_path / "summary.csv"
    write_report(rt.db, ReportSpec("fm_a", "summary", "2026-11", "csv"), summary)
    items = {r["item"]: int(r["value"]) for r in read_csv(summary)}
    assert list(items) == [k for k, _ in SUMMARY_ITEMS]
    assert items["tax_due_fen"] == int(firm_total["tax_due_fen"])
    assert items["invoices_blue"] + items["invoices_red"] == n
    platform.stop()


def test_the_annual_statement_export_sums_the_sellers_year(sqlite_settings, tmp_path):
    platform = platform_for(sqlite_settings)
    scenario(platform, sqlite_settings)
    rt = platform["invoicing"]
    out = tmp_path / "annual.csv"
    write_report(rt.db, ReportSpec("fm_a", "annual", "2026", "csv"), out)
    rows = read_csv(out)
    with rt.db.session() as s:
        mine = s.execute(
            select(invoices).where(invoices.c.issuer_firm_id == "fm_a", invoices.c.status == "issued")
        ).all()
    assert {r["seller_id"] for r in rows} == {m.seller_id for m in mine}
    for r in rows:
        got = [m for m in mine if m.seller_id == r["seller_id"]]
        assert int(r["total_fen"]) == sum(m.total_fen for m in got)
        assert int(r["iit_fen"]) == sum(m.iit_fen for m in got)
        assert int(r["invoices_blue"]) + int(r["invoices_red"]) == len(got)
    platform.stop()


def test_full_pii_reveals_the_sellers_identity_for_the_filing(sqlite_settings, tmp_path):
    platform = platform_for(sqlite_settings)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, settled("u_1", "fm_a", 100_000, on=NOV))
    out = tmp_path / "d.csv"
    write_report(
        platform["invoicing"].db,
        ReportSpec("fm_a", "detail", "2026-11", "csv", pii="full"),
        out,
        settings=sqlite_settings,
    )
    row = read_csv(out)[0]
    assert (row["seller_name"], row["seller_id_number"]) == ("张三", "11010519491231002X")
    write_report(platform["invoicing"].db, ReportSpec("fm_a", "detail", "2026-11", "csv"), out)
    assert read_csv(out)[0]["seller_name"] == "张*"
    platform.stop()


# ---------------------------------------------------------------------------------------------- API


async def _wait_done(client, export_id: str, headers) -> dict:  # noqa: ANN001
    for _ in range(300):
        r = await client.get(f"/v1/tax/exports/{export_id}", headers=headers)
        body = await r.json()
        if body["status"] in ("done", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("the export did not finish")


async def test_export_through_the_api_is_streamed_to_the_firms_accountants_only(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    scenario(platform, settings)
    acc = accountant(settings, "fm_a")
    r = await client.post("/v1/tax/exports", json={"period": "2026-11", "format": "csv"}, headers=acc)
    assert r.status == 202, await r.text()
    started = await r.json()
    assert set(started) >= {"id", "status"} and started["status"] in ("queued", "running", "done")
    job = await _wait_done(client, started["id"], acc)
    assert job["status"] == "done" and job["progress"] == 1.0 and job["rows_done"] == job["rows_total"] > 0
    assert job["download_url"] == f"/v1/tax/exports/{started['id']}/file"
    r = await client.get(job["download_url"], headers=acc)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert len([x for x in rows if x["row_type"] == "invoice"]) == job["rows_total"]
    # another accountant of the same firm may download it; nobody else
    assert (
        await client.get(job["download_url"], headers=accountant(settings, "fm_a", "u_acc2"))
    ).status == 200
    for headers in (
        accountant(settings, "fm_b", "u_b"),
        auth(settings, "u_00", "resident"),
        auth(settings, "u_admin", "admin"),
    ):
        assert (await client.get(job["download_url"], headers=headers)).status == 403
        assert (await client.get(f"/v1/tax/exports/{started['id']}", headers=headers)).status == 403
    assert (
        await client.post(
            "/v1/tax/exports",
            json={"period": "2026-11", "format": "csv", "firm_id": "fm_a"},
            headers=accountant(settings, "fm_b", "u_b"),
        )
    ).status == 403
    two_firms = auth(settings, "u_two", "accountant", firms=("fm_a", "fm_b"))
    r = await client.post("/v1/tax/exports", json={"period": "2026-11", "format": "csv"}, headers=two_firms)
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "firm_id"
    r = await client.post("/v1/tax/exports", json={"period": "2026-11", "format": "pdf"}, headers=acc)
    assert r.status == 400
    # XLSX through the API
    r = await client.post(
        "/v1/tax/exports", json={"period": "2026-11", "format": "xlsx", "kind": "summary"}, headers=acc
    )
    job = await _wait_done(client, (await r.json())["id"], acc)
    body = await (await client.get(job["download_url"], headers=acc)).read()
    wb = load_workbook(io.BytesIO(body), read_only=True)
    assert [row[0] for row in list(wb.active.iter_rows(values_only=True))[3:]] == [
        k for k, _ in SUMMARY_ITEMS
    ]
    assert (await client.get("/v1/tax/exports/ex_nope", headers=acc)).status == 404
    platform.stop()


def test_the_celery_task_generates_the_export_and_records_progress(sqlite_settings, tmp_path):
    from services.kernel import tasks as kernel_tasks

    platform = platform_for(sqlite_settings, export_runner="celery", export_progress_every=100)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, *(settled("u_1", "fm_a", 10_000 + k, on=NOV) for k in range(250)))
    rt = platform["invoicing"]
    with kernel_tasks.run_inline(lambda name: platform[name]) as calls:
        job = create_export(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), "u_acc", "celery")
        assert dispatch(rt, job["id"], "celery") == "celery"
        assert calls == [("invoicing.export_tax_report", (job["id"],))]
        done = load_export(rt.db, job["id"])
        assert (done["status"], done["rows_done"], done["rows_total"], done["runner"]) == (
            "done",
            250,
            250,
            "celery",
        )
        assert done["progress"] == 1.0 and done["dispatched_at"] is not None
        # a redelivered task (acks_late) leaves a finished job alone
        assert tasks.export_tax_report(rt, job["id"])["status"] == "done"
    platform.stop()


def test_a_job_still_queued_past_its_deadline_is_sent_again(sqlite_settings):
    """A message lost on the way (or sent where no worker listens) delays an export; it never stays queued."""
    from services.kernel import tasks as kernel_tasks

    platform = platform_for(sqlite_settings, export_runner="celery", export_queued_deadline_s=60)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, settled("u_1", "fm_a", 10_000, on=NOV))
    rt = platform["invoicing"]
    lost: list[tuple] = []
    kernel_tasks.install_publisher(lambda name, args, kwargs: lost.append((name, args)))
    try:
        job = create_export(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), "u_acc", "celery")
        dispatch(rt, job["id"], "celery")
    finally:
        kernel_tasks.install_publisher(None)
    assert lost and load_export(rt.db, job["id"])["status"] == "queued"
    sent = load_export(rt.db, job["id"])["dispatched_at"]
    with kernel_tasks.run_inline(lambda name: platform[name]) as calls:
        assert tasks.requeue_stale_exports(rt) == []  # not yet past its deadline
        later = sent + timedelta(seconds=61)
        assert requeue_stale(rt, now=later) == [job["id"]]
        assert calls == [("invoicing.export_tax_report", (job["id"],))]
        assert requeue_stale(rt, now=later + timedelta(seconds=1)) == []  # done now: nothing to resend
    assert load_export(rt.db, job["id"])["status"] == "done"
    platform.stop()


def test_the_cli_writes_the_report_with_a_progress_bar(sqlite_settings, tmp_path, monkeypatch):
    from services.invoicing.cli import cli

    platform = platform_for(sqlite_settings)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, *(settled("u_1", "fm_a", 10_000 + k, on=NOV) for k in range(30)))
    platform.stop()
    out = tmp_path / "report.xlsx"
    env = {
        "ENV": "test",
        "DATA_DIR": str(sqlite_settings.data_dir),
        "PII_KEY": sqlite_settings.pii_key,
        "JWT_SECRET": sqlite_settings.jwt_secret,
        "DATABASE_URL": sqlite_settings.database_url,
    }
    result = CliRunner().invoke(
        cli,
        ["export", "--period", "2026-11", "--format", "xlsx", "--firm", "fm_a", "--out", str(out)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "30 invoices" in result.output
    sheet = list(load_workbook(out, read_only=True)["明细"].iter_rows(values_only=True))
    assert len([r for r in sheet[3:] if r[0] == "invoice"]) == 30
    bad = CliRunner().invoke(
        cli, ["export", "--period", "2026-13", "--format", "csv", "--firm", "fm_a"], env=env
    )
    assert bad.exit_code == 2 and "period" in bad.output


def _dead_pid() -> str:
    """The pid of a process of this host that has exited (and been reaped)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _finished(rt, export_id: str) -> dict:  # noqa: ANN001
    from services.kernel.outbox import wait_until

    assert wait_until(lambda: load_export(rt.db, export_id)["status"] in ("done", "failed"), 60, 0.02)
    return load_export(rt.db, export_id)


def test_thread_exports_left_by_a_process_that_is_gone_are_run_again_when_the_service_starts(sqlite_settings):
    """A thread export has no message anywhere: only its row. The process that took it died before the job started
    (`queued`) or in the middle (`running`); the next process of the service to start runs both again, to the
    end; a job of a live process is left alone (tests/fault/test_export_thread_kill.py kills a real one)."""
    import os
    import socket

    from services.invoicing.export_jobs import set_export
    from services.invoicing.service import setup_and_recover

    platform = platform_for(sqlite_settings)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, *(settled("u_1", "fm_a", 10_000 + k, on=NOV) for k in range(3)))
    rt = platform["invoicing"]
    host = socket.gethostname()

    def job() -> str:
        return create_export(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), "u_acc", "thread")["id"]

    before_start, mid_way, alive = job(), job(), job()
    assert (
        load_export(rt.db, before_start)["worker"] == f"{host}:{os.getpid()}"
    )  # whose it is, from the start
    set_export(rt.db, before_start, worker=f"{host}:{_dead_pid()}")
    set_export(rt.db, mid_way, status="running", rows_done=1, worker=f"{host}:{_dead_pid()}")
    set_export(rt.db, alive, status="running", worker=f"{host}:{os.getppid()}")  # pytest's parent: alive

    setup_and_recover(rt)
    for export_id in (before_start, mid_way):
        done = _finished(rt, export_id)
        assert (done["status"], done["rows_done"], done["worker"]) == ("done", 3, f"{host}:{os.getpid()}")
        rows = read_csv(sqlite_settings.data_dir / "exports" / "invoicing" / f"{export_id}.csv")
        assert len([r for r in rows if r["row_type"] == "invoice"]) == 3
    assert load_export(rt.db, alive)["status"] == "running"
    platform.stop()


def test_lost_thread_exports_are_run_again_by_the_timer(sqlite_settings):
    """What start-up cannot see: a job of another host's process (its pid means nothing here) still `queued` past
    the queued deadline or `running` with its heartbeat stalled, and a job of this very process whose thread ended
    without running it (its claim failed). The beat task that resends Celery jobs runs these again here; a job
    within its deadlines is left alone."""
    from datetime import UTC, datetime

    from services.invoicing.export_jobs import set_export

    platform = platform_for(sqlite_settings, export_queued_deadline_s=60, export_stalled_s=300)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, settled("u_1", "fm_a", 10_000, on=NOV))
    rt = platform["invoicing"]

    def job() -> str:
        return create_export(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), "u_acc", "thread")["id"]

    queued_there, stalled_there, ours = job(), job(), job()  # ours: created here, its thread never started
    t0 = datetime.now(UTC)
    set_export(rt.db, queued_there, worker="other-host:4242", created_at=t0)
    set_export(
        rt.db, stalled_there, worker="other-host:4242", status="running", started_at=t0, heartbeat_at=t0
    )
    set_export(rt.db, ours, created_at=t0)

    # within their deadlines: only our own, whose thread is not alive, is run again
    assert requeue_stale(rt, now=t0 + timedelta(seconds=59)) == [ours]
    assert _finished(rt, ours)["status"] == "done"
    assert tasks.requeue_stale_exports(rt) == []
    assert requeue_stale(rt, now=t0 + timedelta(seconds=61)) == [queued_there]
    assert requeue_stale(rt, now=t0 + timedelta(seconds=299)) == []
    assert requeue_stale(rt, now=t0 + timedelta(seconds=301)) == [stalled_there]
    for export_id in (queued_there, stalled_there):
        done = _finished(rt, export_id)
        assert (done["status"], done["rows_done"]) == ("done", 1)
    assert requeue_stale(rt, now=t0 + timedelta(seconds=900)) == []  # done: nothing left
    platform.stop()


def test_a_running_job_whose_heartbeat_stopped_is_sent_again_and_a_live_one_is_left_alone(sqlite_settings):
    """The embedded broker deletes a message when a worker fetches it: a worker dying mid-export leaves the job
    `running` with nothing to redeliver. Its heartbeat stops, and beat sends it again; a second copy of the
    message while a run is alive does nothing (tests/fault/test_celery_kill.py kills a real worker)."""
    from services.invoicing.export_jobs import run_export, set_export
    from services.kernel import tasks as kernel_tasks

    platform = platform_for(sqlite_settings, export_runner="celery", export_stalled_s=300)
    publish(platform, *issuer_events("fm_a"), *seller_events(sqlite_settings, "u_1"))
    publish(platform, settled("u_1", "fm_a", 10_000, on=NOV))
    rt = platform["invoicing"]
    job = create_export(rt.db, ReportSpec("fm_a", "detail", "2026-11", "csv"), "u_acc", "celery")
    beat = load_export(rt.db, job["id"])["created_at"]
    set_export(rt.db, job["id"], status="running", started_at=beat, heartbeat_at=beat)
    with kernel_tasks.run_inline(lambda name: platform[name]) as calls:
        assert run_export(rt, job["id"])["status"] == "running"  # alive elsewhere: left alone
        assert requeue_stale(rt, now=beat + timedelta(seconds=299)) == []
        assert calls == []
        assert requeue_stale(rt, now=beat + timedelta(seconds=301)) == [job["id"]]
        assert calls == [("invoicing.export_tax_report", (job["id"],))]
    done = load_export(rt.db, job["id"])
    assert (done["status"], done["rows_done"]) == ("done", 1)
    platform.stop()
