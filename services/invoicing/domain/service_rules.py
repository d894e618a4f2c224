"""The invoicing service's own date-effective rules (`services/invoicing/service_rules.toml`).

`tax_rules.toml` holds the tax law (rates, thresholds, the cap); this file holds how the service applies it:
which qualifications make an issuer, whether the firm withholds, when a month's tax falls due (issuer
suspension), and the issuer's location class for 城市维护建设税 by its city. Same conventions: entries in force
from `effective_from` to `effective_to` (inclusive), no overlaps, every entry names its source.

Pure parsing (`parse_service_rules`); `default_service_rules()` reads the shipped file once.
"""

from __future__ import annotations

import calendar
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from importlib import resources
from typing import Any

from .tax_config import Effective, TaxConfigError, _covers, _entries, _no_overlap, _one, _str

SCHEMA_VERSION = 1
RULES_FILE = "service_rules.toml"
REGIME_START = date(2024, 4, 29)  # every kind must cover every day from here (国家税务总局公告2024年第5号)


@dataclass(frozen=True)
class LocationClasses:
    """The issuer's 城市维护建设税 location class by city_code: exact code, prefecture, province, default."""

    default: str
    by_city: tuple[tuple[str, str], ...] = ()

    def class_for(self, city_code: str | None) -> str:
        table = dict(self.by_city)
        code = (city_code or "").strip()
        if len(code) == 6 and code.isdigit():
            for key in (code, code[:4] + "00", code[:2] + "0000"):
                if key in table:
                    return table[key]
        return self.default


@dataclass(frozen=True)
class ServiceRules:
    """The service rules in force on one date."""

    on: date
    qualification_kinds: frozenset[str]
    withholding: bool
    filing_day_of_next_month: int
    location_classes: LocationClasses
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceRuleBook:
    issuer_qualification: tuple[Effective[frozenset[str]], ...]
    withholding: tuple[Effective[bool], ...]
    filing_deadline: tuple[Effective[int], ...]
    location_class: tuple[Effective[LocationClasses], ...]

    _KINDS = ("issuer_qualification", "withholding", "filing_deadline", "location_class")

    def __post_init__(self) -> None:
        for kind in self._KINDS:
            entries = getattr(self, kind)
            _no_overlap(kind, entries, key=lambda v: "")
            _covers(kind, entries, REGIME_START, None)

    def rules_for(self, on: date) -> ServiceRules:
        found = {kind: _one(getattr(self, kind), on) for kind in self._KINDS}
        missing = [k for k, e in found.items() if e is None]
        if missing:
            from .tax_config import NoTaxRulesInForce

            raise NoTaxRulesInForce(on, f"service rule {missing[0]}")
        return ServiceRules(
            on=on,
            qualification_kinds=found["issuer_qualification"].value,  # type: ignore[union-attr]
            withholding=found["withholding"].value,  # type: ignore[union-attr]
            filing_day_of_next_month=found["filing_deadline"].value,  # type: ignore[union-attr]
            location_classes=found["location_class"].value,  # type: ignore[union-attr]
            sources=tuple(dict.fromkeys(e.source for e in found.values() if e is not None)),
        )

    def deadline_for(self, year: int, month: int) -> date:
        """The last day to pay the tax of period (year, month): day N of the following month, N as in force on
        the first day of that month (clamped to the month's length)."""
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        day = self.rules_for(date(ny, nm, 1)).filing_day_of_next_month
        return date(ny, nm, min(day, calendar.monthrange(ny, nm)[1]))

    def suspended_from(self, year: int, month: int) -> date:
        """The first day an unpaid period suspends its issuer: the day after its filing deadline."""
        return self.deadline_for(year, month) + timedelta(days=1)


def parse_service_rules(text: str) -> ServiceRuleBook:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaxConfigError(f"not valid TOML: {exc}") from exc
    return service_rules_from_mapping(data)


def service_rules_from_mapping(data: Mapping[str, Any]) -> ServiceRuleBook:
    if data.get("schema_version") != SCHEMA_VERSION:
        raise TaxConfigError(f"schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    unknown = set(data) - {"schema_version", *ServiceRuleBook._KINDS}
    if unknown:
        raise TaxConfigError(f"unknown keys {sorted(unknown)}")
    return ServiceRuleBook(
        issuer_qualification=_entries(data, "issuer_qualification", {"kinds"}, _kinds),
        withholding=_entries(data, "withholding", {"enabled"}, _enabled),
        filing_deadline=_entries(data, "filing_deadline", {"day_of_next_month"}, _day),
        location_class=_entries(data, "location_class", {"default", "by_city"}, _locations),
    )


@cache
def default_service_rules() -> ServiceRuleBook:
    text = resources.files("services.invoicing").joinpath(RULES_FILE).read_text(encoding="utf-8")
    return parse_service_rules(text)


def load_service_rules(path: str | os.PathLike[str] | None = None) -> ServiceRuleBook:
    if path is None or str(path) == "":
        return default_service_rules()
    with open(path, encoding="utf-8") as f:
        return parse_service_rules(f.read())


def _kinds(entry: Mapping[str, Any], where: str) -> frozenset[str]:
    kinds = entry["kinds"]
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) and k.strip() for k in kinds):
        raise TaxConfigError(f"{where}.kinds must be a non-empty list of qualification kinds")
    return frozenset(kinds)


def _enabled(entry: Mapping[str, Any], where: str) -> bool:
    v = entry["enabled"]
    if type(v) is not bool:
        raise TaxConfigError(f"{where}.enabled must be true or false")
    return v


def _day(entry: Mapping[str, Any], where: str) -> int:
    v = entry["day_of_next_month"]
    if type(v) is not int or not 1 <= v <= 31:
        raise TaxConfigError(f"{where}.day_of_next_month must be a day between 1 and 31")
    return v


def _locations(entry: Mapping[str, Any], where: str) -> LocationClasses:
    default = _str(entry, "default", where)
    table = entry.get("by_city", {})
    if not isinstance(table, dict):
        raise TaxConfigError(f"{where}.by_city must be a table of city_code = class")
    pairs = []
    for code, cls in table.items():
        if not (isinstance(code, str) and len(code) == 6 and code.isdigit()):
            raise TaxConfigError(f"{where}.by_city: {code!r} is not a 6-digit city_code")
        if not isinstance(cls, str) or not cls.strip():
            raise TaxConfigError(f"{where}.by_city.{code} must name a location class")
        pairs.append((code, cls))
    return LocationClasses(default, tuple(sorted(pairs)))
