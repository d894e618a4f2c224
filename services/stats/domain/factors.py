"""The emission-factor table (carbon_factors.toml) and the low-value lists (low_value.toml): parsed and checked.

No I/O here: callers pass the TOML text. A table that leaves a taxonomy leaf without a factor, a piece category
without a mass, or a factor without a known source is refused with the entry named, so a bad file stops start-up.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from services.kernel.taxonomy import Category

STATUSES = ("published", "estimate", "none")


class FactorTableError(ValueError):
    """A factor file that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class Source:
    key: str
    title: str
    publisher: str
    year: int
    url: str
    note: str


@dataclass(frozen=True)
class Factor:
    category: str
    t_co2e_per_t: Decimal  # t CO2e avoided per t collected (= kg per kg)
    status: str  # published | estimate | none
    source: Source
    basis: str
    checked: bool


@dataclass(frozen=True)
class FactorTable:
    version: str
    unit: str
    sources: dict[str, Source]
    factors: dict[str, Factor]
    piece_mass_kg: dict[str, Decimal]

    def factor(self, category: str) -> Factor | None:
        return self.factors.get(category)


def _decimal(value: Any, where: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise FactorTableError(f"{where}: not a decimal number: {value!r}") from None
    if not d.is_finite() or d < 0:
        raise FactorTableError(f"{where}: must be a finite number ≥ 0, got {value!r}")
    return d


def parse_factor_table(text: str, leaves: list[Category]) -> FactorTable:
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FactorTableError(f"not valid TOML: {exc}") from None
    for key in ("version", "unit", "sources", "factors"):
        if key not in cfg:
            raise FactorTableError(f"missing `{key}`")
    sources: dict[str, Source] = {}
    for key, s in cfg["sources"].items():
        missing = [f for f in ("title", "publisher", "year") if not s.get(f)]
        if missing:
            raise FactorTableError(f"sources.{key}: missing {', '.join(missing)}")
        sources[key] = Source(
            key, s["title"], s["publisher"], int(s["year"]), s.get("url", ""), s.get("note", "")
        )
    factors: dict[str, Factor] = {}
    for code, f in cfg["factors"].items():
        where = f"factors.{code}"
        if f.get("source") not in sources:
            raise FactorTableError(f"{where}: source {f.get('source')!r} is not in [sources]")
        if f.get("status") not in STATUSES:
            raise FactorTableError(f"{where}: status must be one of {STATUSES}, got {f.get('status')!r}")
        if not f.get("basis"):
            raise FactorTableError(f"{where}: say what the number is (`basis`)")
        value = _decimal(f.get("t_co2e_per_t"), where + ".t_co2e_per_t")
        if f["status"] == "none" and value != 0:
            raise FactorTableError(f'{where}: status "none" claims no savings; t_co2e_per_t must be 0')
        factors[code] = Factor(
            code, value, f["status"], sources[f["source"]], f["basis"], bool(f.get("checked"))
        )
    masses = {code: _decimal(v, f"piece_mass_kg.{code}") for code, v in cfg.get("piece_mass_kg", {}).items()}
    for leaf in leaves:
        if leaf.code not in factors:
            raise FactorTableError(
                f"factors.{leaf.code}: the taxonomy has this category; give it a factor "
                f'(status "none" for no claim)'
            )
        if leaf.unit == "piece" and leaf.code not in masses:
            raise FactorTableError(
                f"piece_mass_kg.{leaf.code}: counted in pieces; give the mass of one piece"
            )
    return FactorTable(str(cfg["version"]), str(cfg["unit"]), sources, factors, masses)


@dataclass(frozen=True)
class LowValueLists:
    """Which categories count as 低值可回收物 where: per-region lists over the taxonomy's national flags."""

    default: frozenset[str]
    by_region: dict[str, frozenset[str]]

    def for_region(self, code: str) -> frozenset[str]:
        # county, then its city, then its province: the most specific list wins
        for candidate in (code, code[:4] + "00", code[:2] + "0000"):
            if candidate in self.by_region:
                return self.by_region[candidate]
        return self.default

    def is_low_value(self, category: str, region_code: str) -> bool:
        return category in self.for_region(region_code)


def parse_low_value(text: str, leaves: list[Category]) -> LowValueLists:
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FactorTableError(f"low_value: not valid TOML: {exc}") from None
    known = {c.code for c in leaves}
    by_region: dict[str, frozenset[str]] = {}
    for code, cats in cfg.get("regions", {}).items():
        if not (len(code) == 6 and code.isdigit()):
            raise FactorTableError(f"low_value regions.{code}: not a 6-digit GB/T 2260 code")
        unknown = sorted(set(cats) - known)
        if unknown:
            raise FactorTableError(f"low_value regions.{code}: unknown categories {unknown}")
        by_region[code] = frozenset(cats)
    return LowValueLists(frozenset(c.code for c in leaves if c.low_value), by_region)
