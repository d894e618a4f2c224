"""The price-index methodology (编制方法) as one versioned config, and the document rendered from it.

`methodology.toml` (next to this package) is the single source: `Methodology.series_config` feeds the
computation, `render_methodology_markdown` writes the published methodology from the same object, so what is
computed and what is documented cannot drift apart. Parsing is pure (`parse_methodology(text)`);
`load_methodology()` reads the file bundled with the package.

The document follows the IOSCO Principles for Financial Benchmarks (2013) where they apply to a
marketplace-administered commodity price index.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

from .index_math import (
    TIERS,
    Basket,
    ExclusionReason,
    IndexPoint,
    MadOutlierFilter,
    Observation,
    Quorum,
    SeriesConfig,
    chained_index,
    compute_series_value,
)

UNITS = {"kg": "kg", "piece": "件 (piece)"}
FALLBACK_CHAIN = ("city", "province", "national")  # what services.kernel.regions.fallback_chain implements


class MethodologyError(ValueError):
    """The methodology file is inconsistent; the message names the key."""


@dataclass(frozen=True)
class CategorySpec:
    code: str
    name: str
    unit: str  # kg | piece
    grade: str
    min_volume: Decimal


@dataclass(frozen=True)
class FamilySpec:
    code: str
    name: str
    baskets: tuple[Basket, ...]  # sorted by effective date; the first is effective on the base date

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(sorted({c for b in self.baskets for c in b.quantities}))


@dataclass(frozen=True)
class Specification:
    currency: str
    price_unit: str
    tax_inclusive: bool
    tax_note: str
    delivery: str
    timezone: str
    window: str
    publication_time: str
    publication_lag_days: int
    regions: str


@dataclass(frozen=True)
class Governance:
    oversight: str
    review_months: int
    consultation_days: int
    notice_days: int
    complaints: str
    record_years: int


@dataclass(frozen=True)
class Methodology:
    version: str
    effective_from: date
    title: str
    administrator: str
    specification: Specification
    tiers: tuple[str, ...]
    tier_descriptions: Mapping[str, str]
    outliers: MadOutlierFilter
    min_observations: int
    min_counterparties: int
    fallback_chain: tuple[str, ...]
    base_date: date
    base_value: int
    index_places: int
    max_carry_days: int
    late_data_days: int
    notice_fields: tuple[str, ...]
    governance: Governance
    confidentiality: str
    categories: Mapping[str, CategorySpec]
    families: Mapping[str, FamilySpec]

    def series_config(self, category: str) -> SeriesConfig:
        """The rules of one category's series (its minimum volume is per category)."""
        try:
            spec = self.categories[category]
        except KeyError:
            raise KeyError(f"category {category!r} is not priced by methodology {self.version}") from None
        return _series_config(self, spec.min_volume)

    def series_configs(self) -> dict[str, SeriesConfig]:
        return {code: self.series_config(code) for code in self.categories}

    def family_index(
        self, family: str, daily_prices: Mapping[date, Mapping[str, int | None]], days: Any = None
    ) -> list[IndexPoint]:
        """The chain-linked index of a family from daily component prices (fen per unit)."""
        spec = self.families[family]
        return chained_index(
            daily_prices,
            spec.baskets,
            base_value=self.base_value,
            max_carry_days=self.max_carry_days,
            places=self.index_places,
            days=days,
        )


@functools.lru_cache(maxsize=256)
def _series_config_cached(
    version: str, outliers: MadOutlierFilter, quorum: Quorum, tiers: tuple[str, ...]
) -> SeriesConfig:
    return SeriesConfig(version, outliers, quorum, tiers)


def _series_config(m: Methodology, min_volume: Decimal) -> SeriesConfig:
    return _series_config_cached(
        m.version, m.outliers, Quorum(m.min_observations, m.min_counterparties, min_volume), m.tiers
    )


# --------------------------------------------------------------------------------------------- parsing


def _dec(value: Any, key: str) -> Decimal:
    if isinstance(value, float):
        raise MethodologyError(f'{key}: write decimals as strings ("{value}") so they are read exactly')
    try:
        d = Decimal(str(value))
    except Exception:  # noqa: BLE001 - anything Decimal() refuses is the same mistake
        raise MethodologyError(f"{key}: not a number: {value!r}") from None
    if not d.is_finite():
        raise MethodologyError(f"{key}: not a finite number: {value!r}")
    return d


def _get(table: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return table[key]
    except KeyError:
        raise MethodologyError(f"missing {where}{key}") from None


def _date(value: Any, key: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise MethodologyError(f"{key}: expected a TOML date (YYYY-MM-DD), got {value!r}")
    return value


def parse_methodology(text: str) -> Methodology:
    """A Methodology from the TOML text, checked for consistency (raises MethodologyError)."""
    cfg = tomllib.loads(text)
    spec_t = _get(cfg, "specification", "")
    inputs = _get(cfg, "inputs", "")
    out_t = _get(cfg, "outliers", "")
    quorum = _get(cfg, "quorum", "")
    comp = _get(cfg, "composite", "")
    rest = _get(cfg, "restatement", "")
    gov = _get(cfg, "governance", "")

    tiers = tuple(_get(inputs, "tiers", "inputs."))
    if not tiers or not set(tiers) <= set(TIERS) or len(set(tiers)) != len(tiers):
        raise MethodologyError(f"inputs.tiers: distinct names from {list(TIERS)}, got {list(tiers)}")
    descriptions = dict(inputs.get("tier_descriptions", {}))
    if missing := [t for t in tiers if t not in descriptions]:
        raise MethodologyError(f"inputs.tier_descriptions: describe {', '.join(missing)}")

    chain = tuple(_get(cfg.get("fallback", {}), "chain", "fallback."))
    if chain != FALLBACK_CHAIN:
        raise MethodologyError(
            f"fallback.chain must be {list(FALLBACK_CHAIN)} (the regions module implements it)"
        )

    categories: dict[str, CategorySpec] = {}
    for code, c in sorted(_get(cfg, "categories", "").items()):
        unit = _get(c, "unit", f"categories.{code}.")
        if unit not in UNITS:
            raise MethodologyError(f"categories.{code}.unit: one of {list(UNITS)}, got {unit!r}")
        min_volume = _dec(_get(c, "min_volume", f"categories.{code}."), f"categories.{code}.min_volume")
        if min_volume < 0:
            raise MethodologyError(f"categories.{code}.min_volume must be ≥ 0")
        categories[code] = CategorySpec(
            code, _get(c, "name", f"categories.{code}."), unit, c.get("grade", ""), min_volume
        )

    base_date = _date(_get(comp, "base_date", "composite."), "composite.base_date")
    families: dict[str, FamilySpec] = {}
    for code, f in sorted(_get(cfg, "families", "").items()):
        baskets = []
        for i, b in enumerate(_get(f, "baskets", f"families.{code}.")):
            where = f"families.{code}.baskets[{i}]"
            quantities = {
                k: _dec(v, f"{where}.quantities.{k}") for k, v in _get(b, "quantities", where + ".").items()
            }
            if unknown := sorted(set(quantities) - set(categories)):
                raise MethodologyError(f"{where}: unknown categories {', '.join(unknown)}")
            try:
                baskets.append(
                    Basket(_date(_get(b, "effective", where + "."), f"{where}.effective"), quantities)
                )
            except ValueError as exc:
                raise MethodologyError(f"{where}: {exc}") from None
        baskets.sort(key=lambda b: b.effective)
        if not baskets or baskets[0].effective != base_date:
            raise MethodologyError(
                f"families.{code}: the first basket must be effective on the base date {base_date}"
            )
        if len({b.effective for b in baskets}) != len(baskets):
            raise MethodologyError(f"families.{code}: two baskets share an effective date")
        families[code] = FamilySpec(code, _get(f, "name", f"families.{code}."), tuple(baskets))

    try:
        outliers = MadOutlierFilter(
            _dec(_get(out_t, "k", "outliers."), "outliers.k"),
            _dec(_get(out_t, "mad_scale", "outliers."), "outliers.mad_scale"),
            _dec(_get(out_t, "min_band_pct", "outliers."), "outliers.min_band_pct"),
        )
        Quorum(
            int(_get(quorum, "min_observations", "quorum.")),
            int(_get(quorum, "min_counterparties", "quorum.")),
        )
    except ValueError as exc:
        raise MethodologyError(str(exc)) from None

    return Methodology(
        version=str(_get(cfg, "version", "")),
        effective_from=_date(_get(cfg, "effective_from", ""), "effective_from"),
        title=_get(cfg, "title", ""),
        administrator=_get(cfg, "administrator", ""),
        specification=Specification(
            currency=_get(spec_t, "currency", "specification."),
            price_unit=_get(spec_t, "price_unit", "specification."),
            tax_inclusive=bool(_get(spec_t, "tax_inclusive", "specification.")),
            tax_note=spec_t.get("tax_note", ""),
            delivery=spec_t.get("delivery", ""),
            timezone=_get(spec_t, "timezone", "specification."),
            window=_get(spec_t, "window", "specification."),
            publication_time=_get(spec_t, "publication_time", "specification."),
            publication_lag_days=int(spec_t.get("publication_lag_days", 0)),
            regions=spec_t.get("regions", ""),
        ),
        tiers=tiers,
        tier_descriptions={t: descriptions[t] for t in tiers},
        outliers=outliers,
        min_observations=int(quorum["min_observations"]),
        min_counterparties=int(quorum["min_counterparties"]),
        fallback_chain=chain,
        base_date=base_date,
        base_value=int(_get(comp, "base_value", "composite.")),
        index_places=int(comp.get("index_places", 2)),
        max_carry_days=int(comp.get("max_carry_days", 0)),
        late_data_days=int(_get(rest, "late_data_days", "restatement.")),
        notice_fields=tuple(rest.get("notice_fields", ())),
        governance=Governance(
            oversight=_get(gov, "oversight", "governance."),
            review_months=int(_get(gov, "review_months", "governance.")),
            consultation_days=int(_get(gov, "consultation_days", "governance.")),
            notice_days=int(_get(gov, "notice_days", "governance.")),
            complaints=gov.get("complaints", ""),
            record_years=int(_get(gov, "record_years", "governance.")),
        ),
        confidentiality=cfg.get("confidentiality", {}).get("statement", ""),
        categories=categories,
        families=families,
    )


@functools.lru_cache(maxsize=1)
def load_methodology() -> Methodology:
    """The methodology bundled with the pricing service (services/pricing/methodology.toml), parsed once."""
    text = resources.files("services.pricing").joinpath("methodology.toml").read_text(encoding="utf-8")
    return parse_methodology(text)


# --------------------------------------------------------------------------------------------- document


def _num(d: Decimal | int) -> str:
    d = Decimal(d)
    return format(d.normalize(), "f") if d != 0 else "0"


def _yuan(fen: int | Decimal) -> str:
    return _num((Decimal(fen) / 100).quantize(Decimal("0.01")))


def _worked_example(m: Methodology) -> list[str]:
    """A small series computed by the real code with this methodology's numbers."""
    category = "metal.steel" if "metal.steel" in m.categories else sorted(m.categories)[0]
    spec = m.categories[category]
    config = m.series_config(category)
    unit_qty = max(spec.min_volume, Decimal(1))
    rows = [(200, 1), (205, 2), (198, 1), (210, 1), (202, 2), (900, 1)]  # (fen per unit, share of unit_qty)
    obs = [
        Observation(
            category,
            "110000",
            price,
            unit_qty * share,
            f"party-{i % 4}",
            m.tiers[0],
            f"ex-{i}",
            datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, (price, share) in enumerate(rows)
    ]
    res = compute_series_value(obs, config)
    unit = UNITS[spec.unit]
    lines = [
        f"Six {m.tiers[0]} inputs for {spec.name} ({category}), "
        f"prices in fen per {unit} and quantities in {unit}:",
        "",
        "| price (fen) | quantity | kept? |",
        "|---:|---:|---|",
    ]
    reasons = {e.source_id: e.reason.value for e in res.exclusions}
    for o in sorted(obs, key=lambda o: o.unit_price_fen):
        lines.append(f"| {o.unit_price_fen} | {_num(o.qty)} | {reasons.get(o.source_id, 'kept')} |")
    band = f"[{_num(res.band_low_fen)}, {_num(res.band_high_fen)}]" if res.median_fen is not None else "n/a"
    lines += [
        "",
        f"Median = {_num(res.median_fen) if res.median_fen is not None else 'n/a'} fen; band = {band} fen; "
        f"kept {res.n_obs}, excluded {res.n_excluded}; volume {_num(res.volume)} {unit}; "
        f"status **{res.status}**"
        + (
            f"; value = **{res.value_fen} fen** ({_yuan(res.value_fen)} yuan) per {unit}."
            if res.published
            else "."
        ),
    ]
    return lines


def _p(text: str) -> str:
    """One Markdown paragraph or list item from wrapped source text (runs of whitespace become one space)."""
    return " ".join(text.split())


def render_methodology_markdown(config: Methodology) -> str:
    """The published methodology document (Markdown), generated from the config the computation uses."""
    m = config
    s = m.specification
    o = m.outliers
    g = m.governance
    k, scale, floor = _num(o.k), _num(o.mad_scale), _num(o.min_band_pct)
    reasons = ", ".join(f"`{r.value}`" for r in ExclusionReason)
    tax = "tax-inclusive (含税)" if s.tax_inclusive else "tax-exclusive (不含税)"
    tier_list = [f"{i + 1}. **{t}**: {m.tier_descriptions[t]}" for i, t in enumerate(m.tiers)]
    category_rows = [
        f"| `{c.code}` | {c.name} | {UNITS[c.unit]} | {c.grade} | {_num(c.min_volume)} {UNITS[c.unit]} |"
        for c in m.categories.values()
    ]
    family_rows = []
    for f in m.families.values():
        for b in f.baskets:
            basket = ", ".join(
                f"{m.categories[c].name} `{c}` {_num(q)} {UNITS[m.categories[c].unit]}"
                for c, q in b.quantities.items()
            )
            family_rows.append(f"| `{f.code}` | {f.name} | {b.effective.isoformat()} | {basket} |")

    lines: list[str] = [
        f"# {m.title}: methodology {m.version}",
        "",
        f"- Methodology version: **{m.version}**, effective from {m.effective_from.isoformat()}.",
        f"- Administrator: {m.administrator}.",
        "- Every published value and index level names the methodology version that produced it.",
        _p("""- This document is generated from the same configuration the calculation reads;
              it cannot differ from it."""),
        "",
        "## 1. Specification",
        "",
        _p("""Each price series is one category × region × day: the price at which recyclables of the
              stated grade changed hands on the platform and in verified deals."""),
        "",
        f"- Currency: {s.currency}. Unit of price: {s.price_unit}.",
        f"- Tax: {tax}. {s.tax_note}",
        f"- Delivery basis: {s.delivery}.",
        f"- Observation window: {s.window}.",
        f"- Publication: {s.publication_time} {s.timezone}, "
        f"{s.publication_lag_days} day(s) after the window closes.",
        f"- Regions: {s.regions}.",
        "",
        "| code | name | unit | grade | minimum volume per series and day |",
        "|---|---|---|---|---|",
        *category_rows,
        "",
        "## 2. Inputs and their hierarchy",
        "",
        "Accepted inputs, in order of preference:",
        "",
        *tier_list,
        "",
        _p("""Listing asks (prices a seller hopes for) never count. Every input is tagged with its tier and
              source. Deals between related parties (self-dealing, e.g. a collector buying from its own
              account or an affiliated firm) are excluded with the reason `related_party`; so are inputs of
              a tier this methodology does not accept (`ineligible_tier`) and inputs with a non-positive
              quantity (`invalid_quantity`)."""),
        "",
        _p(f"""Tier preference: a series is first computed from **{m.tiers[0]}** inputs alone. Only if these
               do not reach the quorum after outlier removal is the next tier added, and so on. When a level
               reaches the quorum, the inputs of the tiers it did not need are disclosed as excluded
               (`lower_tier_not_needed`)."""),
        "",
        "## 3. Data sufficiency (quorum)",
        "",
        "A value is published only when the inputs kept after outlier removal reach all of:",
        "",
        f"- at least **{m.min_observations}** observations;",
        _p(f"""- at least **{m.min_counterparties}** distinct counterparties (the price-setting party: the
               buyer in a pickup or lot trade, the quoting firm for a bid or offer);"""),
        "- at least the category's minimum volume (table in section 1).",
        "",
        "Otherwise the series is **insufficient data** for that day (see section 6).",
        "",
        "## 4. Outliers",
        "",
        "A deterministic filter on the unit prices p of the candidate inputs:",
        "",
        "- median m = median(p); MAD = median(|p − m|), each input one vote whatever its volume;",
        _p(f"""- an input is kept when |p − m| ≤ max({k} × {scale} × MAD, {floor} % × |m|), bounds included;
               otherwise it is excluded as `outlier_low` or `outlier_high`."""),
        "",
        _p(f"""The factor {scale} scales the MAD to the standard deviation of normally distributed prices, so
               k = {k} means a {k}-sigma band. The band never narrows below {floor} % of the median: when more
               than half of the inputs share one price the MAD is 0, and a pure MAD band would exclude a deal
               one fen away. With a median of 0 and a MAD of 0 only inputs at 0 are kept. With one or two
               inputs nothing is excluded. The computation is exact (integer arithmetic), so the same inputs
               always give the same exclusions."""),
        "",
        "## 5. Calculation",
        "",
        _p("""Value = Σ(pᵢ × qᵢ) / Σ qᵢ over the kept inputs (volume-weighted average price), rounded
              half-up to the fen. The result does not depend on the order in which inputs arrive."""),
        "",
        "Worked example (computed by the production code with this methodology):",
        "",
        *_worked_example(m),
        "",
        "## 6. Fallbacks",
        "",
        _p(f"""A city without a published value for the day is answered from the nearest wider region in the
               chain {" → ".join(m.fallback_chain)} that has one. Such a value is always flagged **stale**
               and names the region it comes from; it is never presented as the city's own. If no region in
               the chain has a value, the answer is **insufficient data**. There is no silent carry-forward
               of an earlier day's value."""),
        "",
        "## 7. Family and composite indices",
        "",
        f"Fixed-basket Laspeyres indices, base date {m.base_date.isoformat()} = {m.base_value}:",
        "",
        f"    I_t = {m.base_value} × Σ(p_t,i × q_0,i) / Σ(p_0,i × q_0,i)",
        "",
        _p("""where p_0 are the component prices on the base date and q_0 the basket quantities (in each
              component's unit). When the basket changes, the index is chain-linked on the new basket's
              effective date L:"""),
        "",
        "    I_t = I_L × Σ(p_t,i × q_new,i) / Σ(p_L,i × q_new,i)   for t ≥ L",
        "",
        _p(f"""where I_L is the level computed with the previous basket on date L, so the series is
               continuous. Levels are computed exactly and published rounded half-up to {m.index_places}
               decimals."""),
        "",
        _p(f"""A component without a value on a day carries its last value forward for at most
               {m.max_carry_days} calendar day(s); the index is then published with that component listed as
               stale. Beyond that the index is **insufficient data** for the day. A base or link date must
               have every component's price (fresh or carried within the same limit)."""),
        "",
        "| family | name | basket effective | basket quantities q_0 |",
        "|---|---|---|---|",
        *family_rows,
        "",
        "## 8. What is published with each value",
        "",
        _p(f"""Value (or insufficient data), date, region, and whether the value is stale and from which
               region; the number of inputs used and excluded, the exclusions counted by reason ({reasons}),
               total volume, the number of distinct counterparties, the tiers used, the quorum shortfall when
               insufficient, and the methodology version."""),
        "",
        "## 9. Restatements and corrections",
        "",
        _p(f"""Inputs arriving up to {m.late_data_days} days late, and any error found, lead to a
               restatement: a new version of the value, never an edit. Each restatement is published with a
               correction notice giving {", ".join(m.notice_fields)}. Earlier versions stay readable; history
               is never overwritten."""),
        "",
        "## 10. Confidentiality of contributors",
        "",
        _p(f"""{m.confidentiality} Because the platform both operates the marketplace and publishes the
               indices, no output (values, disclosures, notices, exports) contains a contributor's identity,
               and the minimum counterparty count prevents any one party's prices from being read off a
               published value."""),
        "",
        "## 11. Governance, review and changes",
        "",
        _p(f"""- Oversight: {g.oversight}. It approves this methodology and every change, reviews the
               exclusions and restatements, and handles conflicts of interest between trading and
               publishing."""),
        _p(f"""- Review: at least every {g.review_months} months, including the basket quantities and whether
               each series still reflects an active market."""),
        _p(f"""- Changes: material changes are proposed publicly with a {g.consultation_days}-day consultation
               and announced at least {g.notice_days} days before they take effect, under a new version
               number. Discontinuing a series follows the same notice, with a named replacement where one
               exists."""),
        f"- Complaints: {g.complaints}.",
        "",
        "## 12. Audit trail",
        "",
        _p(f"""Raw inputs with their tier and source, every exclusion and its reason, the calculation and its
               time are kept immutable for at least {g.record_years} years, so any published value can be
               reproduced from the records and the methodology version it names."""),
        "",
        "## IOSCO Principles for Financial Benchmarks: where this document addresses them",
        "",
        "| principle | section |",
        "|---|---|",
        "| 1–5 governance, oversight, conflicts of interest, controls | 11 |",
        "| 6 benchmark design | 1, 7 |",
        "| 7 data sufficiency | 3, 6 |",
        "| 8 hierarchy of data inputs | 2 |",
        "| 9 transparency of determinations | 4, 5, 8 |",
        "| 10 periodic review | 11 |",
        "| 11 content of the methodology | this document |",
        "| 12 changes to the methodology | 11 |",
        "| 13 transition | 11 |",
        "| 14–15 submitters and data collection | 2 |",
        "| 16 complaints | 11 |",
        "| 17–18 audits and audit trail | 12 |",
        "| 19 cooperation with regulators | records in 12 are available to competent authorities |",
        "",
    ]
    return "\n".join(lines)
