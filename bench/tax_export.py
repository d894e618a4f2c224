"""Tax export throughput and memory: a month of 1,000,000 reverse invoices to CSV and XLSX.

Measured in one run, on this machine, each step in a fresh subprocess (so its peak RSS is its own):
  1. the ceiling: a plain `csv.writer` dump of the same rows (the export's own SELECT, same order, same snapshot
     and cursor settings) from the same database;
  2. the 代办税费明细报告表 export (`services.invoicing.exports.write_report`, kind=detail, CSV): month
     settlement per seller across issuers, seller totals, firm totals;
  3. and 4. the same pair for XLSX (openpyxl write-only for both), on a smaller firm of the same month
     (openpyxl is the bottleneck there; the scale is printed).
It prints rows/s, the peak RSS of each step and its growth over the step's start, and the ratio export/ceiling
(target ≥ 0.5 for CSV; peak memory < 300 MB).

    .venv/bin/python bench/tax_export.py [--rows 1000000] [--xlsx-rows 100000] [--keep DIR]

The rows are generated with bulk inserts (sqlite3 executemany) into a scratch SQLite database with the service's
schema (its migrations); amounts are consistent (sales excl. + VAT = total, the other-status figures the service
stores), sellers have ~20 invoices a month so many months cross the exemption threshold, ~3% are red letters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATIO_TARGET = 0.5
MEMORY_TARGET_MB = 300
PERIOD = "2026-11"
BIG, SMALL = "fm_big", "fm_small"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------------------- data


# One INSERT ... SELECT per firm, all in SQLite (a Python loop binding 40 parameters a row takes a minute for a
# million rows): k = 0..n-1; seller k mod S (S not a multiple of 33, ~20 invoices each); every 33rd row from the
# second round on is a full red letter of the same seller's previous invoice; an invoice is exempt while the
# seller's month-to-date total (blue − red) stays within 100,000.00 yuan, so many months cross the threshold and
# the export has settlement adjustments to make. Amounts are the service's: excl = total/1.01 half-up, VAT =
# total − excl, surcharges 3.5% / 1.5% / 1% of VAT half-up (urban, halved), income tax 0.25% of sales.
_GENERATE = """
WITH RECURSIVE seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq WHERE k + 1 < :n),
base AS (
  SELECT k, k % :sellers AS s, (k % 33 = 32 AND k >= :sellers) AS red,
         CASE WHEN k % 33 = 32 AND k >= :sellers THEN -(100000 + ((k - :sellers) * 7919) % 1100001)
              ELSE 100000 + (k * 7919) % 1100001 END AS total
  FROM seq),
mtd AS (SELECT *, SUM(total) OVER (PARTITION BY s ORDER BY k) <= 10000000 AS ex_self FROM base),
run AS (SELECT *, LAG(ex_self) OVER (PARTITION BY s ORDER BY k) AS ex_prev FROM mtd),
st AS (
  SELECT *, CASE WHEN red THEN ex_prev ELSE ex_self END AS ex,
         CASE WHEN total >= 0 THEN (200 * total + 101) / 202 ELSE -((200 * -total + 101) / 202) END AS tex
  FROM run),
amounts AS (
  SELECT *, total - tex AS tv,
         CASE WHEN total - tex >= 0 THEN ((total - tex) * 35 + 500) / 1000
              ELSE -(((tex - total) * 35 + 500) / 1000) END AS c1,
         CASE WHEN total - tex >= 0 THEN ((total - tex) * 15 + 500) / 1000
              ELSE -(((tex - total) * 15 + 500) / 1000) END AS c2,
         CASE WHEN total - tex >= 0 THEN ((total - tex) * 10 + 500) / 1000
              ELSE -(((tex - total) * 10 + 500) / 1000) END AS c3
  FROM st),
inv AS (
  SELECT *, CASE WHEN ex THEN total ELSE tex END AS excl,
         CASE WHEN ex THEN 0 ELSE tv END AS vat,
         CASE WHEN ex THEN 0 ELSE c1 END AS cm, CASE WHEN ex THEN 0 ELSE c2 END AS ed,
         CASE WHEN ex THEN 0 ELSE c3 END AS le,
         date('2026-11-01', '+' || (k * 28 / :n) || ' days') AS day
  FROM amounts)
INSERT INTO invoices (id, kind, status, pickup_id, issuer_firm_id, seller_id, number, issuer_code, year, seq,
  invoice_date, cap_date, issued_at, created_at, retried, red_letter_of, total_fen, sales_excl_fen, exempt,
  vat_rate, vat_fen, city_maintenance_fen, education_fen, local_education_fen, surcharges_fen, iit_fen, withholding,
  withheld_fen, three_flows, location_class, vat_threshold_fen, alt_sales_excl_fen, alt_vat_fen,
  alt_city_maintenance_fen, alt_education_fen, alt_local_education_fen, alt_surcharges_fen, seller_name_masked,
  seller_id_number_masked)
SELECT printf('iv_%s_%08d', :firm, k), CASE WHEN red THEN 'red' ELSE 'blue' END, 'issued',
  printf('pk_%s_%08d', :firm, CASE WHEN red THEN k - :sellers ELSE k END), :firm, printf('u_%s_%07d', :firm, s),
  printf('26%08d%010d', :code, k + 1), :code, 2026, k + 1, day, day, :now, :now, 0,
  CASE WHEN red THEN printf('iv_%s_%08d', :firm, k - :sellers) END,
  total, excl, ex, CASE WHEN ex THEN '免税' ELSE '0.01' END, vat, cm, ed, le, cm + ed + le,
  CASE WHEN excl >= 0 THEN (excl * 25 + 5000) / 10000 ELSE -((-excl * 25 + 5000) / 10000) END, 1,
  vat + cm + ed + le + CASE WHEN excl >= 0 THEN (excl * 25 + 5000) / 10000 ELSE -((-excl * 25 + 5000) / 10000) END,
  1, 'urban', 10000000,
  CASE WHEN ex THEN tex ELSE total END, CASE WHEN ex THEN tv ELSE 0 END,
  CASE WHEN ex THEN c1 ELSE 0 END, CASE WHEN ex THEN c2 ELSE 0 END, CASE WHEN ex THEN c3 ELSE 0 END,
  CASE WHEN ex THEN c1 + c2 + c3 ELSE 0 END, '张*', '110***********002X'
FROM inv
"""


def generate(db_path: Path, rows: int, xlsx_rows: int) -> None:
    """The service's schema (its migrations), then bulk inserts; secondary indexes are built after the rows."""
    import sqlite3

    from services.kernel import migrations
    from services.kernel.db import Database

    db = Database(f"sqlite:///{db_path}")
    migrations.upgrade("invoicing", db)
    db.dispose()
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    indexes = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'invoices' "
        "AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        con.execute(f"DROP INDEX {name}")
    now = datetime(2026, 12, 1, tzinfo=UTC).isoformat(sep=" ")
    for firm, code, n in ((BIG, 1, rows), (SMALL, 2, xlsx_rows)):
        sellers = max(1, n // 20)
        sellers += 1 if sellers % 33 == 0 else 0
        con.execute(_GENERATE, {"n": n, "sellers": sellers, "firm": firm, "code": code, "now": now})
        con.execute(
            "INSERT INTO issuers (firm_id, issuer_code, name, uscc, address, city_code, verified_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (firm, code, f"{firm} 再生资源", "91110105MA01ABCD1X", "北京", "110105", now, now),
        )
    for _, sql in indexes:
        con.execute(sql)
    con.commit()
    con.execute("ANALYZE")
    con.close()


# ---------------------------------------------------------------------------------------------------- steps


def child(mode: str, db_path: str, out: str, firm: str) -> dict:
    """One measured step, run in its own process."""
    import csv

    from services.invoicing.exports import ReportSpec, invoice_stream_query, snapshot, write_report
    from services.kernel.db import Database

    db = Database(f"sqlite:///{db_path}")
    spec = ReportSpec(firm, "detail", PERIOD, "xlsx" if mode.endswith("xlsx") else "csv")
    with snapshot(db) as conn:  # warm the connection pool and the imports outside the clock
        conn.exec_driver_sql("SELECT 1")
    if spec.fmt == "xlsx":
        from openpyxl import Workbook  # noqa: F401
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    n = 0
    if mode.startswith("plain"):
        with snapshot(db) as conn:
            rows = conn.execution_options(stream_results=True, yield_per=5000).execute(
                invoice_stream_query(conn, spec)
            )
            if spec.fmt == "csv":
                with open(out, "w", encoding="utf-8-sig", newline="") as f:
                    w = csv.writer(f)
                    for row in rows:
                        w.writerow(row)
                        n += 1
            else:
                from openpyxl import Workbook

                wb = Workbook(write_only=True)
                ws = wb.create_sheet("rows")
                for row in rows:
                    ws.append(list(row))
                    n += 1
                wb.save(out)
    else:
        n = write_report(db, spec, out)
    elapsed = time.perf_counter() - t0
    return {
        "mode": mode,
        "rows": n,
        "seconds": elapsed,
        "rows_per_s": n / elapsed,
        "peak_rss_mb": _rss_mb(),
        "rss_growth_mb": _rss_mb() - rss0,
        "bytes": os.path.getsize(out),
    }


def run_child(mode: str, db_path: Path, out: Path, firm: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--db", str(db_path), "--out", str(out), "--firm", firm],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--xlsx-rows", type=int, default=30_000)
    ap.add_argument("--keep", type=Path, default=None, help="keep the database and files here")
    ap.add_argument("--child")
    ap.add_argument("--db")
    ap.add_argument("--out")
    ap.add_argument("--firm")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.out, args.firm)))
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-tax-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _measure(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> int:
    db_path = work / "invoicing.db"
    started = time.perf_counter()
    if not db_path.exists():
        t0 = time.perf_counter()
        generate(db_path, args.rows, args.xlsx_rows)
        print(
            f"generated {args.rows:,} + {args.xlsx_rows:,} invoices of {PERIOD} in {time.perf_counter() - t0:.1f}s "
            f"({db_path.stat().st_size / 1e6:.0f} MB)"
        )
    results = {}
    for mode, firm, ext in (
        ("plain_csv", BIG, "csv"),
        ("export_csv", BIG, "csv"),
        ("plain_xlsx", SMALL, "xlsx"),
        ("export_xlsx", SMALL, "xlsx"),
    ):
        results[mode] = r = run_child(mode, db_path, work / f"{mode}.{ext}", firm)
        print(
            f"  {mode:<12} {r['rows']:>9,} rows  {r['seconds']:6.1f}s  {r['rows_per_s']:>9,.0f} rows/s  "
            f"peak RSS {r['peak_rss_mb']:5.0f} MB (+{r['rss_growth_mb']:.0f} MB during the step)  "
            f"file {r['bytes'] / 1e6:.0f} MB"
        )
    ok = True
    for fmt in ("csv", "xlsx"):
        export, plain = results[f"export_{fmt}"], results[f"plain_{fmt}"]
        # the export writes a total row per seller and one for the firm: count invoices only, as the plain dump
        ratio = export["rows_per_s"] / plain["rows_per_s"]
        scale = "" if fmt == "csv" else f" (XLSX scaled to {export['rows']:,} invoices)"
        target = f"target ≥ {RATIO_TARGET}" if fmt == "csv" else "informative"
        print(
            f"{fmt.upper()}: export {export['rows_per_s']:,.0f} rows/s vs plain dump {plain['rows_per_s']:,.0f} "
            f"rows/s: ratio {ratio:.2f} ({target}){scale}"
        )
        if fmt == "csv":
            ok = ok and ratio >= RATIO_TARGET
    peak = max(r["peak_rss_mb"] for r in results.values())
    print(
        f"peak memory {peak:.0f} MB (target < {MEMORY_TARGET_MB} MB); total {time.perf_counter() - started:.0f}s"
    )
    ok = ok and peak < MEMORY_TARGET_MB
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
