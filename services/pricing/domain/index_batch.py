"""The vectorised path of the price-index arithmetic (`compute_many`): every series of a day at once, over
integer columns with numpy, giving exactly what the per-series path (`index_math.compute_series_value`) gives
for the same inputs (the tests compare them). Inputs whose products could overflow int64 take the exact path,
series by series (`_compute_many_exact`). No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

from .index_math import (
    _CODE_OF,
    INSUFFICIENT_DATA,
    PUBLISHED,
    REASON_CODES,
    TIER_CODES,
    TIERS,
    USED,
    Band,
    Exclusion,
    ExclusionReason,
    Observation,
    SeriesConfig,
    SeriesResult,
    compute_series_value,
)

if TYPE_CHECKING:  # numpy is imported lazily: callers of the exact path never load it
    import numpy as np


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
