"""Reading the figures: flows and carbon by period (day or month) and category, for a region, in one of three
scopes — everything (regulators, admins), one firm's own, or one resident's own pickups.

Sums come from the daily aggregates (or, for a resident, from their own pickup facts). Distinct counts —
residents served, collectors active, pickups — are counted over the period actually asked (a resident served on
two days of a month is one resident of that month), never summed from smaller periods.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from services.kernel.regions import NATIONAL, is_known, region
from services.kernel.taxonomy import categories

from .domain.factors import FactorTable
from .domain.flows import kg_str, month_of, region_prefix, share_str, t_str
from .store import flow_days, flow_members, pickup_lines, pickups, trades

Granularity = Literal["day", "month"]
SUMS = (
    "collected_g",
    "estimated_g",
    "pieces_milli",
    "value_fen",
    "low_value_g",
    "co2e_g",
    "traded_g",
    "traded_value_fen",
    "traded_co2e_g",
    "trades",
)
KINDS = ("resident", "collector", "pickup")


@dataclass(frozen=True)
class Scope:
    kind: Literal["all", "firm", "mine"]
    firm_id: str | None = None
    resident_id: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "firm_id": self.firm_id} if self.kind == "firm" else {"kind": self.kind}


@dataclass(frozen=True)
class Window:
    region: str  # 6-digit code, NATIONAL for all
    category: str | None  # a leaf ("metal.steel") or a family ("metal"); None for all
    start: date
    end: date  # inclusive
    granularity: Granularity


@dataclass
class Figures:
    sums: dict[tuple[date, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(SUMS, 0))
    )
    # distinct counts per (period, category), per period over all categories, and over the whole window
    members: dict[tuple[date, str], dict[str, int]] = field(default_factory=dict)
    members_period: dict[date, dict[str, int]] = field(default_factory=dict)
    members_window: dict[str, int] = field(default_factory=dict)
    bought_co2e_g: dict[date, int] = field(default_factory=dict)
    bought_g: dict[date, int] = field(default_factory=dict)


def periods(w: Window) -> list[date]:
    if w.granularity == "day":
        return [w.start + timedelta(days=i) for i in range((w.end - w.start).days + 1)]
    out, m = [], month_of(w.start)
    while m <= w.end:
        out.append(m)
        m = (m + timedelta(days=32)).replace(day=1)
    return out


def _category_filter(col: Any, category: str | None) -> Any:
    if category is None:
        return None
    return col == category if "." in category else col.startswith(category + ".")


def _filters(table: Any, w: Window, scope: Scope) -> list[Any]:
    conds = [table.c.day >= w.start, table.c.day <= w.end]
    prefix = region_prefix(w.region)
    if prefix:
        conds.append(table.c.region_code.startswith(prefix))
    cat = _category_filter(table.c.category, w.category)
    if cat is not None:
        conds.append(cat)
    if scope.kind == "firm":
        conds.append(table.c.firm_id == scope.firm_id)
    return conds


def _period_col(table: Any, w: Window) -> Any:
    return table.c.day if w.granularity == "day" else table.c.month


def _from_aggregates(s: Session, w: Window, scope: Scope) -> Figures:
    fig = Figures()
    period = _period_col(flow_days, w).label("period")
    rows = s.execute(
        select(period, flow_days.c.category, *(func.sum(getattr(flow_days.c, c)).label(c) for c in SUMS))
        .where(and_(*_filters(flow_days, w, scope)))
        .group_by(period, flow_days.c.category)
    )
    for r in rows.mappings():
        fig.sums[(r["period"], r["category"])] = {c: int(r[c] or 0) for c in SUMS}
    m = flow_members.c
    mperiod = _period_col(flow_members, w).label("period")
    conds = and_(*_filters(flow_members, w, scope))
    distinct = func.count(func.distinct(m.member_id)).label("n")
    for p, cat, kind, n in s.execute(
        select(mperiod, m.category, m.kind, distinct).where(conds).group_by(mperiod, m.category, m.kind)
    ):
        fig.members.setdefault((p, cat), {})[kind] = n
    for p, kind, n in s.execute(select(mperiod, m.kind, distinct).where(conds).group_by(mperiod, m.kind)):
        fig.members_period.setdefault(p, {})[kind] = n
    for kind, n in s.execute(select(m.kind, distinct).where(conds).group_by(m.kind)):
        fig.members_window[kind] = n
    if scope.kind == "firm":
        # what the firm bought (embodied CO2e of settled purchases), by the region and category of the lot
        t = trades.c
        tperiod = (t.day if w.granularity == "day" else t.month).label("period")
        conds_t = [t.status == "settled", t.buyer_firm_id == scope.firm_id, t.day >= w.start, t.day <= w.end]
        prefix = region_prefix(w.region)
        if prefix:
            conds_t.append(t.region_code.startswith(prefix))
        cat = _category_filter(t.category, w.category)
        if cat is not None:
            conds_t.append(cat)
        for p, g, co2e in s.execute(
            select(tperiod, func.sum(t.delivered_g), func.sum(t.co2e_g))
            .where(and_(*conds_t))
            .group_by(tperiod)
        ):
            fig.bought_g[p], fig.bought_co2e_g[p] = int(g or 0), int(co2e or 0)
    return fig


def _from_resident_facts(s: Session, w: Window, scope: Scope) -> Figures:
    """A resident's own pickups (few rows: aggregated here)."""
    fig = Figures()
    p, ln = pickups.c, pickup_lines.c
    conds = [p.resident_id == scope.resident_id, p.day >= w.start, p.day <= w.end]
    prefix = region_prefix(w.region)
    if prefix:
        conds.append(p.region_code.startswith(prefix))
    cat = _category_filter(ln.category, w.category)
    if cat is not None:
        conds.append(cat)
    rows = s.execute(
        select(
            p.day,
            p.month,
            p.pickup_id,
            p.collector_id,
            ln.category,
            ln.unit,
            ln.qty_milli,
            ln.mass_g,
            ln.mass_estimated,
            ln.value_fen,
            ln.low_value,
            ln.co2e_g,
        )
        .join(pickup_lines, ln.pickup_id == p.pickup_id)
        .where(and_(*conds))
    )
    sets: dict[Any, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows.mappings():
        key = (r["day"] if w.granularity == "day" else r["month"], r["category"])
        acc = fig.sums[key]
        acc["collected_g"] += r["mass_g"]
        acc["estimated_g"] += r["mass_g"] if r["mass_estimated"] else 0
        acc["pieces_milli"] += r["qty_milli"] if r["unit"] == "piece" else 0
        acc["value_fen"] += r["value_fen"]
        acc["low_value_g"] += r["mass_g"] if r["low_value"] else 0
        acc["co2e_g"] += r["co2e_g"]
        for target in (key, key[0], "window"):
            sets[target]["resident"].add(scope.resident_id or "")
            sets[target]["collector"].add(r["collector_id"])
            sets[target]["pickup"].add(r["pickup_id"])
    for target, kinds in sets.items():
        counts = {k: len(v) for k, v in kinds.items()}
        if target == "window":
            fig.members_window = counts
        elif isinstance(target, tuple):
            fig.members[target] = counts
        else:
            fig.members_period[target] = counts
    return fig


def figures(s: Session, w: Window, scope: Scope) -> Figures:
    return _from_resident_facts(s, w, scope) if scope.kind == "mine" else _from_aggregates(s, w, scope)


# ------------------------------------------------------------------------------------------------------ shaping


def region_json(code: str) -> dict[str, Any]:
    if is_known(code):
        r = region(code)
        return {"code": r.code, "name": r.name, "level": r.level}
    return {"code": code, "name": None, "level": None}


def period_label(p: date, g: Granularity) -> str:
    return p.isoformat() if g == "day" else p.strftime("%Y-%m")


def _period_end(p: date, w: Window) -> date:
    if w.granularity == "day":
        return p
    nxt = (p + timedelta(days=32)).replace(day=1)
    return min(nxt - timedelta(days=1), w.end)


def _flow_fields(sums: dict[str, int], members: dict[str, int]) -> dict[str, Any]:
    return {
        "collected_t": t_str(sums["collected_g"]),
        "estimated_t": t_str(sums["estimated_g"]),
        "pieces": kg_str(sums["pieces_milli"]),  # thousandths → 3 places
        "value_fen": sums["value_fen"],
        "pickups": members.get("pickup", 0),
        "residents": members.get("resident", 0),
        "collectors": members.get("collector", 0),
        "low_value_t": t_str(sums["low_value_g"]),
        "low_value_share": share_str(sums["low_value_g"], sums["collected_g"]),
        "traded_t": t_str(sums["traded_g"]),
        "traded_value_fen": sums["traded_value_fen"],
        "trades": sums["trades"],
    }


def _total(rows: list[dict[str, int]]) -> dict[str, int]:
    out = dict.fromkeys(SUMS, 0)
    for r in rows:
        for c in SUMS:
            out[c] += r[c]
    return out


def flows_reply(fig: Figures, w: Window, scope: Scope) -> dict[str, Any]:
    cats = categories()
    items = []
    for p in periods(w):
        keys = sorted(k for k in fig.sums if k[0] == p)
        by_category = [
            {
                "category": cat,
                "name": cats[cat].name if cat in cats else None,
                "unit": cats[cat].unit if cat in cats else None,
                **_flow_fields(fig.sums[(p, cat)], fig.members.get((p, cat), {})),
            }
            for _, cat in keys
        ]
        items.append(
            {
                "period": period_label(p, w.granularity),
                "start": max(p, w.start),
                "end": _period_end(p, w),
                **_flow_fields(_total([fig.sums[k] for k in keys]), fig.members_period.get(p, {})),
                "by_category": by_category,
            }
        )
    return {
        "region": region_json(w.region),
        "category": w.category,
        "from": w.start,
        "to": w.end,
        "granularity": w.granularity,
        "scope": scope.describe(),
        "items": items,
        "totals": _flow_fields(_total(list(fig.sums.values())), fig.members_window),
    }


def _carbon_fields(sums: dict[str, int], members: dict[str, int]) -> dict[str, Any]:
    return {
        "avoided_co2e_t": t_str(sums["co2e_g"]),
        "avoided_co2e_kg": kg_str(sums["co2e_g"]),
        "collected_t": t_str(sums["collected_g"]),
        "pickups": members.get("pickup", 0),
        "traded_t": t_str(sums["traded_g"]),
        "traded_co2e_t": t_str(sums["traded_co2e_g"]),
    }


def factor_json(table: FactorTable, category: str) -> dict[str, Any] | None:
    f = table.factor(category)
    if f is None:
        return None
    return {
        "t_co2e_per_t": format(f.t_co2e_per_t, "f"),
        "status": f.status,
        "source": f.source.key,
        "basis": f.basis,
        "checked": f.checked,
    }


def carbon_reply(fig: Figures, w: Window, scope: Scope, table: FactorTable) -> dict[str, Any]:
    items = []
    for p in periods(w):
        keys = sorted(k for k in fig.sums if k[0] == p)
        item = {
            "period": period_label(p, w.granularity),
            "start": max(p, w.start),
            "end": _period_end(p, w),
            **_carbon_fields(_total([fig.sums[k] for k in keys]), fig.members_period.get(p, {})),
            "by_category": [
                {
                    "category": cat,
                    **_carbon_fields(fig.sums[(p, cat)], fig.members.get((p, cat), {})),
                    "factor": factor_json(table, cat),
                }
                for _, cat in keys
            ],
        }
        if scope.kind == "firm":
            item["bought_t"] = t_str(fig.bought_g.get(p, 0))
            item["bought_co2e_t"] = t_str(fig.bought_co2e_g.get(p, 0))
        items.append(item)
    totals = _carbon_fields(_total(list(fig.sums.values())), fig.members_window)
    if scope.kind == "firm":
        totals["bought_t"] = t_str(sum(fig.bought_g.values()))
        totals["bought_co2e_t"] = t_str(sum(fig.bought_co2e_g.values()))
    return {
        "region": region_json(w.region),
        "category": w.category,
        "from": w.start,
        "to": w.end,
        "granularity": w.granularity,
        "scope": scope.describe(),
        "factors_version": table.version,
        "note": (
            "avoided_co2e counts each tonne once, when it is collected at the doorstep; traded_co2e and "
            "bought_co2e are the savings embodied in traded tonnes, already counted (not added)"
        ),
        "items": items,
        "totals": totals,
    }


def pickup_carbon(s: Session, pickup_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    row = s.execute(select(pickups).where(pickups.c.pickup_id == pickup_id)).mappings().first()
    if row is None:
        return None
    lines = (
        s.execute(
            select(pickup_lines)
            .where(pickup_lines.c.pickup_id == pickup_id)
            .order_by(pickup_lines.c.category)
        )
        .mappings()
        .all()
    )
    return dict(row), [dict(r) for r in lines]


def resident_running_total(s: Session, resident_id: str, upto: Any = None) -> dict[str, int]:
    """The resident's totals over every pickup counted so far (or settled up to `upto`)."""
    p = pickups.c
    conds = [p.resident_id == resident_id]
    if upto is not None:
        conds.append(p.settled_at <= upto)
    n, mass, co2e, first = s.execute(
        select(
            func.count(),
            func.coalesce(func.sum(p.mass_g), 0),
            func.coalesce(func.sum(p.co2e_g), 0),
            func.min(p.day),
        ).where(and_(*conds))
    ).one()
    return {"pickups": int(n), "mass_g": int(mass), "co2e_g": int(co2e), "since": first}


__all__ = ["NATIONAL", "Figures", "Scope", "Window", "carbon_reply", "figures", "flows_reply", "periods"]
