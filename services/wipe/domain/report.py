"""An erasure report as the policy reads it, and the parser of the JSON wire format (WIPE.md, `wipe-report/1`).

Both input formats (our JSON, nwipe/ShredOS logs) become the same `Report`; anything that cannot be read into one
is `MalformedReport` (→ 422 `malformed_report`), naming what is wrong. No I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.kernel.checkdigits import validate_imei
from services.kernel.errors import ValidationFailed
from services.kernel.inputs import instant

SCHEMA = "wipe-report/1"
DEVICE_KINDS = ("phone", "tablet", "laptop", "desktop", "wearable", "drive")
MEDIA_TYPES = ("flash", "emmc", "ufs", "ssd", "nvme", "hdd")
METHODS = ("crypto_erase", "block_erase", "sanitize", "overwrite", "purge", "degauss", "factory_reset")
HIDDEN_AREAS = ("reset", "none", "not_supported")
ERASE_RESULTS = ("passed", "failed", "aborted")
VERIFY_MODES = ("full", "sampled")
VERIFY_RESULTS = ("passed", "failed")


class MalformedReport(ValueError):
    """The report cannot be read as a report: `problems` lists each (field, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass(frozen=True)
class Verification:
    mode: str  # full | sampled
    result: str  # passed | failed
    subsections: int | None = None
    locations_per_subsection: int | None = None
    coverage_pct: float | None = None


@dataclass(frozen=True)
class Medium:
    type: str
    serial: str
    capacity_bytes: int
    bytes_erased: int
    hidden_areas: str
    method: str
    passes: int
    random_passes: int
    erase_result: str
    verification: Verification | None  # None: the tool did not verify (nwipe without verification)
    label: str = ""  # where the tool saw it (nwipe: the device node, e.g. sda)


@dataclass(frozen=True)
class Device:
    kind: str
    make: str
    model: str
    imei: str | None = None
    serial: str | None = None


@dataclass(frozen=True)
class Report:
    format: str  # json | nwipe
    report_id: str
    created_at: datetime  # aware
    device: Device
    activation_lock: str  # off | on
    media: tuple[Medium, ...]

    def identifiers(self) -> list[tuple[str, str]]:
        """(kind, value) of every identifier naming the device: its IMEI, its serial, its media's serials."""
        out: list[tuple[str, str]] = []
        if self.device.imei:
            out.append(("imei", self.device.imei))
        if self.device.serial:
            out.append(("serial", self.device.serial))
        out += [("serial", m.serial) for m in self.media if m.serial]
        return list(dict.fromkeys(out))


# --- the JSON wire format -------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class _VerificationIn(_Strict):
    mode: Literal[VERIFY_MODES]  # type: ignore[valid-type]
    result: Literal[VERIFY_RESULTS]  # type: ignore[valid-type]
    subsections: int | None = Field(None, ge=0)
    locations_per_subsection: int | None = Field(None, ge=0)
    coverage_pct: float | None = Field(None, ge=0, le=100)


class _MediumIn(_Strict):
    type: Literal[MEDIA_TYPES]  # type: ignore[valid-type]
    serial: str = Field("", max_length=100)
    capacity_bytes: int = Field(gt=0)
    bytes_erased: int = Field(ge=0)
    hidden_areas: Literal[HIDDEN_AREAS]  # type: ignore[valid-type]
    method: Literal[METHODS]  # type: ignore[valid-type]
    passes: int = Field(0, ge=0, le=1000)
    random_passes: int = Field(0, ge=0, le=1000)
    erase_result: Literal[ERASE_RESULTS]  # type: ignore[valid-type]
    verification: _VerificationIn

    @model_validator(mode="after")
    def _consistent(self) -> _MediumIn:
        if self.bytes_erased > self.capacity_bytes:
            raise ValueError("bytes_erased exceeds capacity_bytes")
        if self.random_passes > self.passes:
            raise ValueError("random_passes exceeds passes")
        return self


class _DeviceIn(_Strict):
    kind: Literal[DEVICE_KINDS]  # type: ignore[valid-type]
    make: str = Field("", max_length=100)
    model: str = Field(min_length=1, max_length=200)
    imei: str | None = Field(None, max_length=40)
    serial: str | None = Field(None, max_length=100)

    @field_validator("imei")
    @classmethod
    def _imei(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        try:
            return validate_imei(v, "device.imei")
        except ValidationFailed as exc:
            raise ValueError(exc.errors[0]["message"]) from None

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str | None) -> str | None:
        return v or None


class _ReportIn(_Strict):
    schema_: Literal[SCHEMA] = Field(alias="schema")  # type: ignore[valid-type]
    report_id: str = Field(min_length=1, max_length=200)
    created_at: datetime
    device: _DeviceIn
    activation_lock: Literal["off", "on"]
    media: list[_MediumIn] = Field(min_length=1, max_length=64)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return instant(v)


def check_identity(device: Device, media: tuple[Medium, ...], kinds_needing_identity: frozenset[str]) -> None:
    """A phone or tablet names its IMEI or serial; any device is named by at least one identifier."""
    if device.kind in kinds_needing_identity and not (device.imei or device.serial):
        raise MalformedReport([("device", f"a {device.kind} needs an IMEI or a serial")])
    if not (device.imei or device.serial or any(m.serial for m in media)):
        raise MalformedReport([("device", "no identifier: give an IMEI, a serial or the media serials")])


def parse_json_report(text: str, kinds_needing_identity: frozenset[str]) -> Report:
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise MalformedReport([("report", f"not valid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise MalformedReport([("report", "must be a JSON object")])
    try:
        # strict: a signed report says what it means; `"passes": true` or `"capacity_bytes": "128000000000"` is not
        # a count, and the policy must not read one into it
        r = _ReportIn.model_validate_json(text, strict=True)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "report"
            msg = e["msg"].removeprefix("Value error, ")
            problems.append((loc, msg))
        raise MalformedReport(problems) from None
    device = Device(
        kind=r.device.kind,
        make=r.device.make,
        model=r.device.model,
        imei=r.device.imei,
        serial=r.device.serial,
    )
    media = tuple(
        Medium(
            type=m.type,
            serial=m.serial,
            capacity_bytes=m.capacity_bytes,
            bytes_erased=m.bytes_erased,
            hidden_areas=m.hidden_areas,
            method=m.method,
            passes=m.passes,
            random_passes=m.random_passes,
            erase_result=m.erase_result,
            verification=Verification(
                mode=m.verification.mode,
                result=m.verification.result,
                subsections=m.verification.subsections,
                locations_per_subsection=m.verification.locations_per_subsection,
                coverage_pct=m.verification.coverage_pct,
            ),
            label=f"media[{i}]",
        )
        for i, m in enumerate(r.media)
    )
    check_identity(device, media, kinds_needing_identity)
    return Report(
        format="json",
        report_id=r.report_id,
        created_at=r.created_at,
        device=device,
        activation_lock=r.activation_lock,
        media=media,
    )
