"""Tax reports of an issuing firm, streamed to CSV or XLSX with constant memory.

Kinds:
- `detail`  代办税费明细报告表 (period YYYY-MM): per seller, per invoice — sales, VAT, each surcharge, income tax,
            withheld; the month's VAT status after settlement, exempt vs taxable sales, red-letter offsets and the
            month-settlement adjustments; a `seller_total` row after each seller. The XLSX also has the totals sheet.
- `summary` 代办税费报告表 (period YYYY-MM): the firm's totals for the month, one item per row.
- `annual`  annual seller statement (period YYYY): per seller, this firm's invoices of the year — amounts, taxes
            withheld and prepaid, settlement adjustments — for the seller's 汇算清缴 by 31 March.

How it streams: one read transaction (a consistent snapshot: SQLite deferred BEGIN, PostgreSQL REPEATABLE READ)
with two server-side cursors (`stream_results` + `yield_per`) read in step, both ordered by seller:
the firm's invoices, and each seller's month totals across ALL issuers (the VAT status of a seller-month is
decided across the platform, so the settlement needs them). Memory holds one seller's months, never the report.
CSV goes through `csv.writer` (UTF-8 with BOM, so Excel shows Chinese); XLSX through openpyxl's write-only mode.

The month settlement here is `tax.month_settlement` without rebuilding each invoice: every issued invoice
stores its figures under the other VAT status (`alt_*`, computed by the domain when issued), so settling an
invoice is picking one of its two stored versions (`tests/invoicing/test_exports.py` checks it against the domain).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import String, cast, func, select
from sqlalchemy.engine import Connection

from services.kernel.db import Database
from services.kernel.errors import ValidationFailed

from .ledger import month_bounds, parse_period, settle_status
from .store import invoices, issuers

KINDS = ("detail", "summary", "annual")
FORMATS = ("csv", "xlsx")
TITLES = {
    "detail": "代办税费明细报告表",
    "summary": "代办税费报告表",
    "annual": "出售者年度反向开票及代扣税费明细",
}

# (key, 中文) of the detail report's columns
DETAIL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("row_type", "行类型"),
    ("seller_id", "出售方"),
    ("seller_name", "出售方姓名"),
    ("seller_id_number", "证件号码(居民身份证)"),
    ("invoice_number", "发票号码"),
    ("kind", "蓝字/红字"),
    ("red_letter_of_number", "对应蓝字发票号码"),
    ("invoice_date", "开票日期"),
    ("total_fen", "价税合计(分)"),
    ("sales_excl_fen", "销售额(不含税,分)"),
    ("vat_rate", "征收率"),
    ("vat_fen", "增值税(分)"),
    ("city_maintenance_fen", "城市维护建设税(分)"),
    ("education_fen", "教育费附加(分)"),
    ("local_education_fen", "地方教育附加(分)"),
    ("surcharges_fen", "附加税费合计(分)"),
    ("iit_fen", "个人所得税(经营所得,分)"),
    ("withheld_fen", "代扣代缴合计(分)"),
    ("month_vat_status", "月度增值税(结算后)"),
    ("exempt_sales_fen", "免税销售额(分)"),
    ("taxable_sales_excl_fen", "应税销售额(分)"),
    ("red_offset_fen", "红字冲减价税合计(分)"),
    ("vat_adjustment_fen", "月度结算增值税调整(分)"),
    ("surcharges_adjustment_fen", "月度结算附加税费调整(分)"),
    ("vat_due_fen", "应纳增值税(分)"),
    ("city_maintenance_due_fen", "应纳城市维护建设税(分)"),
    ("education_due_fen", "应纳教育费附加(分)"),
    ("local_education_due_fen", "应纳地方教育附加(分)"),
    ("surcharges_due_fen", "应纳附加税费合计(分)"),
    ("tax_due_fen", "应纳税费合计(分)"),
)
DETAIL_KEYS = tuple(k for k, _ in DETAIL_COLUMNS)
_SUMMED = tuple(i for i, k in enumerate(DETAIL_KEYS) if k.endswith("_fen"))

SUMMARY_ITEMS: tuple[tuple[str, str], ...] = (
    ("sellers", "出售者人数"),
    ("invoices_blue", "蓝字发票份数"),
    ("invoices_red", "红字发票份数"),
    ("total_fen", "价税合计(分)"),
    ("red_offset_fen", "其中: 红字冲减(分)"),
    ("sales_excl_fen", "销售额(开具时,分)"),
    ("exempt_sales_fen", "免税销售额(结算后,分)"),
    ("taxable_sales_excl_fen", "应税销售额(结算后,分)"),
    ("vat_fen", "增值税(开具时,分)"),
    ("vat_adjustment_fen", "增值税月度结算调整(分)"),
    ("vat_due_fen", "应纳增值税(分)"),
    ("city_maintenance_due_fen", "应纳城市维护建设税(分)"),
    ("education_due_fen", "应纳教育费附加(分)"),
    ("local_education_due_fen", "应纳地方教育附加(分)"),
    ("surcharges_adjustment_fen", "附加税费月度结算调整(分)"),
    ("surcharges_due_fen", "应纳附加税费合计(分)"),
    ("iit_fen", "个人所得税预缴(分)"),
    ("withheld_fen", "开具时代扣代缴合计(分)"),
    ("tax_due_fen", "应纳税费合计(分)"),
)

ANNUAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seller_id", "出售方"),
    ("seller_name", "出售方姓名"),
    ("seller_id_number", "证件号码(居民身份证)"),
    ("year", "年度"),
    ("invoices_blue", "蓝字发票份数"),
    ("invoices_red", "红字发票份数"),
    ("total_fen", "价税合计(分)"),
    ("sales_excl_fen", "销售额(不含税,分)"),
    ("vat_due_fen", "应纳增值税(结算后,分)"),
    ("surcharges_due_fen", "应纳附加税费(结算后,分)"),
    ("iit_fen", "个人所得税预缴(分)"),
    ("withheld_fen", "开具时代扣代缴合计(分)"),
    ("tax_due_fen", "应纳税费合计(分)"),
)


@dataclass(frozen=True)
class ReportSpec:
    firm_id: str
    kind: str
    period: str
    fmt: str
    pii: str = "masked"  # masked | full (decrypts names and ID numbers: the filing needs them)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationFailed.field("kind", f"one of {', '.join(KINDS)}")
        if self.fmt not in FORMATS:
            raise ValidationFailed.field("format", f"one of {', '.join(FORMATS)}")
        if self.pii not in ("masked", "full"):
            raise ValidationFailed.field("pii", "masked or full")
        if self.kind == "annual":
            if not (len(self.period) in (4, 7) and self.period[:4].isdigit()):
                raise ValidationFailed.field("period", "the annual statement takes a year like 2026")
        else:
            parse_period(self.period)

    @property
    def bounds(self) -> tuple[date, date]:
        if self.kind == "annual":
            y = int(self.period[:4])
            return date(y, 1, 1), date(y, 12, 31)
        return month_bounds(*parse_period(self.period))

    @property
    def file_name(self) -> str:
        period = self.period[:4] if self.kind == "annual" else self.period
        return f"{self.kind}-{self.firm_id}-{period}.{self.fmt}"


ProgressFn = Callable[[int, int], None]  # (rows done, rows total)


# ---------------------------------------------------------------------------------------------------- queries


def _ym(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    return func.strftime("%Y-%m", column)


def _by_seller(conn: Connection, column: Any) -> Any:
    """Order by seller byte-wise on both databases (the merge of the two streams compares ids in Python)."""
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def invoice_stream_query(conn: Connection, spec: ReportSpec) -> Any:
    """The firm's issued invoices of the period, ordered by seller (the report's order). Dates as 'YYYY-MM-DD'."""
    i = invoices.alias("i")
    b = invoices.alias("b")
    d_from, d_to = spec.bounds
    cols = [
        i.c.seller_id,
        i.c.seller_name_masked,
        i.c.seller_id_number_masked,
        i.c.number,
        i.c.kind,
        b.c.number,
        cast(i.c.invoice_date, String),
        i.c.total_fen,
        i.c.sales_excl_fen,
        i.c.exempt,
        i.c.vat_rate,
        i.c.vat_fen,
        i.c.city_maintenance_fen,
        i.c.education_fen,
        i.c.local_education_fen,
        i.c.surcharges_fen,
        i.c.iit_fen,
        i.c.withheld_fen,
        i.c.alt_sales_excl_fen,
        i.c.alt_vat_fen,
        i.c.alt_city_maintenance_fen,
        i.c.alt_education_fen,
        i.c.alt_local_education_fen,
        i.c.alt_surcharges_fen,
        cast(i.c.cap_date, String),
    ]
    if spec.pii == "full":
        cols += [i.c.seller_name_enc, i.c.seller_id_number_enc]
    return (
        select(*cols)
        .select_from(i.outerjoin(b, b.c.id == i.c.red_letter_of))
        .where(
            i.c.issuer_firm_id == spec.firm_id, i.c.status == "issued", i.c.invoice_date.between(d_from, d_to)
        )
        .order_by(_by_seller(conn, i.c.seller_id), i.c.invoice_date, i.c.number)
    )


def month_totals_query(conn: Connection, spec: ReportSpec) -> Any:
    """Per (seller, month), across all issuers: Σ total (the exemption basis) and the thresholds recorded —
    for the sellers this firm invoiced in the period; ordered like the invoice stream."""
    c = invoices.c
    d_from, d_to = spec.bounds
    ym = _ym(conn, c.invoice_date)
    firm_sellers = (
        select(c.seller_id)
        .where(c.issuer_firm_id == spec.firm_id, c.status == "issued", c.invoice_date.between(d_from, d_to))
        .distinct()
    )
    return (
        select(
            c.seller_id,
            ym,
            func.sum(c.total_fen),
            func.min(c.vat_threshold_fen),
            func.max(c.vat_threshold_fen),
            func.count(),
            func.count(c.vat_threshold_fen),
        )
        .where(c.status == "issued", c.invoice_date.between(d_from, d_to), c.seller_id.in_(firm_sellers))
        .group_by(c.seller_id, ym)
        .order_by(_by_seller(conn, c.seller_id), ym)
    )


def count_rows(conn: Connection, spec: ReportSpec) -> int:
    d_from, d_to = spec.bounds
    c = invoices.c
    return int(
        conn.execute(
            select(func.count()).where(
                c.issuer_firm_id == spec.firm_id, c.status == "issued", c.invoice_date.between(d_from, d_to)
            )
        ).scalar_one()
    )


@contextmanager
def snapshot(db: Database) -> Iterator[Connection]:
    """A read-only connection whose transaction sees one consistent snapshot for the whole export."""
    engine = db.engine.execution_options(readonly=True)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _latest_threshold(conn: Connection, seller_id: str, ym: str) -> int | None:
    c = invoices.c
    y, m = int(ym[:4]), int(ym[5:7])
    d_from, d_to = month_bounds(y, m)
    return conn.execute(
        select(c.vat_threshold_fen)
        .where(c.seller_id == seller_id, c.status == "issued", c.invoice_date.between(d_from, d_to))
        .order_by(c.invoice_date.desc(), c.issued_at.desc())
        .limit(1)
    ).scalar()


class _MonthStatus:
    """Walks the (seller, month) totals stream in step with the invoice stream: `taxable(seller)` returns
    {YYYY-MM: month is taxable} for that seller (sellers arrive in the same order in both streams)."""

    def __init__(self, conn: Connection, rows: Iterator[Any]):
        self.conn = conn
        self.rows = rows
        self.pending: Any = next(rows, None)

    def taxable(self, seller_id: str) -> dict[str, bool]:
        out: dict[str, bool] = {}
        while self.pending is not None and self.pending[0] <= seller_id:
            sid, ym, basis, lo, hi, n, n_thr = self.pending
            if sid == seller_id:
                if n_thr == 0:
                    threshold = None
                elif n_thr == n and lo == hi:
                    threshold = int(lo)
                else:
                    threshold = _latest_threshold(self.conn, sid, ym)
                out[ym] = settle_status(int(basis), threshold)
            self.pending = next(self.rows, None)
        return out


def _decryptor(spec: ReportSpec, settings: Any) -> Callable[[str | None], str] | None:
    if spec.pii != "full":
        return None
    from services.kernel.pii import decrypt

    return lambda token: decrypt(settings, token) if token else ""


# ---------------------------------------------------------------------------------------------------- rows


def detail_rows(
    conn: Connection, spec: ReportSpec, *, settings: Any = None, fetch_rows: int = 5000
) -> Iterator[tuple]:
    """The detail report's rows (DETAIL_KEYS order): each invoice, then the seller's total row. The last
    item yielded is the firm's totals (row_type `firm_total`)."""
    reveal = _decryptor(spec, settings)
    stream = conn.execution_options(stream_results=True, yield_per=fetch_rows)
    months = _MonthStatus(conn, iter(stream.execute(month_totals_query(conn, spec))))
    rows = stream.execute(invoice_stream_query(conn, spec))
    firm = [0] * len(DETAIL_KEYS)
    seller: list[int] | None = None
    current = None
    name = idno = ""
    taxable: dict[str, bool] = {}
    counts = {"sellers": 0, "invoices_blue": 0, "invoices_red": 0}
    for r in rows:
        sid = r[0]
        if sid != current:
            if seller is not None:
                yield _total_row("seller_total", current, name, idno, seller)
                for i in _SUMMED:
                    firm[i] += seller[i]
            current = sid
            taxable = months.taxable(sid)
            seller = [0] * len(DETAIL_KEYS)
            counts["sellers"] += 1
            if reveal is not None:
                name, idno = reveal(r[25]), reveal(r[26])
            else:
                name, idno = r[1] or "", r[2] or ""
        kind, day = r[4], r[6]
        exempt = bool(r[9])
        if kind == "red":
            counts["invoices_red"] += 1
            settles = r[24][:7] == day[:7]  # a red letter of an earlier month's invoice keeps its taxes
            red_offset = r[7]
        else:
            counts["invoices_blue"] += 1
            settles = True
            red_offset = 0
        if settles and exempt == taxable.get(day[:7], False):  # issued under the other status: settle it
            s_excl, s_vat, s_cm, s_edu, s_loc, s_sur = r[18], r[19], r[20], r[21], r[22], r[23]
            s_exempt = not exempt
        else:
            s_excl, s_vat, s_cm, s_edu, s_loc, s_sur = r[8], r[11], r[12], r[13], r[14], r[15]
            s_exempt = exempt
        iit = r[16]
        row = (
            "invoice",
            sid,
            name,
            idno,
            r[3],
            kind,
            r[5] or "",
            day,
            r[7],
            r[8],
            r[10],
            r[11],
            r[12],
            r[13],
            r[14],
            r[15],
            iit,
            r[17],
            "免税" if s_exempt else "应税",
            s_excl if s_exempt else 0,
            0 if s_exempt else s_excl,
            red_offset,
            s_vat - r[11],
            s_sur - r[15],
            s_vat,
            s_cm,
            s_edu,
            s_loc,
            s_sur,
            s_vat + s_sur + iit,
        )
        for i in _SUMMED:
            seller[i] += row[i]
        yield row
    if seller is not None:
        yield _total_row("seller_total", current, name, idno, seller)
        for i in _SUMMED:
            firm[i] += seller[i]
    yield _total_row("firm_total", "", "", "", firm) + (counts,)


def _total_row(row_type: str, seller_id: Any, name: str, idno: str, sums: list[int]) -> tuple:
    row: list[Any] = [""] * len(DETAIL_KEYS)
    for i in _SUMMED:
        row[i] = sums[i]
    row[0], row[1], row[2], row[3] = row_type, seller_id or "", name, idno
    return tuple(row)


def summary_items(firm_total: tuple) -> list[tuple[str, str, int]]:
    counts = firm_total[-1]
    by_key = dict(zip(DETAIL_KEYS, firm_total[: len(DETAIL_KEYS)]))
    return [(key, label, counts[key] if key in counts else by_key[key]) for key, label in SUMMARY_ITEMS]


def annual_rows(
    conn: Connection, spec: ReportSpec, *, settings: Any = None, fetch_rows: int = 5000
) -> Iterator[tuple]:
    """One row per seller: the year's invoices from this firm, settled month by month."""
    year = spec.period[:4]
    seller: list[Any] | None = None
    for row in detail_rows(conn, spec, settings=settings, fetch_rows=fetch_rows):
        if row[0] == "invoice":
            if seller is None:
                seller = [row[1], row[2], row[3], year, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            seller[4 if row[5] == "blue" else 5] += 1
        elif row[0] == "seller_total" and seller is not None:
            k = dict(zip(DETAIL_KEYS, row))
            seller[6:] = [
                k["total_fen"],
                k["sales_excl_fen"],
                k["vat_due_fen"],
                k["surcharges_due_fen"],
                k["iit_fen"],
                k["withheld_fen"],
                k["tax_due_fen"],
            ]
            yield tuple(seller)
            seller = None


# ---------------------------------------------------------------------------------------------------- writers


def _firm_name(conn: Connection, firm_id: str) -> str:
    return conn.execute(select(issuers.c.name).where(issuers.c.firm_id == firm_id)).scalar() or firm_id


def write_report(
    db: Database,
    spec: ReportSpec,
    out_path: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    progress_every: int = 20000,
    fetch_rows: int = 5000,
    settings: Any = None,
) -> int:
    """Write the report to `out_path` (through a temporary file, renamed at the end). Returns the number of
    invoices in it. `progress(done, total)` is called every `progress_every` invoices and at the end."""
    out = Path(out_path)
    tmp = out.with_name(out.name + ".part")
    with snapshot(db) as conn:
        total = count_rows(conn, spec)
        title = f"{TITLES[spec.kind]} {spec.period} {_firm_name(conn, spec.firm_id)}"
        done = 0

        def counted(rows: Iterator[tuple]) -> Iterator[tuple]:
            nonlocal done
            every = max(1, progress_every)
            for row in rows:
                if row[0] == "invoice":
                    done += 1
                    if progress is not None and done % every == 0:
                        progress(done, total)
                yield row

        if spec.kind == "annual":
            header, body = (
                ANNUAL_COLUMNS,
                _annual_counted(conn, spec, settings, fetch_rows, progress, total, progress_every),
            )
            _write(spec.fmt, tmp, title, header, body, None)
            done = total
        else:
            rows = counted(detail_rows(conn, spec, settings=settings, fetch_rows=fetch_rows))
            if spec.kind == "detail":
                _write(spec.fmt, tmp, title, DETAIL_COLUMNS, rows, f"{TITLES['summary']} {spec.period}")
            else:
                _write(
                    spec.fmt,
                    tmp,
                    title,
                    (("item", "项目"), ("name", "名称"), ("value", "金额/数量")),
                    _summary_only(rows),
                    None,
                )
    os.replace(tmp, out)
    if progress is not None:
        progress(done, total)
    return done


def _annual_counted(
    conn: Connection,
    spec: ReportSpec,
    settings: Any,
    fetch_rows: int,
    progress: ProgressFn | None,
    total: int,
    every: int,
) -> Iterator[tuple]:
    done = 0
    for row in annual_rows(conn, spec, settings=settings, fetch_rows=fetch_rows):
        done += row[4] + row[5]
        if progress is not None and every and done // every != (done - row[4] - row[5]) // every:
            progress(done, total)
        yield row


def _summary_only(rows: Iterator[tuple]) -> Iterator[tuple]:
    last = None
    for row in rows:
        last = row
    assert last is not None and last[0] == "firm_total"
    yield from summary_items(last)


class _Split:
    """Pass the detail rows through, keeping the firm total (the last row) aside for the totals sheet."""

    def __init__(self, rows: Iterator[tuple]):
        self.rows = rows
        self.firm_total: tuple | None = None

    def __iter__(self) -> Iterator[tuple]:
        for row in self.rows:
            if row[0] == "firm_total":
                self.firm_total = row
                yield row[: len(DETAIL_KEYS)]
            else:
                yield row


def _write(
    fmt: str,
    path: Path,
    title: str,
    header: tuple[tuple[str, str], ...],
    rows: Iterator[tuple],
    totals_title: str | None,
) -> None:
    split = _Split(rows) if totals_title else None
    body = iter(split) if split is not None else rows
    keys = [k for k, _ in header]
    if fmt == "csv":
        with open(path, "w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            w.writerows(body)
        return
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("明细" if totals_title else "报表")
    ws.append([title])
    ws.append([label for _, label in header])
    ws.append(keys)
    for row in body:
        ws.append(row)
    if split is not None and split.firm_total is not None:
        ts = wb.create_sheet("汇总")
        ts.append([totals_title])
        ts.append(["项目", "名称", "金额/数量"])
        ts.append(["item", "name", "value"])
        for key, label, value in summary_items(split.firm_total):
            ts.append([key, label, value])
    wb.save(path)
