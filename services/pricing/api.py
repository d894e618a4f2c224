"""Pricing routes (quotes, indices, methodology, observations): parse → handler (in a thread) → reply.

Paths and field names follow shared/API.md "Pricing". Reads are public; writes need a role.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from services.kernel.http import Ctx, Router

from . import handlers
from .domain.commands import (
    ComputeRequest,
    HistoryParams,
    InputsParams,
    NoticesParams,
    QuoteQuery,
    RecordObservation,
    ValueParams,
)
from .domain.methodology import load_methodology, render_methodology_markdown
from .methodology_json import methodology_json

router = Router("pricing")

FIRM = {"firm"}
ADMIN = {"admin"}


# --------------------------------------------------------------------------------------------- replies


class ObservationOut(BaseModel):
    id: int
    category: str
    city_code: str
    unit_price_fen: int
    qty: str
    kind: str
    tier: str
    related_party: bool
    observed_at: datetime
    day: date
    recorded_at: datetime


class QuoteOut(BaseModel):
    category: str
    city_code: str
    unit_price_fen: int
    as_of: date
    source_region: str
    stale: bool
    reference: bool
    version: int
    methodology_version: str
    tried: list[str]


class SeriesItem(BaseModel):
    date: date
    value: str | None
    version: int
    stale: bool
    n_obs: int
    code: str
    region: str
    kind: str
    unit_price_fen: int | None
    status: str
    source_region: str | None
    reference: bool
    n_excluded: int
    excluded_by_reason: dict[str, int]
    methodology_version: str
    published_at: datetime
    superseded: bool


class SeriesPage(BaseModel):
    code: str
    region: str
    items: list[SeriesItem]
    next_cursor: str | None


class ValueOut(SeriesItem):
    disclosure: dict[str, Any]


class NoticeOut(BaseModel):
    id: int
    code: str
    region: str
    date: date
    kind: str
    old_version: int
    new_version: int
    old_value: str | None
    new_value: str | None
    old_stale: bool
    new_stale: bool
    reason: str
    methodology_version: str
    published_at: datetime


class NoticePage(BaseModel):
    items: list[NoticeOut]
    next_cursor: str | None


class ComputedSeries(BaseModel):
    code: str
    region: str
    kind: str
    date: date
    value: str | None
    unit_price_fen: int | None
    version: int
    stale: bool
    source_region: str | None
    status: str
    n_obs: int
    new_version: bool
    restated: bool


class ComputeNotice(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    region: str
    old_version: int
    new_version: int
    old_value: str | None
    new_value: str | None
    reason: str


class ComputeOut(BaseModel):
    date: date
    run_id: int
    methodology_version: str
    n_observations: int
    n_series: int
    n_new_versions: int
    n_restated: int
    series: list[ComputedSeries]
    notices: list[ComputeNotice]


class AuditInput(BaseModel):
    observation_id: int
    city_code: str
    tier: str
    kind: str
    unit_price_fen: int
    qty: str
    observed_at: datetime
    source: str
    related_party: bool
    reason: str


class DayInput(BaseModel):
    observation_id: int
    category: str
    city_code: str
    tier: str
    kind: str
    unit_price_fen: int
    qty: str
    observed_at: datetime
    source: str
    related_party: bool


class DayInputsPage(BaseModel):
    date: date
    items: list[DayInput]
    next_cursor: str | None


class AuditOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    region: str
    date: date
    version: int
    kind: str
    inputs: list[AuditInput]


# --------------------------------------------------------------------------------------------- writes


@router.post(
    "/v1/prices/observations", roles=FIRM, body=RecordObservation, response=ObservationOut, status=201
)
async def record_observation(ctx: Ctx) -> dict:
    """A firm reports a trade (a verified deal with `evidence`) or a quote (bid/offer) for the price index."""
    return await ctx.run(handlers.record_firm_observation, ctx.runtime, ctx.user, ctx.body)


@router.replay_of(record_observation)
async def record_observation_replayed(ctx: Ctx, made: str) -> dict:
    return await ctx.run(handlers.firm_observation_made, ctx.runtime, ctx.user, made, ctx.body)


@router.post("/v1/admin/prices/compute", roles=ADMIN, body=ComputeRequest, response=ComputeOut)
async def compute_prices(ctx: Ctx) -> dict:
    """Run the daily computation for `date` now; returns every series of that date (new versions flagged)."""
    return await ctx.run(handlers.compute_on_request, ctx.runtime, ctx.user, ctx.body)


# --------------------------------------------------------------------------------------------- reads


@router.get("/v1/prices/quote", public=True, query=QuoteQuery, response=QuoteOut, errors=(404,))
async def get_quote(ctx: Ctx) -> dict:
    """The current price of a category in a city (fallback city → province → national → reference price)."""
    return await ctx.run(handlers.quote, ctx.runtime, ctx.query.category, ctx.query.city_code)


@router.get("/v1/prices/indices", public=True, query=HistoryParams, response=SeriesPage)
async def list_indices(ctx: Ctx) -> dict:
    """History of a price series or family index (`version=`, `all_versions=true` or `as_of=` for old ones)."""
    return await ctx.run(handlers.history, ctx.runtime, ctx.query)


@router.get("/v1/prices/indices.csv", public=True, query=HistoryParams, raw=True)
async def export_indices_csv(ctx: Ctx) -> web.Response:
    """The same history as CSV (every page), for spreadsheets."""
    p: HistoryParams = ctx.query
    body = await ctx.run(handlers.history_csv, ctx.runtime, p)
    name = f"{p.code}_{p.region}.csv"
    return web.Response(
        text=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/v1/prices/disclosure", public=True, query=ValueParams, response=ValueOut, errors=(404,))
async def get_disclosure(ctx: Ctx) -> dict:
    """One published value with its disclosure: exclusions by reason, band, quorum, volume, tiers used."""
    return await ctx.run(handlers.disclosure, ctx.runtime, ctx.query)


@router.get("/v1/prices/notices", public=True, query=NoticesParams, response=NoticePage)
async def list_notices(ctx: Ctx) -> dict:
    """Correction notices (更正公告): old value, new value, reason, newest first."""
    return await ctx.run(handlers.notices, ctx.runtime, ctx.query)


@router.get("/v1/prices/methodology", public=True, raw=True)
async def get_methodology(ctx: Ctx) -> web.Response:
    """The methodology document (Markdown), generated from the configuration the computation uses;
    `Accept: application/json` gives that configuration as JSON."""
    m = load_methodology()
    accept = ctx.request.headers.get("Accept", "")
    if "application/json" in accept and "text/markdown" not in accept:
        return web.Response(
            text=json.dumps(methodology_json(m), ensure_ascii=False), content_type="application/json"
        )
    return web.Response(
        text=render_methodology_markdown(m),
        content_type="text/markdown",
        charset="utf-8",
        headers={"X-Methodology-Version": m.version},
    )


@router.get("/v1/admin/prices/audit", roles=ADMIN, query=ValueParams, response=AuditOut, errors=(404,))
async def get_audit(ctx: Ctx) -> dict:
    """The inputs of a published value and why each was used or excluded (no contributor identities)."""
    return await ctx.run(handlers.audit_inputs, ctx.runtime, ctx.query)


@router.get("/v1/admin/prices/inputs", roles=ADMIN, query=InputsParams, response=DayInputsPage)
async def list_day_inputs(ctx: Ctx) -> dict:
    """The inputs recorded for a day (`?date=&category=&city_code=&tier=`), computed or not yet: what the day's
    computation will read, with tier and source (no contributor)."""
    return await ctx.run(handlers.day_inputs, ctx.runtime, ctx.query)
