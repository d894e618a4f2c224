"""The monthly report for regulators (再生资源回收统计月报): one row per region and category, a total row per
region, as CSV (UTF-8 with BOM, so Excel opens the Chinese headers) or XLSX (a second sheet lists the emission
factors and their sources).

Rows are grouped at the level asked (`by`: province, city or county) under the region asked. Distinct counts are
counted over the month and the grouped region (never summed from days or districts).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from services.kernel.errors import ValidationFailed
from services.kernel.money import fen_to_yuan_str
from services.kernel.regions import is_known, region
from services.kernel.taxonomy import categories

from .domain.factors import FactorTable
from .domain.flows import kg_str, region_prefix, share_str, t_str
from .store import flow_days, flow_members

Level = Literal["province", "city", "county"]
DIGITS = {"province": 2, "city": 4, "county": 6}
TOTAL = "合计"

COLUMNS = [
    ("region_code", "地区代码"),
    ("region_name", "地区"),
    ("category", "品类代码"),
    ("category_name", "品类"),
    ("collected_t", "回收量(吨)"),
    ("estimated_t", "其中按件折算(吨)"),
    ("pieces", "件数"),
    ("value_yuan", "回收金额(元)"),
    ("pickups", "回收单数"),
    ("residents", "服务居民数"),
    ("collectors", "活跃回收员数"),
    ("low_value_t", "低值可回收物(吨)"),
    ("low_value_share", "低值可回收物占比"),
    ("traded_t", "外售量(吨)"),
    ("traded_value_yuan", "外售金额(元)"),
    ("co2e_t", "减碳量(吨CO2e)"),
    ("factor_status", "因子状态"),
]
SUMS = (
    "collected_g",
    "estimated_g",
    "pieces_milli",
    "value_fen",
    "low_value_g",
    "co2e_g",
    "traded_g",
    "traded_value_fen",
)


@dataclass(frozen=True)
class ReportSpec:
    period: str  # YYYY-MM
    region: str
    by: Level
    format: Literal["csv", "xlsx"]

    @property
    def month(self) -> date:
        try:
            y, m = self.period.split("-")
            return date(int(y), int(m), 1)
        except ValueError:
            raise ValidationFailed.field("period", "a month as YYYY-MM, e.g. 2026-11") from None

    @property
    def file_name(self) -> str:
        return f"stats-{self.period}-{self.region}-{self.by}.{self.format}"

    def check(self) -> None:
        _ = self.month
        if len(self.period) != 7:
            raise ValidationFailed.field("period", "a month as YYYY-MM, e.g. 2026-11")
        if self.region != "000000" and DIGITS[self.by] < len(region_prefix(self.region)):
            raise ValidationFailed.field("by", f"{self.by} is wider than the region {self.region}")


def _name(code: str) -> str:
    return region(code).name if is_known(code) else ""


def report_rows(s: Session, spec: ReportSpec, factors: FactorTable) -> list[dict[str, Any]]:
    """The report's rows in order: for each region, its categories, then its total row."""
    month, n = spec.month, DIGITS[spec.by]
    prefix = region_prefix(spec.region)
    group = func.substr(flow_days.c.region_code, 1, n).label("g")
    conds = [flow_days.c.month == month]
    if prefix:
        conds.append(flow_days.c.region_code.startswith(prefix))
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for r in s.execute(
        select(group, flow_days.c.category, *(func.sum(getattr(flow_days.c, c)).label(c) for c in SUMS))
        .where(and_(*conds))
        .group_by(group, flow_days.c.category)
    ).mappings():
        sums[(r["g"], r["category"])] = {c: int(r[c] or 0) for c in SUMS}
    m = flow_members.c
    mgroup = func.substr(m.region_code, 1, n).label("g")
    mconds = [m.month == month]
    if prefix:
        mconds.append(m.region_code.startswith(prefix))
    distinct = func.count(func.distinct(m.member_id))
    members: dict[tuple[str, str], dict[str, int]] = {}
    for g, cat, kind, cnt in s.execute(
        select(mgroup, m.category, m.kind, distinct).where(and_(*mconds)).group_by(mgroup, m.category, m.kind)
    ):
        members.setdefault((g, cat), {})[kind] = cnt
    for g, kind, cnt in s.execute(
        select(mgroup, m.kind, distinct).where(and_(*mconds)).group_by(mgroup, m.kind)
    ):
        members.setdefault((g, TOTAL), {})[kind] = cnt
    cats = categories()
    rows: list[dict[str, Any]] = []
    for g in sorted({g for g, _ in sums}):
        code = g.ljust(6, "0")
        group_rows = [(cat, sums[(g, cat)]) for gg, cat in sorted(sums) if gg == g]
        total = {c: sum(v[c] for _, v in group_rows) for c in SUMS}
        for cat, v in [*group_rows, (TOTAL, total)]:
            f = factors.factor(cat)
            rows.append(
                _row(
                    code,
                    cat,
                    cats[cat].name if cat in cats else ("" if cat != TOTAL else TOTAL),
                    v,
                    members.get((g, cat), {}),
                    f.status if f else "",
                )
            )
    return rows


def _row(
    code: str, cat: str, cat_name: str, v: dict[str, int], mem: dict[str, int], status: str
) -> dict[str, Any]:
    return {
        "region_code": code,
        "region_name": _name(code),
        "category": cat,
        "category_name": cat_name,
        "collected_t": t_str(v["collected_g"]),
        "estimated_t": t_str(v["estimated_g"]),
        "pieces": kg_str(v["pieces_milli"]),
        "value_yuan": fen_to_yuan_str(v["value_fen"]),
        "pickups": mem.get("pickup", 0),
        "residents": mem.get("resident", 0),
        "collectors": mem.get("collector", 0),
        "low_value_t": t_str(v["low_value_g"]),
        "low_value_share": share_str(v["low_value_g"], v["collected_g"]) or "",
        "traded_t": t_str(v["traded_g"]),
        "traded_value_yuan": fen_to_yuan_str(v["traded_value_fen"]),
        "co2e_t": t_str(v["co2e_g"]),
        "factor_status": status,
    }


def _title(spec: ReportSpec) -> str:
    end = (spec.month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    where = "全国" if spec.region == "000000" else f"{_name(spec.region)}({spec.region})"
    return f"再生资源回收统计月报 {where} {spec.month.isoformat()} 至 {end.isoformat()}"


def render(rows: list[dict[str, Any]], spec: ReportSpec, factors: FactorTable) -> bytes:
    if spec.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow([label for _, label in COLUMNS])
        for r in rows:
            w.writerow([r[k] for k, _ in COLUMNS])
        return ("\ufeff" + buf.getvalue()).encode("utf-8")
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("月报")
    ws.append([_title(spec)])
    ws.append([label for _, label in COLUMNS])
    numeric = {
        "collected_t",
        "estimated_t",
        "pieces",
        "value_yuan",
        "low_value_t",
        "low_value_share",
        "traded_t",
        "traded_value_yuan",
        "co2e_t",
    }
    from decimal import Decimal

    for r in rows:
        ws.append([Decimal(r[k]) if k in numeric and r[k] != "" else r[k] for k, _ in COLUMNS])
    fs = wb.create_sheet("排放因子")
    fs.append(["品类代码", "因子(吨CO2e/吨)", "状态", "来源", "依据", "已核对", "单件质量(千克)"])
    for code in sorted(factors.factors):
        f = factors.factors[code]
        mass = factors.piece_mass_kg.get(code)
        fs.append(
            [
                code,
                Decimal(f.t_co2e_per_t),
                f.status,
                f"{f.source.title} ({f.source.publisher}, {f.source.year})",
                f.basis,
                "是" if f.checked else "否",
                Decimal(mass) if mass is not None else None,
            ]
        )
    fs.append([f"因子表版本 {factors.version}"])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
