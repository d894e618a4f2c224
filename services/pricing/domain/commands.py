"""What callers send the pricing service: typed, validated shapes (the HTTP bodies and queries are these models).

Shape checks live here (400 naming the field); rules that need the clock, the methodology or the caller's firms
(late data window, indexed categories, self-dealing) are checked by the handlers (422 with a reason).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.kernel.errors import ValidationFailed
from services.kernel.inputs import EntityId, Identifier, instant
from services.kernel.money import parse_qty
from services.kernel.regions import validate_city_code
from services.kernel.taxonomy import leaf

from .observations import EVIDENCE_KINDS

_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)

MAX_PRICE_FEN = 10**10  # 1 亿元 per unit: far above any scrap price, far below int64 trouble
MAX_QTY = Decimal(10**9)


def _field_message(exc: ValidationFailed) -> str:
    return exc.errors[0]["message"] if exc.errors else exc.detail


def _city(v: object, *, allow_national: bool) -> str:
    try:
        return validate_city_code(v, allow_national=allow_national)
    except ValidationFailed as exc:
        raise ValueError(_field_message(exc)) from None


def _category(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError('a category code such as "metal.copper"')
    try:
        return leaf(v).code
    except ValidationFailed as exc:
        raise ValueError(_field_message(exc)) from None


def _aware(v: datetime | None) -> datetime | None:
    return None if v is None else instant(v)


class Evidence(BaseModel):
    """The document that verifies a reported trade (its number is kept for audit, never published)."""

    model_config = _Strict
    kind: Literal["weighbridge_ticket", "invoice", "payment_record"] = Field(
        description="one of " + ", ".join(EVIDENCE_KINDS)
    )
    number: Identifier = Field(min_length=1, max_length=100)


class RecordObservation(BaseModel):
    """POST /v1/prices/observations: a firm's trade or quote (bid/offer) for one category and place."""

    model_config = _Strict
    category: str
    city_code: str
    unit_price_fen: int = Field(
        ge=0, le=MAX_PRICE_FEN, strict=True, description="fen per category unit (kg or piece)"
    )
    qty: Decimal = Field(description="decimal string in the category's unit, ≤ 3 places, > 0")
    kind: Literal["trade", "quote"]
    observed_at: datetime
    firm_id: EntityId | None = Field(
        None, description="which of your firms reports (needed if you act for several)"
    )
    counterparty_firm_id: EntityId | None = Field(
        None, description="the other side of a trade (self-dealing check)"
    )
    evidence: Evidence | None = Field(None, description="makes a trade a verified deal")

    _cat = field_validator("category", mode="before")(_category)
    _aw = field_validator("observed_at")(_aware)

    @field_validator("city_code", mode="before")
    @classmethod
    def _city_code(cls, v: object) -> str:
        return _city(v, allow_national=False)

    @field_validator("qty", mode="before")
    @classmethod
    def _qty(cls, v: object) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (str, int, Decimal)):
            raise ValueError('a quantity is a decimal string such as "12.345"')
        q = parse_qty(v)
        if q <= 0:
            raise ValueError("must be greater than 0")
        if q > MAX_QTY:
            raise ValueError(f"at most {MAX_QTY}")
        return q

    @model_validator(mode="after")
    def _evidence_only_for_trades(self) -> RecordObservation:
        if self.evidence is not None and self.kind != "trade":
            raise ValueError("evidence: only a trade has a document that verifies it")
        return self


class QuoteQuery(BaseModel):
    model_config = _Strict
    category: str
    city_code: str

    _cat = field_validator("category", mode="before")(_category)

    @field_validator("city_code", mode="before")
    @classmethod
    def _city_code(cls, v: object) -> str:
        return _city(v, allow_national=True)


class HistoryParams(BaseModel):
    """GET /v1/prices/indices (and .csv): one series' history."""

    model_config = _Strict
    code: str = Field(description="a category code (price series) or a family index code")
    region: str = Field("000000", description="city, province or 000000 (national)")
    from_: date | None = Field(None, alias="from")
    to: date | None = None
    version: int | None = Field(None, ge=1, description="only this version of each date")
    all_versions: bool = Field(False, description="every version, older ones marked superseded")
    as_of: datetime | None = Field(None, description="what was published at this time")
    limit: int | None = Field(None, ge=1)
    cursor: str | None = None

    _aw = field_validator("as_of")(_aware)

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, v: object) -> str:
        return _city(v, allow_national=True)

    @model_validator(mode="after")
    def _range(self) -> HistoryParams:
        if self.from_ and self.to and self.from_ > self.to:
            raise ValueError("from must not be after to")
        if sum((self.version is not None, self.all_versions, self.as_of is not None)) > 1:
            raise ValueError("give at most one of version, all_versions, as_of")
        return self


class NoticesParams(BaseModel):
    model_config = _Strict
    code: str | None = None
    region: str | None = None
    from_: date | None = Field(None, alias="from")
    to: date | None = None
    limit: int | None = Field(None, ge=1)
    cursor: str | None = None

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, v: object) -> str | None:
        return None if v in (None, "") else _city(v, allow_national=True)


class InputsParams(BaseModel):
    """GET /v1/admin/prices/inputs: the inputs recorded for one day, computed or not."""

    model_config = _Strict
    date: date
    category: str | None = None
    city_code: str | None = None
    tier: str | None = None
    limit: int | None = Field(None, ge=1)
    cursor: str | None = None

    @field_validator("city_code", mode="before")
    @classmethod
    def _city_code(cls, v: object) -> str | None:
        return None if v in (None, "") else _city(v, allow_national=False)


class ValueParams(BaseModel):
    """One published value: GET /v1/prices/disclosure and the admin audit view."""

    model_config = _Strict
    code: str
    region: str = "000000"
    date: date
    version: int | None = Field(None, ge=1)

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, v: object) -> str:
        return _city(v, allow_national=True)


class ComputeRequest(BaseModel):
    """POST /v1/admin/prices/compute: run the daily computation for a day (a restatement if it changed)."""

    model_config = _Strict
    date: date
    reason: str | None = Field(None, max_length=500, description="stated on any correction notice")
