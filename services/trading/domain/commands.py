"""What callers ask trading to do: typed, validated shapes (the HTTP bodies and queries are these models).

Shape checks live here (400 naming the field); rules that need state (intake coverage, who may bid, the
auction) are checked by the handlers (422 with a reason, 409 with the current state).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.kernel.inputs import PLAIN_DECIMAL, instant
from services.kernel.regions import NATIONAL, is_known

from .model import tonnes_to_kg

_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
FEN = Field(gt=0, le=10**12)


def _tonnes(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError('a tonnage is a decimal string such as "20.500"')
    # plain digits only, as for every decimal the platform takes: Decimal() alone would read "1e3" as 1,000 t
    # (and "1_000", "+1", " 1 ")
    if isinstance(v, str) and not PLAIN_DECIMAL.fullmatch(v):
        raise ValueError('a tonnage is a plain decimal number such as "20.500"')
    kg = tonnes_to_kg(v)
    if kg <= 0:
        raise ValueError("must be greater than 0")
    return str(v).strip()


def _aware(v: datetime) -> datetime:
    return instant(v).astimezone(UTC)


class ListLot(BaseModel):
    """POST /v1/lots"""

    model_config = _Strict
    category: str
    grade: str = Field(min_length=1, max_length=100)
    qty_t: str
    city_code: str
    reserve_price_fen_per_t: int = FEN
    auction: Literal["sealed", "ascending"]
    ends_at: datetime
    min_increment_fen_per_t: int | None = Field(None, gt=0, le=10**9)
    deposit_fen: int = Field(0, ge=0, le=10**12)
    source: Literal["intake", "purchase"] = "intake"
    # validated even when absent: a purchase must name one (the check names this field, not the body)
    purchase_ref: str | None = Field(None, min_length=1, max_length=200, validate_default=True)
    # the firm the caller lists for, when they own several (optional otherwise)
    firm_id: str | None = None

    _q = field_validator("qty_t", mode="before")(_tonnes)
    _e = field_validator("ends_at")(_aware)

    @field_validator("city_code")
    @classmethod
    def _city(cls, v: str) -> str:
        if not is_known(v) or v == NATIONAL:
            raise ValueError(f"unknown GB/T 2260 region code {v!r}")
        return v

    # cross-field checks as validators of the later field (it sees the earlier ones in `info.data`), so the
    # 400 names the field to fix
    @field_validator("min_increment_fen_per_t")
    @classmethod
    def _increment(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("auction") == "sealed":
            raise ValueError("only ascending lots have an increment")
        return v

    @field_validator("purchase_ref")
    @classmethod
    def _purchase_ref(cls, v: str | None, info: ValidationInfo) -> str | None:
        source = info.data.get("source")
        if source == "purchase" and not v:
            raise ValueError("a lot bought outside the platform names its purchase (contract, invoice)")
        if source == "intake" and v:
            raise ValueError('only for source "purchase"')
        return v

    @property
    def qty_kg(self) -> int:
        return tonnes_to_kg(self.qty_t)


class PlaceBid(BaseModel):
    """POST /v1/lots/{id}/bids"""

    model_config = _Strict
    price_fen_per_t: int = FEN
    firm_id: str | None = None


class RequestDeposit(BaseModel):
    """POST /v1/lots/{id}/deposit"""

    model_config = _Strict
    firm_id: str | None = None


class RecordDelivery(BaseModel):
    """POST /v1/trades/{id}/delivery"""

    model_config = _Strict
    weighbridge_ticket_no: str = Field(min_length=1, max_length=64)
    delivered_qty_t: str

    _q = field_validator("delivered_qty_t", mode="before")(_tonnes)

    @property
    def delivered_kg(self) -> int:
        return tonnes_to_kg(self.delivered_qty_t)


class DisputeDelivery(BaseModel):
    """POST /v1/trades/{id}/dispute-delivery"""

    model_config = _Strict
    reason: str = Field(min_length=2, max_length=500)


class DeclareDefault(BaseModel):
    """POST /v1/trades/{id}/declare-default"""

    model_config = _Strict
    reason: str = Field(min_length=2, max_length=500)


class LotsQuery(BaseModel):
    """GET /v1/lots"""

    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "awarded", "unsold", "returned"] | None = None
    category: str | None = None
    seller_firm_id: str | None = None
    limit: int | None = Field(None, ge=1)
    cursor: str | None = None


class TradesQuery(BaseModel):
    """GET /v1/trades"""

    model_config = ConfigDict(extra="forbid")
    status: (
        Literal["awarded", "delivered", "disputed", "settled", "defaulted", "offered", "declined", "lapsed"]
        | None
    ) = None
    limit: int | None = Field(None, ge=1)
    cursor: str | None = None
