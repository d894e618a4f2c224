"""Date-effective tax configuration for reverse invoicing (反向开票).

Every rate, threshold and date lives in `services/invoicing/tax_rules.toml` as an entry with `effective_from` and
an optional `effective_to` (both inclusive). `TaxRuleBook.rules_for(invoice_date)` resolves the entries in force on
that date into one frozen `TaxRules`, which is all the tax computation (`tax.py`) ever reads: code holds no rate.

Parsing is pure (`parse_rule_book(text)`, `rule_book_from_mapping(data)`); `load_rule_book()` is the one
function here that reads a file, and the service calls it once at start-up.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

from services.kernel.errors import RuleViolated

T = TypeVar("T")

SCHEMA_VERSION = 1
RULES_FILE = "tax_rules.toml"


class TaxConfigError(ValueError):
    """The configuration file is malformed or inconsistent (overlaps, gaps, bad rates). Raised at load time."""


class NoTaxRulesInForce(RuleViolated):
    """No reverse-invoicing regime (or a required rule) is in force on the invoice date."""

    def __init__(self, on: date, what: str = "reverse-invoicing regime"):
        super().__init__(
            f"no {what} in force on {on.isoformat()}",
            reason="no_tax_rules_in_force",
            invoice_date=on.isoformat(),
        )


# ---------------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Effective(Generic[T]):
    """One configuration entry: a value in force from `effective_from` to `effective_to` (inclusive; None = open)."""

    effective_from: date
    effective_to: date | None
    value: T
    source: str

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)


@dataclass(frozen=True)
class WaiverReason:
    """放弃减税的理由: one of the coded reasons for which the seller is invoiced at the full levy rate."""

    code: str
    description: str


@dataclass(frozen=True)
class SurchargeRule:
    """A surcharge on VAT (附加税费): a flat rate, or a rate by the issuer's location class (城市维护建设税)."""

    code: str
    name: str
    rate: Decimal | None = None
    rates_by_location: tuple[tuple[str, Decimal], ...] = ()

    def base_rate(self, location_class: str) -> Decimal | None:
        """The statutory rate for an issuer in `location_class`; None when this rule has no rate for that class."""
        if self.rate is not None:
            return self.rate
        return dict(self.rates_by_location).get(location_class)


@dataclass(frozen=True)
class SurchargeRelief:
    """减半征收: the factor applied to the listed surcharges for small-scale taxpayers while the relief lasts."""

    factor: Decimal
    applies_to: frozenset[str]


@dataclass(frozen=True)
class SurchargeRate:
    """A surcharge as it applies to one invoice: statutory rate × relief factor = `rate`."""

    code: str
    name: str
    base_rate: Decimal
    relief_factor: Decimal
    rate: Decimal


@dataclass(frozen=True)
class IitTier:
    """A slice of the seller's calendar-year sales excl. VAT taxed at `rate`; `up_to_year_sales_excl_fen` is the
    inclusive upper end of the slice (None = no upper end)."""

    up_to_year_sales_excl_fen: int | None
    rate: Decimal


@dataclass(frozen=True)
class IitPrepayment:
    """个人所得税 (经营所得) prepayment: `rate` flat, or tiered when 三流合一 holds and tiers are configured."""

    rate: Decimal
    three_flows_tiers: tuple[IitTier, ...] | None = None

    def schedule(self, three_flows: bool) -> tuple[IitTier, ...]:
        if three_flows and self.three_flows_tiers:
            return self.three_flows_tiers
        return (IitTier(None, self.rate),)


@dataclass(frozen=True)
class RollingCap:
    """连续12个自然月“反向开票”累计销售额 (不含增值税) cap, across all issuers."""

    sales_excl_fen: int
    months: int


@dataclass(frozen=True)
class TaxRules:
    """The rules in force on one invoice date. Everything the tax computation needs, nothing else."""

    on: date
    regime: str
    vat_exemption_threshold_fen: int | None  # None: no monthly exemption in force
    vat_levy_rate: Decimal
    vat_reduced_rate: Decimal | None  # None: no reduction in force
    waiver_reasons: tuple[WaiverReason, ...]
    surcharges: tuple[SurchargeRule, ...]
    surcharge_relief: SurchargeRelief | None
    iit_prepayment: IitPrepayment
    rolling_cap: RollingCap
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def location_classes(self) -> frozenset[str]:
        """Location classes every location-dependent surcharge has a rate for."""
        sets = [frozenset(k for k, _ in s.rates_by_location) for s in self.surcharges if s.rate is None]
        return frozenset.intersection(*sets) if sets else frozenset()

    def waiver_reason(self, code: str) -> WaiverReason | None:
        return next((w for w in self.waiver_reasons if w.code == code), None)

    def vat_rate(self, waiver_reason: str | None) -> Decimal:
        """征收率 for a taxable invoice: the reduced rate while in force, unless waived with a coded reason."""
        if self.vat_reduced_rate is None or waiver_reason is not None:
            return self.vat_levy_rate
        return self.vat_reduced_rate

    def surcharge_rates(self, location_class: str) -> tuple[SurchargeRate, ...]:
        out = []
        for s in self.surcharges:
            base = s.base_rate(location_class)
            if base is None:
                raise KeyError(location_class)
            relief = self.surcharge_relief
            factor = relief.factor if relief is not None and s.code in relief.applies_to else Decimal(1)
            out.append(SurchargeRate(s.code, s.name, base, factor, base * factor))
        return tuple(out)


# ---------------------------------------------------------------------------------------------------- the book

# kinds that must cover every day of the regime
_REQUIRED = ("vat_levy_rate", "iit_prepayment", "rolling_cap")


@dataclass(frozen=True)
class TaxRuleBook:
    """All configured entries over time. `rules_for(date)` gives the set in force on an invoice date."""

    regime: tuple[Effective[str], ...]
    vat_exemption_threshold: tuple[Effective[int], ...]
    vat_levy_rate: tuple[Effective[Decimal], ...]
    vat_reduced_rate: tuple[Effective[Decimal], ...]
    vat_waiver_reason: tuple[Effective[WaiverReason], ...]
    surcharge: tuple[Effective[SurchargeRule], ...]
    surcharge_relief: tuple[Effective[SurchargeRelief], ...]
    iit_prepayment: tuple[Effective[IitPrepayment], ...]
    rolling_cap: tuple[Effective[RollingCap], ...]

    def __post_init__(self) -> None:
        _no_overlap("regime", self.regime, key=lambda v: "")
        for kind in (
            "vat_exemption_threshold",
            "vat_levy_rate",
            "vat_reduced_rate",
            "surcharge_relief",
            "iit_prepayment",
            "rolling_cap",
        ):
            _no_overlap(kind, getattr(self, kind), key=lambda v: "")
        _no_overlap("vat_waiver_reason", self.vat_waiver_reason, key=lambda v: v.code)
        _no_overlap("surcharge", self.surcharge, key=lambda v: v.code)
        if not self.regime:
            raise TaxConfigError("no [[regime]] entry")
        for r in self.regime:
            for kind in _REQUIRED:
                _covers(kind, getattr(self, kind), r.effective_from, r.effective_to)
        known = {e.value.code for e in self.surcharge}
        for e in self.surcharge_relief:
            unknown = e.value.applies_to - known
            if unknown:
                raise TaxConfigError(
                    f"surcharge_relief from {e.effective_from} names unknown surcharges {sorted(unknown)}"
                )

    def rules_for(self, on: date) -> TaxRules:
        """The rules in force on invoice date `on`. Raises NoTaxRulesInForce outside the regime."""
        regime = _one(self.regime, on)
        if regime is None:
            raise NoTaxRulesInForce(on)
        required = {kind: _one(getattr(self, kind), on) for kind in _REQUIRED}
        for kind, entry in required.items():
            if entry is None:  # the loader checks coverage; this guards hand-built books
                raise NoTaxRulesInForce(on, kind)
        threshold = _one(self.vat_exemption_threshold, on)
        reduced = _one(self.vat_reduced_rate, on)
        relief = _one(self.surcharge_relief, on)
        waivers = [e for e in self.vat_waiver_reason if e.in_force(on)]
        surcharges = [e for e in self.surcharge if e.in_force(on)]
        in_force: list[Effective[Any]] = [regime, *required.values(), *waivers, *surcharges]
        in_force += [e for e in (threshold, reduced, relief) if e is not None]
        return TaxRules(
            on=on,
            regime=regime.value,
            vat_exemption_threshold_fen=threshold.value if threshold else None,
            vat_levy_rate=required["vat_levy_rate"].value,
            vat_reduced_rate=reduced.value if reduced else None,
            waiver_reasons=tuple(e.value for e in waivers),
            surcharges=tuple(e.value for e in surcharges),
            surcharge_relief=relief.value if relief else None,
            iit_prepayment=required["iit_prepayment"].value,
            rolling_cap=required["rolling_cap"].value,
            sources=tuple(dict.fromkeys(e.source for e in in_force)),
        )

    def change_dates(self) -> tuple[date, ...]:
        """Every date on which some rule starts or stops applying (for docs and tests)."""
        days: set[date] = set()
        for kind in (
            "regime",
            "vat_exemption_threshold",
            "vat_levy_rate",
            "vat_reduced_rate",
            "vat_waiver_reason",
            "surcharge",
            "surcharge_relief",
            "iit_prepayment",
            "rolling_cap",
        ):
            for e in getattr(self, kind):
                days.add(e.effective_from)
                if e.effective_to is not None:
                    days.add(e.effective_to + timedelta(days=1))
        return tuple(sorted(days))


def _one(entries: Sequence[Effective[T]], on: date) -> Effective[T] | None:
    found = [e for e in entries if e.in_force(on)]
    return found[0] if found else None  # overlaps are refused at construction


def _no_overlap(kind: str, entries: Sequence[Effective[Any]], key: Callable[[Any], str]) -> None:
    by_key: dict[str, list[Effective[Any]]] = {}
    for e in entries:
        if e.effective_to is not None and e.effective_to < e.effective_from:
            raise TaxConfigError(
                f"{kind}: effective_to {e.effective_to} is before effective_from {e.effective_from}"
            )
        by_key.setdefault(key(e.value), []).append(e)
    for k, group in by_key.items():
        group = sorted(group, key=lambda e: e.effective_from)
        for a, b in zip(group, group[1:]):
            if a.effective_to is None or a.effective_to >= b.effective_from:
                label = f"{kind} {k}".strip()
                raise TaxConfigError(
                    f"{label}: entries from {a.effective_from} and {b.effective_from} overlap"
                )


def _covers(kind: str, entries: Sequence[Effective[Any]], start: date, end: date | None) -> None:
    day = start
    for e in sorted(entries, key=lambda e: e.effective_from):
        if e.effective_from > day:
            break
        if e.effective_to is None:
            return
        day = max(day, e.effective_to + timedelta(days=1))
        if end is not None and day > end:
            return
    if end is None or day <= end:
        raise TaxConfigError(f"{kind}: no entry in force on {day} although the regime is")


# ---------------------------------------------------------------------------------------------------- parsing


def parse_rule_book(text: str) -> TaxRuleBook:
    """Parse the TOML text of a rule book. Raises TaxConfigError naming the bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaxConfigError(f"not valid TOML: {exc}") from exc
    return rule_book_from_mapping(data)


def rule_book_from_mapping(data: Mapping[str, Any]) -> TaxRuleBook:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TaxConfigError(f"schema_version must be {SCHEMA_VERSION}, got {version!r}")
    known = {
        "schema_version",
        "regime",
        "vat_exemption_threshold",
        "vat_levy_rate",
        "vat_reduced_rate",
        "vat_waiver_reason",
        "surcharge",
        "surcharge_relief",
        "iit_prepayment",
        "rolling_cap",
    }
    unknown = set(data) - known
    if unknown:
        raise TaxConfigError(f"unknown keys {sorted(unknown)}")
    return TaxRuleBook(
        regime=_entries(data, "regime", {"name"}, lambda e, w: _str(e, "name", w)),
        vat_exemption_threshold=_entries(
            data,
            "vat_exemption_threshold",
            {"monthly_sales_excl_fen"},
            lambda e, w: _fen(e, "monthly_sales_excl_fen", w),
        ),
        vat_levy_rate=_entries(data, "vat_levy_rate", {"rate"}, lambda e, w: _rate(e["rate"], f"{w}.rate")),
        vat_reduced_rate=_entries(
            data, "vat_reduced_rate", {"rate"}, lambda e, w: _rate(e["rate"], f"{w}.rate")
        ),
        vat_waiver_reason=_entries(
            data,
            "vat_waiver_reason",
            {"code", "description"},
            lambda e, w: WaiverReason(_str(e, "code", w), _str(e, "description", w)),
        ),
        surcharge=_entries(data, "surcharge", {"code", "name", "rate", "rates_by_location"}, _surcharge),
        surcharge_relief=_entries(data, "surcharge_relief", {"factor", "applies_to"}, _relief),
        iit_prepayment=_entries(data, "iit_prepayment", {"rate", "three_flows_tiers"}, _iit),
        rolling_cap=_entries(
            data,
            "rolling_cap",
            {"sales_excl_fen", "months"},
            lambda e, w: RollingCap(_fen(e, "sales_excl_fen", w), _months(e, w)),
        ),
    )


@cache
def default_rule_book() -> TaxRuleBook:
    """The rule book shipped with the service (`services/invoicing/tax_rules.toml`), read once."""
    text = resources.files("services.invoicing").joinpath(RULES_FILE).read_text(encoding="utf-8")
    return parse_rule_book(text)


def load_rule_book(path: str | os.PathLike[str] | None = None) -> TaxRuleBook:
    """Read a rule book from `path` (a deployment's own file), or the shipped one when `path` is None."""
    if path is None:
        return default_rule_book()
    with open(path, encoding="utf-8") as f:
        return parse_rule_book(f.read())


def _entries(
    data: Mapping[str, Any], kind: str, fields: set[str], make: Callable[[Mapping[str, Any], str], T]
) -> tuple[Effective[T], ...]:
    raw = data.get(kind, [])
    if not isinstance(raw, list):
        raise TaxConfigError(f"{kind} must be an array of tables ([[{kind}]])")
    out = []
    for i, entry in enumerate(raw):
        where = f"{kind}[{i}]"
        if not isinstance(entry, dict):
            raise TaxConfigError(f"{where} must be a table")
        unknown = set(entry) - fields - {"effective_from", "effective_to", "source"}
        if unknown:
            raise TaxConfigError(f"{where}: unknown keys {sorted(unknown)}")
        start = _date(entry.get("effective_from"), f"{where}.effective_from")
        end = entry.get("effective_to")
        end = None if end is None else _date(end, f"{where}.effective_to")
        source = entry.get("source")
        if not isinstance(source, str) or not source.strip():
            raise TaxConfigError(f"{where}: every entry must name its source")
        try:
            value = make(entry, where)
        except KeyError as exc:
            raise TaxConfigError(f"{where}: missing {exc.args[0]}") from None
        out.append(Effective(start, end, value, source))
    return tuple(out)


def _date(value: Any, where: str) -> date:
    if type(value) is not date:  # TOML local dates parse to date; datetimes are refused
        raise TaxConfigError(f"{where} must be a date like 2024-04-29, got {value!r}")
    return value


def _str(entry: Mapping[str, Any], key: str, where: str) -> str:
    v = entry[key]
    if not isinstance(v, str) or not v.strip():
        raise TaxConfigError(f"{where}.{key} must be a non-empty string")
    return v


def _fen(entry: Mapping[str, Any], key: str, where: str) -> int:
    v = entry[key]
    if type(v) is not int or v < 0:
        raise TaxConfigError(f"{where}.{key} must be a non-negative integer amount in fen, got {v!r}")
    return v


def _months(entry: Mapping[str, Any], where: str) -> int:
    v = entry["months"]
    if type(v) is not int or v < 1:
        raise TaxConfigError(f"{where}.months must be a positive integer")
    return v


def _rate(value: Any, where: str, *, upper: Decimal = Decimal(1)) -> Decimal:
    if not isinstance(value, str):
        raise TaxConfigError(f'{where} must be a decimal string like "0.01" (never a float), got {value!r}')
    try:
        r = Decimal(value)
    except InvalidOperation:
        raise TaxConfigError(f"{where}: {value!r} is not a decimal number") from None
    if not r.is_finite() or r < 0 or r > upper:
        raise TaxConfigError(f"{where}: {value!r} must be between 0 and {upper}")
    return r


def _surcharge(entry: Mapping[str, Any], where: str) -> SurchargeRule:
    code, name = _str(entry, "code", where), _str(entry, "name", where)
    has_flat, has_loc = "rate" in entry, "rates_by_location" in entry
    if has_flat == has_loc:
        raise TaxConfigError(f"{where}: give exactly one of rate or rates_by_location")
    if has_flat:
        return SurchargeRule(code, name, rate=_rate(entry["rate"], f"{where}.rate"))
    table = entry["rates_by_location"]
    if not isinstance(table, dict) or not table:
        raise TaxConfigError(f"{where}.rates_by_location must be a non-empty table")
    rates = tuple((str(k), _rate(v, f"{where}.rates_by_location.{k}")) for k, v in table.items())
    return SurchargeRule(code, name, rates_by_location=rates)


def _relief(entry: Mapping[str, Any], where: str) -> SurchargeRelief:
    codes = entry["applies_to"]
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
        raise TaxConfigError(f"{where}.applies_to must be a non-empty list of surcharge codes")
    return SurchargeRelief(_rate(entry["factor"], f"{where}.factor"), frozenset(codes))


def _iit(entry: Mapping[str, Any], where: str) -> IitPrepayment:
    rate = _rate(entry["rate"], f"{where}.rate")
    raw = entry.get("three_flows_tiers")
    if raw is None:
        return IitPrepayment(rate)
    if not isinstance(raw, list) or not raw:
        raise TaxConfigError(f"{where}.three_flows_tiers must be a non-empty array")
    tiers: list[IitTier] = []
    previous = -1
    for i, t in enumerate(raw):
        w = f"{where}.three_flows_tiers[{i}]"
        if not isinstance(t, dict) or set(t) - {"up_to_year_sales_excl_fen", "rate"}:
            raise TaxConfigError(f"{w} must be a table with up_to_year_sales_excl_fen and rate")
        last = i == len(raw) - 1
        up_to = t.get("up_to_year_sales_excl_fen")
        if last != (up_to is None):
            raise TaxConfigError(
                f"{w}: every tier but the last needs up_to_year_sales_excl_fen; the last has none"
            )
        if up_to is not None:
            up_to = _fen(t, "up_to_year_sales_excl_fen", w)
            if up_to <= previous:
                raise TaxConfigError(f"{w}: tier limits must increase")
            previous = up_to
        tiers.append(IitTier(up_to, _rate(t.get("rate"), f"{w}.rate")))
    return IitPrepayment(rate, tuple(tiers))


def entries_in_force(book: TaxRuleBook, on: date) -> Iterable[tuple[str, Effective[Any]]]:
    """(kind, entry) for every entry in force on `on`: what docs and audits print."""
    for kind in (
        "regime",
        "vat_exemption_threshold",
        "vat_levy_rate",
        "vat_reduced_rate",
        "vat_waiver_reason",
        "surcharge",
        "surcharge_relief",
        "iit_prepayment",
        "rolling_cap",
    ):
        for e in getattr(book, kind):
            if e.in_force(on):
                yield kind, e
