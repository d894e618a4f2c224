"""What callers ask booking to do: typed, validated shapes (the HTTP bodies and queries are these models).

Shape checks live here (400 with the field named); business rules that need state or configuration (service
hours, capacity, minimums, the service area) are checked by the handlers (422 with a reason).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.kernel.inputs import HttpUrl, Instant, Text
from services.kernel.money import parse_qty

_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _qty(v: object) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (str, int, float, Decimal)):
        raise ValueError('a quantity is a decimal string such as "12.345"')
    q = parse_qty(v)
    if q <= 0:
        raise ValueError("must be greater than 0")
    return q


def _one_line_per_category(v: list) -> list:
    seen = set()
    for it in v:
        if it.category in seen:
            raise ValueError(f"category {it.category} appears twice; give one line per category")
        seen.add(it.category)
    return v


class Address(BaseModel):
    model_config = _Strict
    text: Text = Field(min_length=2, max_length=200)
    city_code: str
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class Window(BaseModel):
    model_config = _Strict
    start: Instant
    end: Instant


class EstimatedItem(BaseModel):
    model_config = _Strict
    category: str
    est_qty: Decimal

    _q = field_validator("est_qty", mode="before")(_qty)


class BookPickup(BaseModel):
    """POST /v1/pickups"""

    model_config = _Strict
    address: Address
    window: Window
    items: list[EstimatedItem] = Field(min_length=1, max_length=20)
    notes: Text = Field("", max_length=500)

    _distinct = field_validator("items")(_one_line_per_category)


class WeighedItem(BaseModel):
    model_config = _Strict
    category: str
    qty: Decimal

    _q = field_validator("qty", mode="before")(_qty)


class WeighPickup(BaseModel):
    """POST /v1/pickups/{id}/weigh"""

    model_config = _Strict
    lines: list[WeighedItem] = Field(min_length=1, max_length=20)
    reason: Text | None = Field(None, max_length=500, description="why the result differs from the estimate")
    scale_reading: Text | None = Field(
        None, max_length=200, description="scale id and reading, ticket number…"
    )

    _distinct = field_validator("lines")(_one_line_per_category)


class DisputePickup(BaseModel):
    model_config = _Strict
    reason: Text = Field(min_length=2, max_length=500)


class ReschedulePickup(BaseModel):
    """POST /v1/pickups/{id}/reschedule"""

    model_config = _Strict
    window: Window


class CancelPickup(BaseModel):
    model_config = _Strict
    reason: Text | None = Field(None, max_length=500)


class RatePickup(BaseModel):
    model_config = _Strict
    score: int = Field(ge=1, le=5)
    comment: Text = Field("", max_length=500)


EvidenceKind = Literal["photo", "video", "audio", "scale_ticket", "document", "text"]


class Evidence(BaseModel):
    model_config = _Strict
    kind: EvidenceKind
    url: HttpUrl | None = Field(
        None, max_length=500, description="where the file is kept (uploaded beforehand)"
    )
    sha256: str | None = Field(None, description="hex digest of the file, to prove it is unchanged")
    note: Text | None = Field(None, max_length=1000)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("64 hex digits")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _something(self) -> Evidence:
        if not self.url and not self.note:
            raise ValueError("evidence needs a url or a note")
        return self


ComplaintKind = Literal["pricing", "weighing", "behaviour", "no_show", "damage", "payment", "other"]


class FileComplaint(BaseModel):
    model_config = _Strict
    kind: ComplaintKind
    text: Text = Field(min_length=2, max_length=2000)
    evidence: list[Evidence] = Field(min_length=1, max_length=10)


class JobsQuery(BaseModel):
    """GET /v1/jobs: around a point (default: the collector's area centre), within a radius (default theirs)."""

    model_config = ConfigDict(extra="forbid")
    lat: float | None = Field(None, ge=-90, le=90)
    lng: float | None = Field(None, ge=-180, le=180)
    radius_km: float | None = Field(None, gt=0, le=200)
    limit: int = Field(50, ge=1, le=200)


class PickupsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mine: int | None = Field(None, ge=0, le=1)
    status: str | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None
