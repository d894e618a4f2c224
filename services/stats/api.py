"""Stats routes: flows and carbon by region, category and period; a pickup's carbon; the factor table; the
monthly report for regulators.

Who reads what (every route checks it):
- `admin` and `regulator` (主管部门) read every region and firm (scope `all`, or any `firm`);
- a firm's owner or accountant reads that firm's own figures (scope `firm`: its collectors' pickups, its sales
  onwards and its purchases);
- anyone signed in reads their own pickups as a resident (scope `mine`).
Without `scope` the widest the caller may read is chosen: all, else their firm, else mine.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.kernel.errors import Forbidden, NotFound, ValidationFailed
from services.kernel.http import Ctx, Router
from services.kernel.regions import NATIONAL, validate_city_code
from services.kernel.taxonomy import categories

from .domain.flows import kg_str, t_str
from .queries import (
    Scope,
    Window,
    carbon_reply,
    factor_json,
    figures,
    flows_reply,
    pickup_carbon,
    resident_running_total,
)
from .replies import CarbonOut, FactorsOut, FlowsOut, MyCarbonOut, PickupCarbonOut
from .settings import factors_of, settings_of

router = Router("stats")

OVERSEERS = ("admin", "regulator")
FIRM_READERS = ("owner", "accountant")


def _region_code(v: object) -> str:
    try:
        return validate_city_code(v, "region", allow_national=True)
    except ValidationFailed as exc:
        raise ValueError(exc.errors[0]["message"]) from None


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)
    region: str = Field(
        NATIONAL, description="GB/T 2260 code: a province, city or county; 000000 for all of China"
    )
    category: str | None = Field(
        None, description="a category (metal.steel) or a family (metal); all when absent"
    )
    from_: date | None = Field(None, alias="from", description="first day (default: the first of this month)")
    to: date | None = Field(None, description="last day, inclusive (default: today)")
    granularity: Literal["day", "month"] = "day"
    scope: Literal["all", "firm", "mine"] | None = Field(None, description="default: the widest you may read")
    firm_id: str | None = Field(None, max_length=64, description="scope=firm: which firm")

    _region = field_validator("region", mode="before")(lambda v: _region_code(v))

    @field_validator("category")
    @classmethod
    def _category(cls, v: str | None) -> str | None:
        if v is not None and v not in categories():
            raise ValueError(f"unknown category or family {v!r}; see GET /v1/categories")
        return v


def _window(ctx: Ctx, q: StatsQuery) -> Window:
    settings = settings_of(ctx.runtime)
    today = settings.local_date(datetime.now(UTC))
    end = q.to or today
    start = q.from_ or end.replace(day=1)
    if start > end:
        raise ValidationFailed.field("from", "must not be after `to`")
    if (end - start).days + 1 > settings.max_days:
        raise ValidationFailed.field("to", f"at most {settings.max_days} days per request")
    return Window(q.region, q.category, start, end, q.granularity)


def resolve_scope(ctx: Ctx, scope: str | None, firm_id: str | None) -> Scope:
    user = ctx.user
    overseer = user.has(*OVERSEERS)
    if scope is None:
        if overseer and firm_id is None:
            scope = "all"
        elif firm_id is not None or any(user.acts_for(f, *FIRM_READERS) for f in user.firm_ids):
            scope = "firm"
        else:
            scope = "mine"
    if scope == "all":
        if not overseer:
            raise Forbidden(
                "only regulators and admins read every region and firm; ask for scope=firm or mine",
                reason="scope_not_allowed",
            )
        return Scope("all")
    if scope == "mine":
        return Scope("mine", resident_id=user.user_id)
    if firm_id is None:
        mine = sorted(f for f in user.firm_ids if user.acts_for(f, *FIRM_READERS))
        if len(mine) != 1:
            raise ValidationFailed.field(
                "firm_id",
                "name the firm" if mine or overseer else "you act for no firm as owner or accountant",
            )
        firm_id = mine[0]
    if not (overseer or user.acts_for(firm_id, *FIRM_READERS)):
        raise Forbidden(f"you do not read for firm {firm_id}", reason="not_firm_member")
    return Scope("firm", firm_id=firm_id)


def _read(ctx: Ctx, w: Window, scope: Scope) -> Any:
    with ctx.runtime.db.session(readonly=True) as s:
        return figures(s, w, scope)


@router.get("/v1/stats/flows", authenticated=True, query=StatsQuery, response=FlowsOut, errors=(400, 403))
async def flows(ctx: Ctx) -> dict:
    """Material flows (回收量): tonnes collected, value, residents served, collectors active, low-value share and
    tonnes traded onwards, by day or month, for a region and category."""
    q: StatsQuery = ctx.query
    w, scope = _window(ctx, q), resolve_scope(ctx, q.scope, q.firm_id)
    fig = await ctx.run(_read, ctx, w, scope)
    return flows_reply(fig, w, scope)


@router.get("/v1/stats/carbon", authenticated=True, query=StatsQuery, response=CarbonOut, errors=(400, 403))
async def carbon(ctx: Ctx) -> dict:
    """CO2e avoided by recycling (t), by day or month, with the factor behind each category."""
    q: StatsQuery = ctx.query
    w, scope = _window(ctx, q), resolve_scope(ctx, q.scope, q.firm_id)
    fig = await ctx.run(_read, ctx, w, scope)
    return carbon_reply(fig, w, scope, factors_of(ctx.runtime))


def _pickup(ctx: Ctx, pickup_id: str) -> dict:
    with ctx.runtime.db.session(readonly=True) as s:
        found = pickup_carbon(s, pickup_id)
        if found is None:
            raise NotFound(f"no settled pickup {pickup_id} counted (yet)")
        row, lines = found
        user = ctx.user
        if not (
            user.user_id == row["resident_id"]
            or user.has(*OVERSEERS)
            or user.acts_for(row["firm_id"], *FIRM_READERS)
        ):
            raise Forbidden("this pickup is not yours", reason="not_owner")
        running = resident_running_total(s, row["resident_id"], upto=row["settled_at"])
    table = factors_of(ctx.runtime)
    return {
        "pickup_id": pickup_id,
        "settled_at": row["settled_at"],
        "day": row["day"],
        "region": row["region_code"],
        "collected_kg": kg_str(row["mass_g"]),
        "avoided_co2e_kg": kg_str(row["co2e_g"]),
        "factors_version": row["factors_version"],
        "lines": [
            {
                "category": ln["category"],
                "unit": ln["unit"],
                "qty": kg_str(ln["qty_milli"]),
                "mass_kg": kg_str(ln["mass_g"]),
                "mass_estimated": ln["mass_estimated"],
                "avoided_co2e_kg": kg_str(ln["co2e_g"]),
                "factor": factor_json(table, ln["category"]),
            }
            for ln in lines
        ],
        # the resident's running total up to and including this pickup
        "running_total": {
            "pickups": running["pickups"],
            "collected_kg": kg_str(running["mass_g"]),
            "avoided_co2e_kg": kg_str(running["co2e_g"]),
            "since": running["since"],
        },
    }


@router.get(
    "/v1/stats/carbon/pickups/{id}",
    authenticated=True,
    response=PickupCarbonOut,
    errors=(403, 404),
    owner="settled_pickup",
)
async def pickup_carbon_route(ctx: Ctx) -> dict:
    """The CO2e a settled pickup avoided, line by line, and the resident's running total (resident, the
    collecting firm, regulators)."""
    return await ctx.run(_pickup, ctx, ctx.params["id"])


def _me(ctx: Ctx) -> dict:
    with ctx.runtime.db.session(readonly=True) as s:
        total = resident_running_total(s, ctx.user.user_id)
    return {
        "user_id": ctx.user.user_id,
        "pickups": total["pickups"],
        "collected_kg": kg_str(total["mass_g"]),
        "collected_t": t_str(total["mass_g"]),
        "avoided_co2e_kg": kg_str(total["co2e_g"]),
        "since": total["since"],
        "factors_version": factors_of(ctx.runtime).version,
    }


@router.get("/v1/stats/carbon/me", authenticated=True, response=MyCarbonOut)
async def my_carbon(ctx: Ctx) -> dict:
    """Your running total as a resident: pickups, kg collected, CO2e avoided."""
    return await ctx.run(_me, ctx)


@router.get("/v1/stats/factors", public=True, response=FactorsOut)
async def emission_factors(ctx: Ctx) -> dict:
    """The emission-factor table: every category's factor, its status (published / estimate / none) and source."""
    table = factors_of(ctx.runtime)
    cats = categories()
    return {
        "version": table.version,
        "unit": table.unit,
        "sources": [
            {
                "key": s.key,
                "title": s.title,
                "publisher": s.publisher,
                "year": s.year,
                "url": s.url,
                "note": s.note,
            }
            for s in table.sources.values()
        ],
        "factors": [
            {
                "category": code,
                "name": cats[code].name if code in cats else None,
                **(factor_json(table, code) or {}),
                "piece_mass_kg": format(table.piece_mass_kg[code], "f")
                if code in table.piece_mass_kg
                else None,
            }
            for code in sorted(table.factors)
        ],
    }


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="the month, YYYY-MM")
    region: str = Field(NATIONAL, description="GB/T 2260 code; 000000 for all of China")
    by: Literal["province", "city", "county"] = Field("city", description="the level of the report's rows")
    format: Literal["csv", "xlsx"] = "csv"

    _region = field_validator("region", mode="before")(lambda v: _region_code(v))


def _report(ctx: Ctx, spec: Any) -> bytes:
    from .report import render, report_rows

    table = factors_of(ctx.runtime)
    with ctx.runtime.db.session(readonly=True) as s:
        rows = report_rows(s, spec, table)
    return render(rows, spec, table)


@router.get("/v1/stats/reports/monthly", roles=set(OVERSEERS), query=ReportQuery, raw=True, errors=(400,))
async def monthly_report(ctx: Ctx) -> web.StreamResponse:
    """The monthly report for regulators (CSV or XLSX): each region at the level asked × category, with totals."""
    from .report import ReportSpec

    q: ReportQuery = ctx.query
    spec = ReportSpec(q.period, q.region, q.by, q.format)
    spec.check()
    data = await ctx.run(_report, ctx, spec)
    ctype = (
        "text/csv; charset=utf-8"
        if spec.format == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    return web.Response(
        body=data,
        headers={
            "Content-Type": ctype,
            "Content-Disposition": f'attachment; filename="{spec.file_name}"',
            "Cache-Control": "private, no-store",
        },
    )
