"""Price-index arithmetic (再生资源价格指数): pure functions over plain dataclasses, no I/O.

Money is integer fen (分) per unit of the category (kg or piece/件); quantities are Decimal. Every rule below
is exact (integers, Decimal, Fraction) so that the same inputs give the same published value on any machine,
in any input order, on the per-series path and on the vectorised path alike.

Per category × region × day ("a series"):

1. Inputs that never count are set aside with a reason: related-party deals (self-dealing), tiers the
   methodology does not accept, non-positive quantities.
2. Tier preference (inputs hierarchy): try the most preferred tier alone (concluded platform transactions);
   if, after outlier filtering, it does not reach the quorum, widen to the next tier (verified third-party
   deals), then the next (firm bids/offers). The first level that reaches quorum is used and the unused lower
   tiers are disclosed as excluded ("lower_tier_not_needed").
3. Outliers (`MadOutlierFilter`): keep p when |p − median| ≤ max(k · 1.4826 · MAD, min_band_pct % · |median|).
   1.4826 scales the MAD to the standard deviation of a normal distribution, so k = 3 means "3 sigma".
   The band never narrows below min_band_pct % of the median: when more than half of the inputs share one
   price the MAD is 0, and a pure MAD rule would throw out a deal one fen away.
4. Quorum (`Quorum`): minimum count, distinct counterparties and volume of the kept inputs.
5. Value: volume-weighted average price of the kept inputs, half-up to the fen.

Composite and family indices: fixed-basket Laspeyres, base = 100, chain-linked when the basket changes
(`chained_index`).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # numpy is imported lazily: only the vectorised path needs it
    import numpy as np

TIERS: tuple[str, ...] = ("transaction", "verified_deal", "quote")
"""Input tiers, most preferred first: concluded platform transactions (settled pickups, cleared lot trades),
verified third-party deals, firm bids/offers. Listing asks are not a tier: they can never be an input."""
TIER_CODES: dict[str, int] = {t: i for i, t in enumerate(TIERS)}

PUBLISHED = "published"
INSUFFICIENT_DATA = "insufficient_data"
Status = Literal["published", "insufficient_data"]


class ExclusionReason(StrEnum):
    RELATED_PARTY = "related_party"
    INELIGIBLE_TIER = "ineligible_tier"
    INVALID_QUANTITY = "invalid_quantity"
    LOWER_TIER_NOT_NEEDED = "lower_tier_not_needed"
    OUTLIER_LOW = "outlier_low"
    OUTLIER_HIGH = "outlier_high"


# Codes of `BatchResult.row_reason` (0 = the row counts in the series).
USED = 0
REASON_CODES: dict[int, ExclusionReason] = {i + 1: r for i, r in enumerate(ExclusionReason)}
_CODE_OF: dict[ExclusionReason, int] = {r: c for c, r in REASON_CODES.items()}


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Observation:
    """One price input. `counterparty_id` is the price-setting party (the buyer in a pickup or lot trade,
    the quoting firm for a bid/offer); it never leaves the pricing service."""

    category: str
    city_code: str
    unit_price_fen: int
    qty: Decimal
    counterparty_id: str
    tier: str
    source_id: str
    observed_at: datetime
    related_party: bool = False

    def __post_init__(self) -> None:
        if self.tier not in TIER_CODES:
            raise ValueError(f"unknown input tier {self.tier!r}; one of {', '.join(TIERS)}")
        if isinstance(self.unit_price_fen, bool) or not isinstance(self.unit_price_fen, int):
            raise ValueError(f"unit_price_fen must be an int (fen), got {self.unit_price_fen!r}")
        if not isinstance(self.qty, Decimal) or not self.qty.is_finite():
            raise ValueError(f"qty must be a finite Decimal, got {self.qty!r}")


# --------------------------------------------------------------------------------------------- rules


@functools.lru_cache(maxsize=64)
def _filter_ratios(k: Decimal, mad_scale: Decimal, min_band_pct: Decimal) -> tuple[int, int, int, int]:
    ks_num, ks_den = (k * mad_scale).as_integer_ratio()  # Decimal products of short decimals are exact
    f_num, f_den = min_band_pct.as_integer_ratio()
    return ks_num, ks_den, f_num, f_den * 100


@dataclass(frozen=True, slots=True)
class Band:
    """The outlier band of one set of prices, kept exactly: 2 × median and 4 × MAD are integers."""

    median2: int
    mad4: int
    rule: MadOutlierFilter

    @property
    def median_fen(self) -> Decimal:
        return Decimal(self.median2) / 2

    @property
    def mad_fen(self) -> Decimal:
        return Decimal(self.mad4) / 4

    @property
    def half_width_fen(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 60
            by_mad = self.rule.k * self.rule.mad_scale * self.mad_fen
            floor = self.rule.min_band_pct / 100 * abs(self.median_fen)
            return max(by_mad, floor)

    @property
    def low_fen(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 60
            return self.median_fen - self.half_width_fen

    @property
    def high_fen(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 60
            return self.median_fen + self.half_width_fen

    def classify(self, unit_price_fen: int) -> ExclusionReason | None:
        """None when the price is inside the band (bounds included), else which side it fell out on."""
        dev2 = abs(2 * unit_price_fen - self.median2)  # = 2·|p − median|, exact
        if self.rule.inside(dev2, self.median2, self.mad4):
            return None
        return (
            ExclusionReason.OUTLIER_LOW if 2 * unit_price_fen < self.median2 else ExclusionReason.OUTLIER_HIGH
        )


@dataclass(frozen=True, slots=True)
class MadOutlierFilter:
    """Rule: keep a price p when |p − median| ≤ max(k · mad_scale · MAD, min_band_pct/100 · |median|).

    MAD = median(|p_i − median|), unweighted (each input one vote, whatever its volume). mad_scale = 1.4826
    makes k·1.4826·MAD comparable to k standard deviations. The percentage floor keeps the band open when
    MAD is 0 or tiny (most inputs at one price); with a zero median and zero MAD only the median survives.
    With one or two inputs nothing is ever excluded (both sit exactly one MAD from their midpoint).
    """

    k: Decimal = Decimal(3)
    mad_scale: Decimal = Decimal("1.4826")
    min_band_pct: Decimal = Decimal(5)

    def __post_init__(self) -> None:
        for name in ("k", "mad_scale", "min_band_pct"):
            value = Decimal(getattr(self, name))
            if not value.is_finite() or value < 0:
                raise ValueError(f"outlier filter: {name} must be a non-negative number, got {value}")
            object.__setattr__(self, name, value)

    @property
    def integer_ratios(self) -> tuple[int, int, int, int]:
        """(ks_num, ks_den, floor_num, floor_den): k·mad_scale and min_band_pct/100 as exact fractions."""
        with localcontext() as ctx:
            ctx.prec = 60
            return _filter_ratios(self.k, self.mad_scale, self.min_band_pct)

    def inside(self, dev2: int, median2: int, mad4: int) -> bool:
        """|p − m| ≤ ks·MAD ⇔ dev2/2 ≤ ks·mad4/4 ⇔ 2·dev2·ks_den ≤ ks_num·mad4 (likewise the floor)."""
        ks_num, ks_den, f_num, f_den = self.integer_ratios
        return 2 * dev2 * ks_den <= ks_num * mad4 or dev2 * f_den <= f_num * abs(median2)

    def band(self, prices: Sequence[int]) -> Band:
        if not prices:
            raise ValueError("no prices to filter")
        s = sorted(prices)
        n = len(s)
        lo, hi = (n - 1) // 2, n // 2
        median2 = s[lo] + s[hi]
        d = sorted(abs(2 * p - median2) for p in s)
        return Band(median2=median2, mad4=d[lo] + d[hi], rule=self)


@dataclass(frozen=True, slots=True)
class Quorum:
    """Rule: a series value is published only when its kept inputs reach every minimum."""

    min_observations: int = 5
    min_counterparties: int = 3
    min_volume: Decimal = Decimal(0)  # in the category's unit (kg or piece)

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_volume", Decimal(self.min_volume))
        if self.min_observations < 1 or self.min_counterparties < 1 or self.min_volume < 0:
            raise ValueError("quorum: at least one observation and one counterparty; volume ≥ 0")

    def shortfall(self, n_obs: int, counterparties: int, volume: Decimal) -> tuple[str, ...]:
        """Why the quorum is not met (empty when it is), in a fixed order, for disclosure."""
        missing = []
        if n_obs < self.min_observations:
            missing.append(f"observations {n_obs} < {self.min_observations}")
        if counterparties < self.min_counterparties:
            missing.append(f"counterparties {counterparties} < {self.min_counterparties}")
        if volume < self.min_volume:
            missing.append(f"volume {_plain(volume)} < {_plain(self.min_volume)}")
        return tuple(missing)


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != 0 else "0"


@dataclass(frozen=True, slots=True)
class SeriesConfig:
    """Everything `compute_series_value` needs; built from the methodology (`Methodology.series_config`)."""

    methodology_version: str = "unversioned"
    outliers: MadOutlierFilter = field(default_factory=MadOutlierFilter)
    quorum: Quorum = field(default_factory=Quorum)
    tiers: tuple[str, ...] = TIERS  # accepted tiers, most preferred first

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        if not self.tiers or len(set(self.tiers)) != len(self.tiers) or not set(self.tiers) <= set(TIERS):
            raise ValueError(f"tiers must be distinct names from {TIERS}, got {self.tiers}")


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Exclusion:
    source_id: str  # internal audit reference; never published (see SeriesResult.disclosure)
    reason: ExclusionReason


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """One series value with everything needed to disclose and audit it.

    n_obs counts the inputs the value is computed from (or would be, when insufficient); n_obs + n_excluded
    is the number of inputs given.
    """

    status: Status
    value_fen: int | None
    n_obs: int
    n_excluded: int
    exclusions: tuple[Exclusion, ...]
    volume: Decimal
    counterparties: int
    tiers_used: tuple[str, ...]
    median_fen: Decimal | None
    band_low_fen: Decimal | None
    band_high_fen: Decimal | None
    shortfall: tuple[str, ...]
    methodology_version: str

    @property
    def published(self) -> bool:
        return self.status == PUBLISHED

    @property
    def exclusion_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.exclusions:
            counts[e.reason.value] = counts.get(e.reason.value, 0) + 1
        return dict(sorted(counts.items()))

    def disclosure(self) -> dict[str, object]:
        """What may be published with the value: counts and reasons, never who contributed."""
        return {
            "status": self.status,
            "value_fen": self.value_fen,
            "n_obs": self.n_obs,
            "n_excluded": self.n_excluded,
            "excluded_by_reason": self.exclusion_counts,
            "volume": _plain(self.volume),
            "counterparties": self.counterparties,
            "tiers_used": list(self.tiers_used),
            "shortfall": list(self.shortfall),
            "methodology_version": self.methodology_version,
        }


# --------------------------------------------------------------------------------------------- arithmetic


def div_half_up(num: int, den: int) -> int:
    """num / den rounded half away from zero (as money.to_fen), exactly, for den > 0."""
    if den <= 0:
        raise ValueError("denominator must be positive")
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q


def _scaled_ints(qtys: Sequence[Decimal]) -> tuple[list[int], int]:
    """Quantities as integers of a common 10^-places unit, exactly."""
    places = max((max(0, -q.as_tuple().exponent) for q in qtys), default=0)  # type: ignore[operator]
    out = []
    for q in qtys:
        sign, digits, exp = q.as_tuple()
        n = int("".join(map(str, digits)) or "0") * 10 ** (exp + places)  # type: ignore[operator]
        out.append(-n if sign else n)
    return out, places


def volume_weighted_average_fen(prices_and_qtys: Iterable[tuple[int, Decimal]]) -> int:
    """Σ(p·q) / Σq, half-up to the fen, exact for any Decimal quantities (Σq must be positive)."""
    pairs = list(prices_and_qtys)
    q_int, _ = _scaled_ints([q for _, q in pairs])
    den = sum(q_int)
    if den <= 0:
        raise ValueError("total quantity must be positive")
    return div_half_up(sum(p * q for (p, _), q in zip(pairs, q_int, strict=True)), den)


def _volume(qtys: Sequence[Decimal]) -> Decimal:
    q_int, places = _scaled_ints(qtys)
    return Decimal(sum(q_int)).scaleb(-places)


def _canonical(o: Observation) -> tuple:
    return (
        TIER_CODES[o.tier],
        o.unit_price_fen,
        o.qty,
        o.counterparty_id,
        o.source_id,
        o.category,
        o.city_code,
        o.related_party,
        o.observed_at.isoformat(),
    )


def compute_series_value(
    observations: Iterable[Observation],
    config: SeriesConfig | None = None,
    *,
    is_related_party: Callable[[Observation], bool] | None = None,
) -> SeriesResult:
    """The value of one series (category × region × day) from its observations; see the module docstring.

    `is_related_party` is the self-dealing hook: any observation for which it returns True (or that is
    flagged `related_party`) is excluded with reason "related_party". All observations must be of one
    category; they may come from several cities (a province's or the national series).
    """
    config = config or SeriesConfig()
    obs = sorted(observations, key=_canonical)  # order-independence: every later step sees one order
    if len({o.category for o in obs}) > 1:
        raise ValueError("one series is one category: got " + ", ".join(sorted({o.category for o in obs})))
    excluded: list[Exclusion] = []
    eligible: list[Observation] = []
    rank = {t: i for i, t in enumerate(config.tiers)}
    for o in obs:
        if o.related_party or (is_related_party is not None and is_related_party(o)):
            excluded.append(Exclusion(o.source_id, ExclusionReason.RELATED_PARTY))
        elif o.tier not in rank:
            excluded.append(Exclusion(o.source_id, ExclusionReason.INELIGIBLE_TIER))
        elif o.qty <= 0:
            excluded.append(Exclusion(o.source_id, ExclusionReason.INVALID_QUANTITY))
        else:
            eligible.append(o)

    last = len(config.tiers) - 1
    for level in range(len(config.tiers)):
        candidates = [o for o in eligible if rank[o.tier] <= level]
        band = config.outliers.band([o.unit_price_fen for o in candidates]) if candidates else None
        kept: list[Observation] = []
        outliers: list[Exclusion] = []
        for o in candidates:
            reason = band.classify(o.unit_price_fen) if band else None
            if reason is None:
                kept.append(o)
            else:
                outliers.append(Exclusion(o.source_id, reason))
        qtys = [o.qty for o in kept]
        volume = _volume(qtys)
        counterparties = len({o.counterparty_id for o in kept})
        shortfall = config.quorum.shortfall(len(kept), counterparties, volume)
        if shortfall and level < last:
            continue
        unused = [
            Exclusion(o.source_id, ExclusionReason.LOWER_TIER_NOT_NEEDED)
            for o in eligible
            if rank[o.tier] > level
        ]
        exclusions = tuple(sorted(excluded + outliers + unused, key=lambda e: (e.reason.value, e.source_id)))
        value = None if shortfall else volume_weighted_average_fen((o.unit_price_fen, o.qty) for o in kept)
        return SeriesResult(
            status=INSUFFICIENT_DATA if shortfall else PUBLISHED,
            value_fen=value,
            n_obs=len(kept),
            n_excluded=len(exclusions),
            exclusions=exclusions,
            volume=volume,
            counterparties=counterparties,
            tiers_used=config.tiers[: level + 1],
            median_fen=band.median_fen if band else None,
            band_low_fen=band.low_fen if band else None,
            band_high_fen=band.high_fen if band else None,
            shortfall=shortfall,
            methodology_version=config.methodology_version,
        )
    raise AssertionError("unreachable: the last tier level always returns")


# --------------------------------------------------------------------------------------------- fallback


@dataclass(frozen=True, slots=True)
class ResolvedValue:
    """The value answered for a region: its own, or a wider region's flagged stale, or none."""

    region_code: str  # the region asked for
    status: Status
    value_fen: int | None
    source_region: str | None  # whose series gave the value
    stale: bool  # True when the value is another (wider) region's: never shown as the asked region's own
    result: SeriesResult | None
    tried: tuple[str, ...]


def resolve_with_fallback(
    results_by_region: Mapping[str, SeriesResult], chain: Sequence[str]
) -> ResolvedValue:
    """The first published result along `chain` (asked region first, e.g. regions.fallback_chain(city)).

    There is no carry-forward of an earlier day here: a region with nothing published anywhere along the
    chain answers "insufficient_data".
    """
    if not chain:
        raise ValueError("empty fallback chain")
    asked = chain[0]
    tried: list[str] = []
    for region_code in chain:
        tried.append(region_code)
        res = results_by_region.get(region_code)
        if res is not None and res.published:
            return ResolvedValue(
                asked, PUBLISHED, res.value_fen, region_code, region_code != asked, res, tuple(tried)
            )
    return ResolvedValue(asked, INSUFFICIENT_DATA, None, None, False, None, tuple(tried))


# --------------------------------------------------------------------------------------------- composites


@dataclass(frozen=True)
class Basket:
    """A fixed basket q_0 (quantity per component, in the component's unit) in force from `effective`."""

    effective: date
    quantities: Mapping[str, Decimal]

    def __post_init__(self) -> None:
        q = {k: Decimal(v) for k, v in sorted(self.quantities.items())}
        if any(not v.is_finite() or v < 0 for v in q.values()) or not any(v > 0 for v in q.values()):
            raise ValueError(f"basket from {self.effective}: quantities must be ≥ 0 with at least one > 0")
        object.__setattr__(self, "quantities", {k: v for k, v in q.items() if v > 0})


def laspeyres(
    prices: Mapping[str, int],
    reference_prices: Mapping[str, int],
    quantities: Mapping[str, Decimal],
    reference_level: Fraction | int = 100,
) -> Fraction:
    """reference_level × Σ(p_t,i · q_0,i) / Σ(p_0,i · q_0,i), exactly; every component needs both prices."""
    num = Fraction(0)
    den = Fraction(0)
    for code, q in sorted(quantities.items()):
        fq = Fraction(q)
        num += prices[code] * fq
        den += reference_prices[code] * fq
    if den <= 0:
        raise ValueError("the basket's value at reference prices must be positive")
    return Fraction(reference_level) * num / den


class ChainLinkError(ValueError):
    """A base or link date lacks the prices the index needs; the basket change must pick a date with data."""


@dataclass(frozen=True, slots=True)
class IndexPoint:
    day: date
    status: Status
    value: Decimal | None  # index points, half-up to the methodology's places
    basket_effective: date
    stale_components: tuple[str, ...]  # priced with a carried-forward price (≤ max_carry_days old)
    missing_components: tuple[str, ...]  # no price within the carry window: the point is insufficient_data


def _round_fraction(x: Fraction, places: int) -> Decimal:
    return Decimal(div_half_up(x.numerator * 10**places, x.denominator)).scaleb(-places)


class _PriceHistory:
    """Last known price of each component on or before a day, within a carry window."""

    def __init__(self, daily_prices: Mapping[date, Mapping[str, int | None]], max_carry_days: int):
        self.max_carry_days = max_carry_days
        self.days: dict[str, list[date]] = {}
        self.prices: dict[str, list[int]] = {}
        for day in sorted(daily_prices):
            for code, price in sorted(daily_prices[day].items()):
                if price is not None:
                    self.days.setdefault(code, []).append(day)
                    self.prices.setdefault(code, []).append(price)

    def price_on(self, code: str, day: date) -> tuple[int, bool] | None:
        """(price, stale) or None when nothing is known within max_carry_days before `day`."""
        days = self.days.get(code, [])
        i = bisect.bisect_right(days, day) - 1
        if i < 0 or (day - days[i]).days > self.max_carry_days:
            return None
        return self.prices[code][i], days[i] != day

    def basket_prices(self, basket: Basket, day: date) -> tuple[dict[str, int], list[str], list[str]]:
        prices: dict[str, int] = {}
        stale: list[str] = []
        missing: list[str] = []
        for code in basket.quantities:
            found = self.price_on(code, day)
            if found is None:
                missing.append(code)
            else:
                prices[code] = found[0]
                if found[1]:
                    stale.append(code)
        return prices, stale, missing


def chained_index(
    daily_prices: Mapping[date, Mapping[str, int | None]],
    baskets: Sequence[Basket],
    *,
    base_value: int | Decimal = 100,
    max_carry_days: int = 3,
    places: int = 2,
    days: Iterable[date] | None = None,
) -> list[IndexPoint]:
    """A chain-linked fixed-basket Laspeyres index over daily component prices (fen per unit).

    - The first basket's effective date is the base date: index = base_value there, with reference prices
      p_0 = that day's component prices.
    - From basket j's effective date (a link date) on: index_t = L_j × Σ p_t·q_j / Σ p_link·q_j, where L_j is
      the index computed with the previous basket on the link date and p_link the link date's prices; so the
      series is continuous across the change.
    - A component without a price on a day carries its last price forward for up to `max_carry_days`
      calendar days, listed in `stale_components`; beyond that the day is "insufficient_data" (value None)
      with the component in `missing_components`. Carried prices may serve as base or link prices; a base or
      link date with a component missing beyond the window raises ChainLinkError.

    Returns one point per day of `days` (default: every day of `daily_prices` on or after the base date).
    Exact (Fraction) throughout; only the published value is rounded, half-up to `places`.
    """
    if not baskets:
        raise ValueError("at least one basket")
    ordered = sorted(baskets, key=lambda b: b.effective)
    if len({b.effective for b in ordered}) != len(ordered):
        raise ValueError("two baskets share an effective date")
    history = _PriceHistory(daily_prices, max_carry_days)

    # Reference prices and levels of each basket, walking the chain from the base date.
    links: list[tuple[Basket, dict[str, int], Fraction]] = []
    level = Fraction(Decimal(base_value))
    for j, basket in enumerate(ordered):
        if j > 0:
            prev_basket, prev_ref, prev_level = links[-1]
            prices, _, missing = history.basket_prices(prev_basket, basket.effective)
            if missing:
                raise ChainLinkError(f"link date {basket.effective}: no price for {', '.join(missing)}")
            level = laspeyres(prices, prev_ref, prev_basket.quantities, prev_level)
        ref, _, missing = history.basket_prices(basket, basket.effective)
        if missing:
            what = "base" if j == 0 else "link"
            raise ChainLinkError(f"{what} date {basket.effective}: no price for {', '.join(missing)}")
        if sum(Fraction(q) * ref[c] for c, q in basket.quantities.items()) <= 0:
            raise ChainLinkError(
                f"basket from {basket.effective} has no positive value at its reference prices"
            )
        links.append((basket, ref, level))

    base_date = ordered[0].effective
    effective_dates = [b.effective for b in ordered]
    wanted = sorted(set(days) if days is not None else {d for d in daily_prices if d >= base_date})
    points: list[IndexPoint] = []
    for day in wanted:
        if day < base_date:
            raise ValueError(f"{day} is before the base date {base_date}")
        basket, ref, link_level = links[bisect.bisect_right(effective_dates, day) - 1]
        prices, stale, missing = history.basket_prices(basket, day)
        if missing:
            points.append(
                IndexPoint(day, INSUFFICIENT_DATA, None, basket.effective, tuple(stale), tuple(missing))
            )
            continue
        value = laspeyres(prices, ref, basket.quantities, link_level)
        points.append(
            IndexPoint(day, PUBLISHED, _round_fraction(value, places), basket.effective, tuple(stale), ())
        )
    return points


# --------------------------------------------------------------------------------------------- vectorised


@dataclass(frozen=True)
class ObservationColumns:
    """Observations as parallel integer arrays (one row per observation) for `compute_many`.

    series_id:       any int64 key per series, e.g. series_id_for(category_index, city_code).
                     Rows already sorted by series_id skip one sort.
    unit_price_fen:  int64.
    qty_milli:       int64 quantity × 1000 (the 3 places of money.parse_qty).
    counterparty:    int64 code of the price-setting party (equal codes = same party).
    tier:            int64 TIER_CODES value (0 transaction, 1 verified_deal, 2 quote; others: ineligible).
    related_party:   bool, or None for "no row is related-party".
    """

    series_id: np.ndarray
    unit_price_fen: np.ndarray
    qty_milli: np.ndarray
    counterparty: np.ndarray
    tier: np.ndarray
    related_party: np.ndarray | None = None

    def __post_init__(self) -> None:
        import numpy as np

        for name in ("series_id", "unit_price_fen", "qty_milli", "counterparty", "tier"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.int64))
        if self.related_party is not None:
            object.__setattr__(self, "related_party", np.ascontiguousarray(self.related_party, dtype=bool))
        n = len(self.series_id)
        lengths = {len(getattr(self, c)) for c in ("unit_price_fen", "qty_milli", "counterparty", "tier")}
        if self.related_party is not None:
            lengths.add(len(self.related_party))
        if lengths - {n}:
            raise ValueError("all columns must have the same length")

    def __len__(self) -> int:
        return len(self.series_id)


def series_id_for(category_index: int, city_code: str | int) -> int:
    """An int64 series key: category_index × 1,000,000 + the 6-digit region code (vectorises the same way)."""
    return int(category_index) * 1_000_000 + int(city_code)


def columns_from_observations(
    observations: Iterable[Observation],
    key: Callable[[Observation], object] = lambda o: (o.category, o.city_code),
) -> tuple[ObservationColumns, list[object], list[str]]:
    """Columns for compute_many from Observations: (columns, series keys by series_id, source ids by row).

    Quantities must have at most 3 decimal places (money.parse_qty); the series_id of a row is the index of
    its key in the sorted list of keys.
    """
    import numpy as np

    obs = list(observations)
    keys = sorted({key(o) for o in obs})  # type: ignore[type-var]
    key_index = {k: i for i, k in enumerate(keys)}
    parties = {c: i for i, c in enumerate(sorted({o.counterparty_id for o in obs}))}
    qty_milli = []
    for o in obs:
        milli = o.qty * 1000
        if milli != milli.to_integral_value():
            raise ValueError(f"{o.source_id}: quantity {o.qty} has more than 3 decimal places")
        qty_milli.append(int(milli))
    cols = ObservationColumns(
        series_id=np.array([key_index[key(o)] for o in obs], dtype=np.int64),
        unit_price_fen=np.array([o.unit_price_fen for o in obs], dtype=np.int64),
        qty_milli=np.array(qty_milli, dtype=np.int64),
        counterparty=np.array([parties[o.counterparty_id] for o in obs], dtype=np.int64),
        tier=np.array([TIER_CODES[o.tier] for o in obs], dtype=np.int64),
        related_party=np.array([o.related_party for o in obs], dtype=bool),
    )
    return cols, keys, [o.source_id for o in obs]


@dataclass(frozen=True)
class BatchResult:
    """Per-series results of compute_many as arrays (index i ↔ series_id[i], sorted ascending).

    value_fen is 0 where not published; median2 / mad4 are 2 × median and 4 × MAD of the widest level tried
    (meaningful where has_band). row_reason is aligned with the input rows: USED (0) or a REASON_CODES key.
    """

    series_id: np.ndarray
    published: np.ndarray
    value_fen: np.ndarray
    n_obs: np.ndarray
    n_excluded: np.ndarray
    counterparties: np.ndarray
    volume_milli: np.ndarray
    levels_used: np.ndarray  # how many tiers (of config.tiers) the value drew on
    has_band: np.ndarray
    median2: np.ndarray
    mad4: np.ndarray
    row_reason: np.ndarray
    row_group: np.ndarray  # index into series_id of each input row
    configs: tuple[SeriesConfig, ...]
    config_of_group: np.ndarray

    def __len__(self) -> int:
        return len(self.series_id)

    def result(self, i: int, exclusions: tuple[Exclusion, ...] = ()) -> SeriesResult:
        """The SeriesResult of the i-th series (pass its exclusions; to_series_results does)."""
        config = self.configs[int(self.config_of_group[i])]
        volume = Decimal(int(self.volume_milli[i])).scaleb(-3)
        n_obs, cps = int(self.n_obs[i]), int(self.counterparties[i])
        band = Band(int(self.median2[i]), int(self.mad4[i]), config.outliers) if self.has_band[i] else None
        published = bool(self.published[i])
        return SeriesResult(
            status=PUBLISHED if published else INSUFFICIENT_DATA,
            value_fen=int(self.value_fen[i]) if published else None,
            n_obs=n_obs,
            n_excluded=int(self.n_excluded[i]),
            exclusions=exclusions,
            volume=volume,
            counterparties=cps,
            tiers_used=config.tiers[: int(self.levels_used[i])],
            median_fen=band.median_fen if band else None,
            band_low_fen=band.low_fen if band else None,
            band_high_fen=band.high_fen if band else None,
            shortfall=() if published else config.quorum.shortfall(n_obs, cps, volume),
            methodology_version=config.methodology_version,
        )

    def reason_counts(self) -> np.ndarray:
        """Excluded rows per series and reason: shape (len(self), 1 + len(REASON_CODES)); column c counts
        REASON_CODES[c] (column 0 counts the rows used). Enough for public disclosure, no per-row objects."""
        import numpy as np

        width = 1 + len(REASON_CODES)
        flat = np.bincount(
            self.row_group * width + self.row_reason.astype(np.int64), minlength=len(self) * width
        )
        return flat.reshape(len(self), width)

    def to_series_results(self, source_ids: Sequence[str] | None = None) -> dict[int, SeriesResult]:
        """Every series as a SeriesResult keyed by series_id; exclusions name source_ids[row] (default: row).

        Costs one Python object per excluded row; for publication counts alone use reason_counts().
        """
        import numpy as np

        excluded = np.flatnonzero(self.row_reason != USED)
        excluded = excluded[np.argsort(self.row_group[excluded], kind="stable")]
        bounds = np.searchsorted(self.row_group[excluded], np.arange(len(self) + 1)).tolist()
        reason_of = [REASON_CODES.get(c) for c in range(1 + len(REASON_CODES))]
        rows = excluded.tolist()
        codes = self.row_reason[excluded].tolist()
        names = [source_ids[r] for r in rows] if source_ids is not None else [str(r) for r in rows]
        out: dict[int, SeriesResult] = {}
        for i, sid in enumerate(self.series_id.tolist()):
            a, b = bounds[i], bounds[i + 1]
            pairs = sorted(
                zip((reason_of[c] for c in codes[a:b]), names[a:b], strict=True),
                key=lambda x: (x[0].value, x[1]),
            )
            out[sid] = self.result(i, tuple(Exclusion(name, reason) for reason, name in pairs))
        return out


def _sorted_within_groups(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """values sorted ascending inside each group, groups in order (groups must be non-decreasing)."""
    import numpy as np

    if len(values) == 0:
        return values
    vmin = int(values.min())
    span = int(values.max()) - vmin
    vbits = max(span.bit_length(), 1)
    gbits = max((n_groups - 1).bit_length(), 1)
    if vbits + gbits <= 62:  # one packed int64 key: a single sort, several times faster than lexsort
        packed = (groups << vbits) | (values - vmin)
        packed.sort()
        return (packed & ((1 << vbits) - 1)) + vmin
    return values[np.lexsort((values, groups))]


def _segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments of the given lengths. int64 wrap-around cancels in the differences, so
    each sum is exact whenever it fits in int64 itself."""
    import numpy as np

    cs = np.zeros(len(values) + 1, dtype=np.int64)
    with np.errstate(over="ignore"):
        np.cumsum(values, out=cs[1:])
        ends = np.cumsum(counts)
        return cs[ends] - cs[ends - counts]


def compute_many(
    columns: ObservationColumns,
    config: SeriesConfig | Mapping[int, SeriesConfig] | None = None,
) -> BatchResult:
    """compute_series_value for many series at once, vectorised with numpy; same results, exactly.

    `config` is one SeriesConfig for every series, or a mapping series_id → SeriesConfig (e.g. per category,
    for the category's minimum volume); all configs must accept the same tiers in the same order. Every step
    is integer arithmetic; inputs too large for int64 fall back to the exact per-series path.
    """
    import numpy as np

    config = config or SeriesConfig()
    n = len(columns)
    sid = columns.series_id
    order = None
    if n > 1 and bool(np.any(sid[1:] < sid[:-1])):
        order = np.argsort(sid)  # any order inside a series gives the same result
    take = (lambda a: a[order]) if order is not None else (lambda a: a)
    sid_s = take(sid)
    price = take(columns.unit_price_fen)
    qty = take(columns.qty_milli)
    party = take(columns.counterparty)
    tier = take(columns.tier)
    related = take(columns.related_party) if columns.related_party is not None else None

    if n:
        starts = np.flatnonzero(np.r_[True, sid_s[1:] != sid_s[:-1]])
    else:
        starts = np.zeros(0, dtype=np.int64)
    series_ids = sid_s[starts]
    G = len(series_ids)
    rows_per_group = np.diff(np.r_[starts, n]).astype(np.int64)
    g = np.repeat(np.arange(G, dtype=np.int64), rows_per_group)

    # Per-group parameters.
    if isinstance(config, SeriesConfig):
        configs: tuple[SeriesConfig, ...] = (config,)
        cfg_idx = np.zeros(G, dtype=np.int64)
    else:
        distinct: dict[SeriesConfig, int] = {}
        idx = []
        for s in series_ids.tolist():
            try:
                c = config[s]
            except KeyError:
                raise KeyError(f"no SeriesConfig for series_id {s}") from None
            idx.append(distinct.setdefault(c, len(distinct)))
        configs = tuple(distinct) or (SeriesConfig(),)
        cfg_idx = np.array(idx, dtype=np.int64)
    tiers = configs[0].tiers
    if any(c.tiers != tiers for c in configs):
        raise ValueError("compute_many: all configs must accept the same tiers in the same order")
    ratios = [c.outliers.integer_ratios for c in configs]
    qmin = [
        (
            c.quorum.min_observations,
            c.quorum.min_counterparties,
            math.ceil(Fraction(c.quorum.min_volume) * 1000),
        )
        for c in configs
    ]  # volume ≥ v ⇔ milli ≥ ⌈1000·v⌉

    def per_group(values: list[int]) -> np.ndarray:
        return np.array(values, dtype=np.int64)[cfg_idx]

    # Pre-exclusions, in the same priority order as compute_series_value.
    reason = np.zeros(n, dtype=np.int8)
    rank_of_code = np.full(len(TIERS), -1, dtype=np.int64)
    for r, t in enumerate(tiers):
        rank_of_code[TIER_CODES[t]] = r
    known = (tier >= 0) & (tier < len(TIERS))
    rank = np.full(n, -1, dtype=np.int64)
    rank[known] = rank_of_code[tier[known]]
    if related is not None:
        reason[related] = _CODE_OF[ExclusionReason.RELATED_PARTY]
    reason[(reason == 0) & (rank < 0)] = _CODE_OF[ExclusionReason.INELIGIBLE_TIER]
    reason[(reason == 0) & (qty <= 0)] = _CODE_OF[ExclusionReason.INVALID_QUANTITY]
    eligible = reason == 0

    # Guards: every intermediate below must fit in int64 (band products; per-series Σq and Σp·q);
    # if one might not, take the exact per-series path instead.
    limit = 1 << 62
    if eligible.any():
        p_e = price[eligible]
        pmax_abs = max(abs(int(p_e.min())), abs(int(p_e.max())))
        spread = int(p_e.max()) - int(p_e.min())
        qmax = int(qty[eligible].max())
        if qmax * int(rows_per_group.max()) >= limit:
            return _compute_many_exact(columns, config)
        group_qty_max = int(_segment_sums(np.where(eligible, qty, 0), rows_per_group).max())
        ratio_max = max(max(r) for r in ratios)
        if 8 * max(spread, pmax_abs) * ratio_max >= limit or pmax_abs * group_qty_max >= limit:
            return _compute_many_exact(columns, config)

    ks_num = per_group([r[0] for r in ratios])
    ks_den = per_group([r[1] for r in ratios])
    f_num = per_group([r[2] for r in ratios])
    f_den = per_group([r[3] for r in ratios])
    min_obs = per_group([m[0] for m in qmin])
    min_cp = per_group([m[1] for m in qmin])
    min_vol = per_group([m[2] for m in qmin])

    # Counterparty codes packed beside the group index need to be small non-negative ints.
    gbits = max((G - 1).bit_length(), 1)
    if n and (int(party.min()) < 0 or int(party.max()).bit_length() + gbits > 62):
        _, party = np.unique(party, return_inverse=True)
        party = party.astype(np.int64)
    cbits = max(int(party.max()).bit_length() if n else 1, 1)

    published = np.zeros(G, dtype=bool)
    value = np.zeros(G, dtype=np.int64)
    n_obs = np.zeros(G, dtype=np.int64)
    cps = np.zeros(G, dtype=np.int64)
    vol = np.zeros(G, dtype=np.int64)
    levels_used = np.zeros(G, dtype=np.int64)
    has_band = np.zeros(G, dtype=bool)
    median2 = np.zeros(G, dtype=np.int64)
    mad4 = np.zeros(G, dtype=np.int64)
    unresolved = np.ones(G, dtype=bool)
    low_code = _CODE_OF[ExclusionReason.OUTLIER_LOW]
    high_code = _CODE_OF[ExclusionReason.OUTLIER_HIGH]
    lower_tier_code = _CODE_OF[ExclusionReason.LOWER_TIER_NOT_NEEDED]

    last = len(tiers) - 1
    for level in range(len(tiers)):
        cand = eligible & (rank <= level) & unresolved[g]
        idx = np.flatnonzero(cand)
        gi = g[idx]
        p = price[idx]
        cnt = np.bincount(gi, minlength=G).astype(np.int64)
        start = np.cumsum(cnt) - cnt
        has = cnt > 0
        lo = (start + (cnt - 1) // 2)[has]
        hi = (start + cnt // 2)[has]
        m2 = np.zeros(G, dtype=np.int64)
        md4 = np.zeros(G, dtype=np.int64)
        ps = _sorted_within_groups(p, gi, G)
        m2[has] = ps[lo] + ps[hi]
        dev2 = np.abs(2 * p - m2[gi])
        ds = _sorted_within_groups(dev2, gi, G)
        md4[has] = ds[lo] + ds[hi]
        keep = (2 * dev2 * ks_den[gi] <= ks_num[gi] * md4[gi]) | (
            dev2 * f_den[gi] <= f_num[gi] * np.abs(m2[gi])
        )

        kidx = idx[keep]
        gk = gi[keep]
        kcnt = np.bincount(gk, minlength=G).astype(np.int64)
        q_k = qty[kidx]
        kvol = _segment_sums(q_k, kcnt)
        with np.errstate(over="ignore"):
            kpq = _segment_sums(price[kidx] * q_k, kcnt)
        packed = np.sort((gk << cbits) | party[kidx])
        first = np.r_[True, packed[1:] != packed[:-1]] if len(packed) else np.zeros(0, dtype=bool)
        kcps = np.bincount(packed[first] >> cbits, minlength=G).astype(np.int64)
        meets = unresolved & (kcnt >= min_obs) & (kcps >= min_cp) & (kvol >= min_vol)
        decide = unresolved.copy() if level == last else meets

        published |= meets
        n_obs[decide] = kcnt[decide]
        cps[decide] = kcps[decide]
        vol[decide] = kvol[decide]
        levels_used[decide] = level + 1
        has_band[decide] = has[decide]
        median2[decide] = m2[decide]
        mad4[decide] = md4[decide]
        if meets.any():
            num = kpq[meets]
            den = kvol[meets]
            quot, rem = np.divmod(np.abs(num), den)
            quot += 2 * rem >= den
            value[meets] = np.where(num < 0, -quot, quot)

        out_rows = idx[~keep]
        out_rows = out_rows[decide[g[out_rows]]]
        reason[out_rows] = np.where(2 * price[out_rows] < m2[g[out_rows]], low_code, high_code)
        if level < last:
            reason[eligible & (rank > level) & meets[g]] = lower_tier_code
        unresolved &= ~decide
        if not unresolved.any():
            break

    row_reason = reason
    row_group = g
    if order is not None:  # back to the caller's row order
        row_reason = np.empty_like(reason)
        row_reason[order] = reason
        row_group = np.empty_like(g)
        row_group[order] = g
    n_excluded = rows_per_group - n_obs
    return BatchResult(
        series_ids,
        published,
        value,
        n_obs,
        n_excluded,
        cps,
        vol,
        levels_used,
        has_band,
        median2,
        mad4,
        row_reason,
        row_group,
        configs,
        cfg_idx,
    )


def _compute_many_exact(
    columns: ObservationColumns, config: SeriesConfig | Mapping[int, SeriesConfig]
) -> BatchResult:
    """compute_many through compute_series_value, for inputs whose products could overflow int64."""
    import numpy as np

    epoch = datetime(1970, 1, 1, tzinfo=UTC)  # a placeholder: the batch columns carry no times
    n = len(columns)
    sid = columns.series_id.tolist()
    series_ids = sorted(set(sid))
    gi_of = {s: i for i, s in enumerate(series_ids)}
    rows: dict[int, list[Observation]] = {}
    ineligible_rows: dict[int, list[int]] = {}
    for r in range(n):
        code = int(columns.tier[r])
        if not 0 <= code < len(TIERS):  # Observation cannot hold an unknown tier
            ineligible_rows.setdefault(gi_of[sid[r]], []).append(r)
            continue

        rows.setdefault(gi_of[sid[r]], []).append(
            Observation(
                "",
                "",
                int(columns.unit_price_fen[r]),
                Decimal(int(columns.qty_milli[r])).scaleb(-3),
                str(int(columns.counterparty[r])),
                TIERS[code],
                str(r),
                epoch,
                bool(columns.related_party[r]) if columns.related_party is not None else False,
            )
        )
    configs: dict[SeriesConfig, int] = {}
    G = len(series_ids)
    fields = {
        k: np.zeros(G, dtype=np.int64)
        for k in ("value", "n_obs", "n_excluded", "cps", "vol", "levels", "median2", "mad4", "cfg")
    }
    published = np.zeros(G, dtype=bool)
    has_band = np.zeros(G, dtype=bool)
    row_reason = np.zeros(n, dtype=np.int8)
    row_group = np.array([gi_of[s] for s in sid], dtype=np.int64)
    for i, s in enumerate(series_ids):
        c = config if isinstance(config, SeriesConfig) else config[s]
        res = compute_series_value(rows.get(i, []), c)
        fields["cfg"][i] = configs.setdefault(c, len(configs))
        extra = ineligible_rows.get(i, [])
        for r in extra:
            is_related = columns.related_party is not None and bool(columns.related_party[r])
            row_reason[r] = _CODE_OF[
                ExclusionReason.RELATED_PARTY if is_related else ExclusionReason.INELIGIBLE_TIER
            ]
        for e in res.exclusions:
            row_reason[int(e.source_id)] = _CODE_OF[e.reason]
        published[i] = res.published
        fields["value"][i] = res.value_fen or 0
        fields["n_obs"][i] = res.n_obs
        fields["n_excluded"][i] = res.n_excluded + len(extra)
        fields["cps"][i] = res.counterparties
        fields["vol"][i] = int(res.volume * 1000)
        fields["levels"][i] = len(res.tiers_used)
        if res.median_fen is not None:
            band = c.outliers.band(
                [
                    o.unit_price_fen
                    for o in rows.get(i, [])
                    if row_reason[int(o.source_id)]
                    in (USED, _CODE_OF[ExclusionReason.OUTLIER_LOW], _CODE_OF[ExclusionReason.OUTLIER_HIGH])
                ]
            )
            has_band[i] = True
            fields["median2"][i] = band.median2
            fields["mad4"][i] = band.mad4
    return BatchResult(
        np.array(series_ids, dtype=np.int64),
        published,
        fields["value"],
        fields["n_obs"],
        fields["n_excluded"],
        fields["cps"],
        fields["vol"],
        fields["levels"],
        has_band,
        fields["median2"],
        fields["mad4"],
        row_reason,
        row_group,
        tuple(configs) or (SeriesConfig(),),
        fields["cfg"],
    )
