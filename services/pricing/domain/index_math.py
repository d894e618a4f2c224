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

This module is the exact, per-series path (the definition); `index_batch.compute_many` computes every series of
a day at once over numpy columns and must agree with it.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from fractions import Fraction
from typing import Literal

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
