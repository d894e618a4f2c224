"""The shapes of the stats replies (the OpenAPI document is generated from these; the tests validate real replies
against them, so they cannot drift). Masses are decimal strings: `*_t` tonnes with 6 places, `*_kg` kilograms
with 3; money is integer fen; shares are decimals with 4 places (null without a whole)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RegionOut(_Out):
    code: str
    name: str | None
    level: Literal["national", "province", "city", "county"] | None


class ScopeOut(_Out):
    kind: Literal["all", "firm", "mine"]
    firm_id: str | None = None


class FlowFigures(_Out):
    collected_t: str
    estimated_t: str = Field(description="of collected_t: pieces converted with a typical mass (an estimate)")
    pieces: str
    value_fen: int
    pickups: int
    residents: int = Field(description="distinct residents served in the period")
    collectors: int = Field(description="distinct collectors active in the period")
    low_value_t: str
    low_value_share: str | None
    traded_t: str = Field(description="tonnes delivered onwards in settled trades (selling firm's region)")
    traded_value_fen: int
    trades: int


class CategoryFlow(FlowFigures):
    category: str
    name: str | None
    unit: str | None


class FlowPeriod(FlowFigures):
    period: str = Field(description="YYYY-MM-DD (day) or YYYY-MM (month)")
    start: date
    end: date
    by_category: list[CategoryFlow]


class FlowsOut(_Out):
    region: RegionOut
    category: str | None
    from_: date = Field(alias="from")
    to: date
    granularity: Literal["day", "month"]
    scope: ScopeOut
    items: list[FlowPeriod]
    totals: FlowFigures


class FactorOut(_Out):
    t_co2e_per_t: str
    status: Literal["published", "estimate", "none"]
    source: str
    basis: str
    checked: bool


class CarbonFigures(_Out):
    avoided_co2e_t: str = Field(
        description="CO2e avoided by the tonnes collected (counted once, at the doorstep)"
    )
    avoided_co2e_kg: str
    collected_t: str
    pickups: int
    traded_t: str
    traded_co2e_t: str = Field(description="embodied in tonnes sold onwards: already counted, not added")
    bought_t: str | None = Field(None, description="scope firm: tonnes the firm bought in settled trades")
    bought_co2e_t: str | None = Field(None, description="scope firm: embodied in what it bought")


class CategoryCarbon(CarbonFigures):
    category: str
    factor: FactorOut | None


class CarbonPeriod(CarbonFigures):
    period: str
    start: date
    end: date
    by_category: list[CategoryCarbon]


class CarbonOut(_Out):
    region: RegionOut
    category: str | None
    from_: date = Field(alias="from")
    to: date
    granularity: Literal["day", "month"]
    scope: ScopeOut
    factors_version: str
    note: str
    items: list[CarbonPeriod]
    totals: CarbonFigures


class RunningTotal(_Out):
    pickups: int
    collected_kg: str
    avoided_co2e_kg: str
    since: date | None


class PickupLineCarbon(_Out):
    category: str
    unit: str
    qty: str
    mass_kg: str
    mass_estimated: bool
    avoided_co2e_kg: str
    factor: FactorOut | None


class PickupCarbonOut(_Out):
    pickup_id: str
    settled_at: datetime
    day: date
    region: str
    collected_kg: str
    avoided_co2e_kg: str
    factors_version: str
    lines: list[PickupLineCarbon]
    running_total: RunningTotal


class MyCarbonOut(_Out):
    user_id: str
    pickups: int
    collected_kg: str
    collected_t: str
    avoided_co2e_kg: str
    since: date | None
    factors_version: str


class SourceOut(_Out):
    key: str
    title: str
    publisher: str
    year: int
    url: str
    note: str


class FactorRowOut(FactorOut):
    category: str
    name: str | None
    piece_mass_kg: str | None


class FactorsOut(_Out):
    version: str
    unit: str
    sources: list[SourceOut]
    factors: list[FactorRowOut]
