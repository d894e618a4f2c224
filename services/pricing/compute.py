"""The daily computation (每日指数计算): one day's observations → published series values and family indices.

One path for every caller (the Celery beat job, `POST /v1/admin/prices/compute`, `recycle pricing
compute-index`, the benchmark):

1. load    the day's observations straight into int64 columns (one query, rows in id order);
2. compute every category × region series with the vectorised domain path (`index_batch.compute_many`): related
           parties and ineligible tiers out, tier preference, median ± k·MAD filter, quorum, VWAP. Regions are
           the city codes as given, their provinces and national; a province or the nation aggregates the
           observations of all its cities;
3. fall back  a series below quorum takes the nearest wider region's value, flagged stale and naming that
           region; with none, it is published as "insufficient data" (value null). Never an earlier day's value;
4. audit   each value keeps its inputs (observation ids), the reason each was used or excluded, the disclosure
           (counts by reason, band, quorum, volume, tiers) and the methodology version (`audit.py`);
5. version a value whose published content or inputs differ from the latest version of that series and day
           becomes a new version (restatement) with a correction notice; an unchanged one publishes nothing;
6. index   family / composite indices (chain-linked Laspeyres from the methodology) over the national prices;
7. publish `IndexPublished` for every new version, through the outbox, in the same transaction.

Concurrent computations are serialised (SQLite: the write lock taken at BEGIN IMMEDIATE; PostgreSQL: an
advisory transaction lock), so two runs of one day can never both publish the same version; the catch-up
(`compute_missing_day`) checks under that lock that the day has no run yet, so it computes a day at most once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from services.contracts.pricing import IndexPublished
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import RuleViolated
from services.kernel.regions import NATIONAL

from . import audit
from .domain.index_batch import ObservationColumns, compute_many
from .domain.index_math import (
    REASON_CODES,
    TIER_CODES,
    ChainLinkError,
    SeriesConfig,
)
from .domain.methodology import Methodology, load_methodology
from .domain.publication import days_to_catch_up, latest_published_day
from .store import (
    computation_runs,
    correction_notices,
    counterparties,
    published_values,
    restatement_queue,
    series_inputs,
)

if TYPE_CHECKING:
    import numpy as np

PRICE = "price"
INDEX = "index"
REGION_SCALE = 1_000_000  # series key = category index × 1,000,000 + 6-digit region code
CATCH_UP = "catch_up"  # computation_runs.trigger of a day the catch-up computed
_LOCK_KEY = 0x70726963  # "pric": PostgreSQL advisory lock of the computation
# Packed per-row attributes of the load query: city code (20 bits), tier (2), related party (1), category, party.
_CITY_BITS, _TIER_SHIFT, _RELATED_SHIFT, _CATEGORY_SHIFT = 20, 20, 22, 23


# --------------------------------------------------------------------------------------------- results


@dataclass
class Candidate:
    """One series value as this run computed it, before versioning."""

    code: str
    region: str
    kind: str
    value: str | None
    stale: bool
    source_region: str | None
    status: str
    n_obs: int
    n_excluded: int
    disclosure: dict[str, Any]
    fingerprint: str
    inputs: tuple[bytes, bytes, int] | None = None  # (ids blob, reasons blob, n_inputs) for price series

    @property
    def unit_price_fen(self) -> int | None:
        return int(self.value) if self.kind == PRICE and self.value is not None else None


@dataclass(frozen=True)
class SeriesValue:
    """A series value as published for the day (the latest version after the run)."""

    code: str
    region: str
    kind: str
    date: date
    value: str | None
    version: int
    stale: bool
    source_region: str | None
    status: str
    n_obs: int
    new_version: bool  # published by this run
    restated: bool  # ... and it replaces an earlier computed version

    def view(self) -> dict[str, Any]:
        unit = int(self.value) if self.kind == PRICE and self.value is not None else None
        return dict(
            code=self.code,
            region=self.region,
            kind=self.kind,
            date=self.date,
            value=self.value,
            unit_price_fen=unit,
            version=self.version,
            stale=self.stale,
            source_region=self.source_region,
            status=self.status,
            n_obs=self.n_obs,
            new_version=self.new_version,
            restated=self.restated,
        )


@dataclass
class DayOutcome:
    day: date
    run_id: int
    methodology_version: str
    n_observations: int
    series: list[SeriesValue] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_new_versions(self) -> int:
        return sum(1 for s in self.series if s.new_version)

    @property
    def n_restated(self) -> int:
        return sum(1 for s in self.series if s.restated)

    def view(self) -> dict[str, Any]:
        return dict(
            date=self.day,
            run_id=self.run_id,
            methodology_version=self.methodology_version,
            n_observations=self.n_observations,
            n_series=len(self.series),
            n_new_versions=self.n_new_versions,
            n_restated=self.n_restated,
            series=[s.view() for s in self.series],
            notices=self.notices,
        )


# --------------------------------------------------------------------------------------------- load


@dataclass
class DayColumns:
    """A day's observations as int64 columns, in id order."""

    categories: tuple[str, ...]  # index → category code
    category: np.ndarray
    city: np.ndarray
    tier: np.ndarray
    related: np.ndarray
    party: np.ndarray
    price: np.ndarray
    qty_milli: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _load_sql(dialect: str, categories: tuple[str, ...], party_shift: int | None) -> str:
    """The hot query. The database packs the small per-row attributes into one integer (city | tier << 20 |
    related << 22 | category << 23 | party << shift) so fewer values cross into Python; with party_shift None
    (a huge party code) the party is a column of its own. Category codes and tier names are the methodology's
    own constants, never user input.

    SQLite (the embedded database): each column comes back as one comma-separated text built by group_concat
    in C and parsed by numpy in C, so no Python object is made per row (3× cheaper than fetching tuples).
    PostgreSQL: plain DBAPI tuples streamed into numpy (Core Row objects would cost more than the computation).
    """
    ph = ":day" if dialect == "sqlite" else "%(day)s"
    tiers = " ".join(f"WHEN '{t}' THEN {c}" for t, c in TIER_CODES.items())
    cats = " ".join(f"WHEN '{c}' THEN {i}" for i, c in enumerate(categories))
    packed = (
        f"CAST(city_code AS BIGINT)"
        f" | ((CASE tier {tiers} ELSE 3 END) << {_TIER_SHIFT})"
        f" | ((CASE WHEN related_party THEN 1 ELSE 0 END) << {_RELATED_SHIFT})"
        f" | (CAST(CASE category {cats} END AS BIGINT) << {_CATEGORY_SHIFT})"
    )
    if party_shift is not None:
        packed += f" | (CAST(counterparty AS BIGINT) << {party_shift})"
    cols = [f"{packed} AS a", "unit_price_fen AS b", "qty_milli AS c", "id AS d"]
    if party_shift is None:
        cols.append("counterparty AS e")
    listed = ", ".join(f"'{c}'" for c in categories)
    inner = (
        f"SELECT {', '.join(cols)} FROM observations WHERE day = {ph} AND category IN ({listed}) ORDER BY id"
    )
    if dialect != "sqlite":
        return inner
    return f"SELECT {', '.join(f'group_concat({c[-1]})' for c in cols)} FROM ({inner})"


def load_day(s: Session, day: date, m: Methodology) -> DayColumns:
    import itertools

    import numpy as np

    conn = s.connection()
    dialect = conn.dialect.name
    cats = tuple(m.categories)
    cat_bits = max((len(cats) - 1).bit_length(), 1)
    party_shift: int | None = _CATEGORY_SHIFT + cat_bits
    max_party = s.execute(select(func.max(counterparties.c.id))).scalar() or 0
    if int(max_party).bit_length() + _CATEGORY_SHIFT + cat_bits > 63:
        party_shift = None
    width = 4 if party_shift is not None else 5
    sql = _load_sql(dialect, cats, party_shift)
    cur = conn.connection.cursor()  # the DBAPI cursor, inside this session's transaction
    try:
        if dialect == "sqlite":
            cur.execute(sql, {"day": day.isoformat()})  # SQLite stores DATE as ISO text
            texts = cur.fetchone()
            columns = [np.fromstring(t or "", dtype=np.int64, sep=",") for t in texts]
            if len({len(c) for c in columns}) != 1:
                raise RuntimeError("load_day: columns of different lengths")
        else:
            cur.execute(sql, {"day": day})
            flat = np.fromiter(itertools.chain.from_iterable(cur), dtype=np.int64).reshape(-1, width)
            columns = [np.ascontiguousarray(flat[:, i]) for i in range(width)]
    finally:
        cur.close()
    ids = columns[3]
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):  # group_concat's order is not promised
        order = np.argsort(ids, kind="stable")
        columns = [c[order] for c in columns]
    packed = columns[0]
    return DayColumns(
        categories=cats,
        category=(packed >> _CATEGORY_SHIFT) & ((1 << cat_bits) - 1),
        city=packed & ((1 << _CITY_BITS) - 1),
        tier=(packed >> _TIER_SHIFT) & 3,
        related=((packed >> _RELATED_SHIFT) & 1).astype(bool),
        party=packed >> party_shift if party_shift is not None else columns[4],
        price=columns[1],
        qty_milli=columns[2],
        ids=columns[3],
    )


# --------------------------------------------------------------------------------------------- series


class _ConfigByCategory(Mapping[int, SeriesConfig]):
    """series key → the SeriesConfig of its category (compute_many asks per series)."""

    def __init__(self, configs: list[SeriesConfig]):
        self.configs = configs

    def __getitem__(self, key: int) -> SeriesConfig:
        return self.configs[key // REGION_SCALE]

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """argsort(keys, stable) — by sorting (key, position) packed in one int64 when it fits (several times
    faster than a stable argsort of int64)."""
    import numpy as np

    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pos_bits = max((n - 1).bit_length(), 1)
    kmin = int(keys.min())
    if (int(keys.max()) - kmin).bit_length() + pos_bits <= 62:
        packed = ((keys - kmin) << pos_bits) | np.arange(n, dtype=np.int64)
        packed.sort()
        return packed & ((1 << pos_bits) - 1)
    return np.argsort(keys, kind="stable")


def _fingerprint(published: Mapping[str, Any], *blobs: bytes) -> str:
    h = hashlib.sha256(json.dumps(published, sort_keys=True, default=str, ensure_ascii=False).encode())
    for b in blobs:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _halves(x2: int) -> str:
    """x2 / 2 exactly, as a decimal string."""
    q, r = divmod(x2, 2)
    return f"{q}.5" if r else str(q)


def _quarters(x4: int) -> str:
    q, r = divmod(x4, 4)
    return f"{q}{('', '.25', '.5', '.75')[r]}"


def _milli(v: int) -> str:
    q, r = divmod(v, 1000)
    return f"{q}.{r:03d}"


def compute_price_candidates(cols: DayColumns, m: Methodology) -> list[Candidate]:
    """Every category × region series of the day, with fallbacks and audit inputs."""
    import numpy as np

    if len(cols) == 0:
        return []
    configs = [m.series_config(c) for c in cols.categories]
    by_category = _ConfigByCategory(configs)
    province = cols.city // 10000 * 10000
    base = cols.category * REGION_SCALE
    key_city, key_prov = base + cols.city, base + province
    own_city = np.flatnonzero(cols.city != province)  # a province-level code is the province's own series
    by_cat = _stable_order(cols.category)  # rows come in id order; group them by category, ids ascending
    levels = []
    for name, rows, keys in (
        ("city", own_city[_stable_order(key_city[own_city])], key_city),
        ("province", _stable_order(key_prov), key_prov),
        ("national", by_cat, base),
    ):
        columns = ObservationColumns(
            keys[rows],
            cols.price[rows],
            cols.qty_milli[rows],
            cols.party[rows],
            cols.tier[rows],
            cols.related[rows],
        )
        levels.append((name, columns.series_id, cols.ids[rows], compute_many(columns, by_category)))

    # Published values by series key, for the fallback chain city → province → national.
    published: dict[int, int] = {}
    for _, _, _, b in levels:
        for key, ok, value in zip(
            b.series_id.tolist(), b.published.tolist(), b.value_fen.tolist(), strict=True
        ):
            if ok:
                published[key] = value

    out: list[Candidate] = []
    for name, _, ids, batch in levels:
        out.extend(_level_candidates(name, ids, batch, cols.categories, configs, published, m))
    return out


def _level_candidates(
    level: str,
    ids: np.ndarray,
    b: Any,
    cats: tuple[str, ...],
    configs: list[SeriesConfig],
    published: dict[int, int],
    m: Methodology,
) -> list[Candidate]:
    """Candidates of one level from its BatchResult: disclosure from the arrays (no per-row objects), the
    input ids (ascending within each series) delta-encoded, one reason code per input."""
    import numpy as np

    n_rows = (b.n_obs + b.n_excluded).astype(np.int64)
    ends = np.cumsum(n_rows)
    starts = ends - n_rows
    deltas = np.empty_like(ids)
    if len(ids):
        deltas[0] = ids[0]
        np.subtract(ids[1:], ids[:-1], out=deltas[1:])
        deltas[starts] = ids[starts]
    widest = np.maximum.reduceat(deltas, starts).tolist() if len(ids) else []
    reasons_u8 = np.ascontiguousarray(b.row_reason, dtype=np.uint8)
    counts = b.reason_counts().tolist()
    reason_names = {c: r.value for c, r in REASON_CODES.items()}
    cols = zip(
        b.series_id.tolist(),
        b.published.tolist(),
        b.value_fen.tolist(),
        b.n_obs.tolist(),
        b.n_excluded.tolist(),
        b.counterparties.tolist(),
        b.volume_milli.tolist(),
        b.levels_used.tolist(),
        b.has_band.tolist(),
        b.median2.tolist(),
        b.mad4.tolist(),
        starts.tolist(),
        ends.tolist(),
        widest,
        counts,
        strict=True,
    )
    out = []
    for key, ok, value_fen, n_obs, n_excl, cps, vol, n_levels, has_band, med2, mad4, a, e, wide, cnt in cols:
        cat, region_int = divmod(key, REGION_SCALE)
        code, region = cats[cat], f"{region_int:06d}"
        config = configs[cat]
        disclosure: dict[str, Any] = {
            "status": "published" if ok else "insufficient_data",
            "value_fen": value_fen if ok else None,
            "n_obs": n_obs,
            "n_excluded": n_excl,
            "n_inputs": e - a,
            "excluded_by_reason": {reason_names[c]: k for c, k in enumerate(cnt) if c and k},
            "volume": _milli(vol),
            "counterparties": cps,
            "tiers_used": list(config.tiers[:n_levels]),
            "shortfall": [] if ok else list(config.quorum.shortfall(n_obs, cps, Decimal(vol).scaleb(-3))),
            "methodology_version": m.version,
        }
        if has_band:
            disclosure["median_fen"], disclosure["mad_fen"] = _halves(med2), _quarters(mad4)
        tag, dtype = (
            (b"1", "<u1")
            if wide < 1 << 8
            else (b"2", "<u2")
            if wide < 1 << 16
            else (b"4", "<u4")
            if wide < 1 << 32
            else (b"8", "<i8")
        )
        raw_ids = deltas[a:e].astype(dtype).tobytes()
        raw_reasons = reasons_u8[a:e].tobytes()
        value, source, stale = (value_fen, region, False) if ok else (None, None, False)
        if not ok:
            wider = ([cat * REGION_SCALE + region_int // 10000 * 10000] if level == "city" else []) + (
                [cat * REGION_SCALE] if level != "national" else []
            )
            for w in wider:
                if w in published:
                    value, source, stale = published[w], f"{w % REGION_SCALE:06d}", True
                    break
        value_s = None if value is None else str(value)
        status = "published" if ok else "fallback" if stale else "insufficient_data"
        head = dict(value=value_s, stale=stale, source_region=source, status=status, disclosure=disclosure)
        out.append(
            Candidate(
                code=code,
                region=region,
                kind=PRICE,
                value=value_s,
                stale=stale,
                source_region=source,
                status=status,
                n_obs=n_obs,
                n_excluded=n_excl,
                disclosure=disclosure,
                fingerprint=_fingerprint(head, tag, raw_ids, raw_reasons),
                inputs=(tag + raw_ids, audit.pack_reasons_raw(raw_reasons), e - a),
            )
        )
    return out


# --------------------------------------------------------------------------------------------- families


def _latest_prices(
    s: Session, codes: list[str], days: set[date]
) -> dict[date, dict[str, tuple[int, int, int]]]:
    """Latest computed version of each national price on the given days: {day: {code: (fen, version, n_obs)}}."""
    if not days or not codes:
        return {}
    pv = published_values
    rows = s.execute(
        select(pv.c.code, pv.c.date, pv.c.version, pv.c.value, pv.c.n_obs)
        .where(
            pv.c.kind == PRICE,
            pv.c.region == NATIONAL,
            pv.c.reference.is_(False),
            pv.c.code.in_(codes),
            pv.c.date.in_(sorted(days)),
        )
        .order_by(pv.c.date, pv.c.code, pv.c.version)
    ).all()
    latest: dict[tuple[date, str], Any] = {}
    for r in rows:
        latest[(r.date, r.code)] = r  # ordered by version: the last one wins
    out: dict[date, dict[str, tuple[int, int, int]]] = {}
    for (d, code), r in latest.items():
        if r.value is not None:
            out.setdefault(d, {})[code] = (int(r.value), r.version, r.n_obs)
    return out


def reference_prices(s: Session) -> dict[str, int]:
    """The seeded national reference prices (the published prices of the base date)."""
    pv = published_values
    return {
        code: int(v)
        for code, v in s.execute(
            select(pv.c.code, pv.c.value).where(pv.c.reference.is_(True), pv.c.region == NATIONAL)
        ).tuples()
        if v is not None
    }


def compute_family_candidates(s: Session, day: date, m: Methodology) -> list[Candidate]:
    """Family and composite indices of the day (national): chain-linked Laspeyres over the national series.

    Base prices p_0 are the national reference prices published for the base date; a later basket links on
    its effective date with the national values then. A component without a value that day carries its last
    value for at most the methodology's max_carry_days (listed as stale), else the index is insufficient.
    """
    if day < m.base_date or not m.families:
        return []
    carry = m.max_carry_days
    days = {day - timedelta(days=k) for k in range(carry + 1)}
    for fam in m.families.values():
        for b in fam.baskets[1:]:
            days |= {b.effective - timedelta(days=k) for k in range(carry + 1)}
    days.discard(m.base_date)
    codes = sorted({c for f in m.families.values() for c in f.components})
    found = _latest_prices(s, codes, days)
    refs = reference_prices(s)
    daily: dict[date, dict[str, int | None]] = {d: {c: v[0] for c, v in p.items()} for d, p in found.items()}
    daily[m.base_date] = {c: refs[c] for c in codes if c in refs}
    out = []
    for fam in m.families.values():
        try:
            (point,) = m.family_index(fam.code, daily, days=[day])
        except ChainLinkError as exc:
            point, shortfall = None, [str(exc)]
        else:
            shortfall = [f"no value within {carry} day(s) for {c}" for c in point.missing_components]
        used: dict[str, Any] = {}
        n_obs = 0
        if point is not None and point.value is not None:
            basket = [b for b in fam.baskets if b.effective <= day][-1]
            for c in basket.quantities:
                for back in range(carry + 1):
                    d = day - timedelta(days=back)
                    if d == m.base_date:
                        used[c] = {"date": d.isoformat(), "reference": True, "value_fen": refs[c]}
                        break
                    hit = found.get(d, {}).get(c)
                    if hit is not None:
                        used[c] = {"date": d.isoformat(), "version": hit[1], "value_fen": hit[0]}
                        n_obs += hit[2]
                        break
        value = None if point is None or point.value is None else format(point.value, "f")
        status = "published" if value is not None else "insufficient_data"
        stale = bool(point and point.stale_components)
        disclosure = {
            "status": status,
            "value": value,
            "base_date": m.base_date.isoformat(),
            "base_value": m.base_value,
            "basket_effective": point.basket_effective.isoformat() if point else None,
            "stale_components": list(point.stale_components) if point else [],
            "missing_components": list(point.missing_components) if point else [],
            "components": used,
            "shortfall": shortfall,
            "methodology_version": m.version,
        }
        head = dict(value=value, stale=stale, status=status, disclosure=disclosure)
        out.append(
            Candidate(
                code=fam.code,
                region=NATIONAL,
                kind=INDEX,
                value=value,
                stale=stale,
                source_region=NATIONAL if value is not None else None,
                status=status,
                n_obs=n_obs,
                n_excluded=0,
                disclosure=disclosure,
                fingerprint=_fingerprint(head),
            )
        )
    return out


# --------------------------------------------------------------------------------------------- publish


def _restatement_reason(
    prev_audit: dict[str, Any], c: Candidate, prev: Any, given: str | None, m: Methodology
) -> str:
    """Why the new version differs, in words (the notice's reason)."""
    parts = []
    old_inputs = prev_audit.get("n_inputs")
    new_inputs = c.disclosure.get("n_inputs")
    if c.kind == PRICE and old_inputs is not None and new_inputs is not None and new_inputs != old_inputs:
        parts.append(f"late data: {new_inputs - old_inputs:+d} input(s) ({old_inputs} → {new_inputs})")
    if prev.source_region != c.source_region and c.source_region and prev.source_region:
        parts.append(f"value now from region {c.source_region} (was {prev.source_region})")
    elif c.stale and prev.stale and prev.value != c.value:
        parts.append(f"the wider region {c.source_region} was restated")
    if c.kind == INDEX and prev_audit.get("components") != c.disclosure.get("components"):
        parts.append("component prices restated or late")
    if prev.methodology_version != m.version:
        parts.append(f"methodology {prev.methodology_version} → {m.version}")
    if not parts:
        parts.append("recomputed: inputs or disclosure changed")
    return "; ".join(([given.strip()] if given and given.strip() else []) + parts)


def publish_candidates(
    uow: UnitOfWork,
    day: date,
    cands: list[Candidate],
    *,
    run_id: int,
    now: datetime,
    m: Methodology,
    reason: str | None,
) -> tuple[list[SeriesValue], list[dict[str, Any]]]:
    """Version the candidates against what is already published for the day; insert and announce new ones."""
    if not cands:
        return [], []
    s = uow.session
    pv = published_values
    prev_rows = s.execute(
        select(
            pv.c.code,
            pv.c.region,
            pv.c.version,
            pv.c.value,
            pv.c.stale,
            pv.c.source_region,
            pv.c.reference,
            pv.c.fingerprint,
            pv.c.methodology_version,
            pv.c.audit,
            pv.c.n_obs,
            pv.c.status,
            pv.c.kind,
        )
        .where(pv.c.date == day, pv.c.kind.in_({c.kind for c in cands}))
        .order_by(pv.c.version)
    ).all()
    latest = {(r.code, r.region): r for r in prev_rows}
    values, inputs, notices, events, series = [], [], [], [], []
    for c in cands:
        prev = latest.get((c.code, c.region))
        if prev is not None and prev.fingerprint == c.fingerprint:
            series.append(
                SeriesValue(
                    c.code,
                    c.region,
                    c.kind,
                    day,
                    prev.value,
                    prev.version,
                    prev.stale,
                    prev.source_region,
                    prev.status or c.status,
                    prev.n_obs,
                    False,
                    False,
                )
            )
            continue
        version = prev.version + 1 if prev is not None else 1
        restates = prev is not None and not prev.reference
        values.append(
            dict(
                code=c.code,
                region=c.region,
                date=day,
                version=version,
                kind=c.kind,
                value=c.value,
                stale=c.stale,
                source_region=c.source_region,
                n_obs=c.n_obs,
                methodology_version=m.version,
                reference=False,
                published_at=now,
                audit=json.dumps(c.disclosure, ensure_ascii=False, default=str),
                status=c.status,
                fingerprint=c.fingerprint,
                run_id=run_id,
            )
        )
        if c.inputs is not None:
            inputs.append(
                dict(
                    code=c.code,
                    region=c.region,
                    date=day,
                    version=version,
                    n_inputs=c.inputs[2],
                    input_ids=c.inputs[0],
                    input_reasons=c.inputs[1],
                )
            )
        why = None
        if restates:
            why = _restatement_reason(json.loads(prev.audit or "{}"), c, prev, reason, m)
            notices.append(
                dict(
                    code=c.code,
                    region=c.region,
                    date=day,
                    kind=c.kind,
                    old_version=prev.version,
                    new_version=version,
                    old_value=prev.value,
                    new_value=c.value,
                    old_stale=prev.stale,
                    new_stale=c.stale,
                    reason=why,
                    methodology_version=m.version,
                    published_at=now,
                    run_id=run_id,
                )
            )
        events.append(
            IndexPublished(
                series_key=f"{c.code}@{c.region}",
                code=c.code,
                kind=c.kind,
                region=c.region,
                date=day,
                value=c.value,
                unit_price_fen=c.unit_price_fen,
                version=version,
                stale=c.stale,
                source_region=c.source_region,
                n_obs=c.n_obs,
                methodology_version=m.version,
                reference=False,
                published_at=now,
                status=c.status,
                n_excluded=c.n_excluded,
                restates_version=prev.version if restates else None,
                previous_value=prev.value if restates else None,
                correction_reason=why,
            )
        )
        series.append(
            SeriesValue(
                c.code,
                c.region,
                c.kind,
                day,
                c.value,
                version,
                c.stale,
                c.source_region,
                c.status,
                c.n_obs,
                True,
                restates,
            )
        )
    if values:
        s.execute(insert(pv), values)
    if inputs:
        s.execute(insert(series_inputs), inputs)
    if notices:
        s.execute(insert(correction_notices), notices)
    for ev in events:
        uow.emit(ev)
    return series, notices


# --------------------------------------------------------------------------------------------- the day


def check_computable(day: date, m: Methodology, today: date) -> None:
    """A day is computed once its window has closed, under a methodology in force on it."""
    if day < m.effective_from:
        raise RuleViolated(
            f"no methodology in force on {day} (version {m.version} is effective from {m.effective_from})",
            reason="before_methodology",
            field="date",
        )
    if day >= today:
        raise RuleViolated(
            f"the window of {day} has not closed yet (today is {today} in {m.specification.timezone})",
            reason="window_open",
            field="date",
        )


def today_in(m: Methodology, now: datetime | None = None) -> date:
    from zoneinfo import ZoneInfo

    return (now or datetime.now(UTC)).astimezone(ZoneInfo(m.specification.timezone)).date()


def _lock(s: Session) -> None:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    # SQLite: the unit of work began with BEGIN IMMEDIATE, which already holds the database's write lock.


def compute_day(
    db: Database,
    day: date,
    *,
    trigger: str,
    requested_by: str | None = None,
    reason: str | None = None,
    methodology: Methodology | None = None,
    now: datetime | None = None,
) -> DayOutcome:
    """Compute and publish one day (see the module docstring). Idempotent: unchanged values publish nothing."""
    outcome = _compute_day(db, day, trigger, requested_by, reason, methodology, now, unless_computed=False)
    assert outcome is not None
    return outcome


def compute_missing_day(
    db: Database,
    day: date,
    *,
    trigger: str,
    reason: str | None = None,
    methodology: Methodology | None = None,
    now: datetime | None = None,
) -> DayOutcome | None:
    """Compute one day only if it has no computation yet (the catch-up); None if it has. Checked under the
    computation's lock, so of two catch-ups of one day at once the second finds the first's run and does
    nothing (no second run, no event)."""
    return _compute_day(db, day, trigger, None, reason, methodology, now, unless_computed=True)


def _compute_day(
    db: Database,
    day: date,
    trigger: str,
    requested_by: str | None,
    reason: str | None,
    methodology: Methodology | None,
    now: datetime | None,
    *,
    unless_computed: bool,
) -> DayOutcome | None:
    import time

    m = methodology or load_methodology()
    now = now or datetime.now(UTC)
    check_computable(day, m, today_in(m, now))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with UnitOfWork(db) as uow:
        s = uow.session
        _lock(s)
        if unless_computed and _computed(s, day):
            return None
        run_id = s.execute(
            insert(computation_runs)
            .values(
                day=day,
                methodology_version=m.version,
                trigger=trigger,
                requested_by=requested_by,
                reason=reason,
                started_at=now,
                finished_at=now,
                n_observations=0,
                n_series=0,
                n_new_versions=0,
                n_restated=0,
            )
            .returning(computation_runs.c.id)
        ).scalar_one()
        cols = load_day(s, day, m)
        timings["load"] = time.perf_counter() - t
        t = time.perf_counter()
        price_cands = compute_price_candidates(cols, m)
        timings["compute"] = time.perf_counter() - t
        t = time.perf_counter()
        series, notices = publish_candidates(
            uow, day, price_cands, run_id=run_id, now=now, m=m, reason=reason
        )
        fam_series, fam_notices = publish_candidates(
            uow, day, compute_family_candidates(s, day, m), run_id=run_id, now=now, m=m, reason=reason
        )
        series += fam_series
        notices += fam_notices
        s.execute(delete(restatement_queue).where(restatement_queue.c.day == day))
        outcome = DayOutcome(day, int(run_id), m.version, len(cols), series, notices, timings)
        s.execute(
            update(computation_runs)
            .where(computation_runs.c.id == run_id)
            .values(
                finished_at=datetime.now(UTC),
                n_observations=len(cols),
                n_series=len(series),
                n_new_versions=outcome.n_new_versions,
                n_restated=outcome.n_restated,
            )
        )
    timings["publish"] = time.perf_counter() - t  # versioning, inserts, events, commit
    return outcome


def _computed(s: Session, day: date) -> bool:
    return (
        s.execute(select(computation_runs.c.id).where(computation_runs.c.day == day).limit(1)).first()
        is not None
    )


def due_days(
    db: Database, m: Methodology, now: datetime | None = None, max_restatements: int = 31
) -> list[date]:
    """What the daily job computes: the newest day whose publication time has come (today − publication lag
    once it is the publication time), then the already-computed days that received late inputs within the
    late-data window, oldest first."""
    now = now or datetime.now(UTC)
    today = today_in(m, now)
    publish = latest_published_day(now, m.specification)
    oldest = today - timedelta(days=m.late_data_days)
    with UnitOfWork(db, readonly=True) as uow:
        queued = (
            uow.session.execute(
                select(restatement_queue.c.day)
                .where(restatement_queue.c.day >= oldest, restatement_queue.c.day < today)
                .order_by(restatement_queue.c.day)
                .limit(max_restatements)
            )
            .scalars()
            .all()
        )
    days = [publish] if publish >= m.effective_from else []
    return days + [d for d in queued if d != publish]


def missing_days(db: Database, m: Methodology, now: datetime | None, horizon_days: int) -> list[date]:
    """The catch-up's days: published within the last `horizon_days` publications and never computed (the
    worker was down at their publication time or died computing them), oldest first."""
    now = now or datetime.now(UTC)
    if horizon_days <= 0:
        return []
    latest = latest_published_day(now, m.specification)
    with UnitOfWork(db, readonly=True) as uow:
        computed = set(
            uow.session.execute(
                select(computation_runs.c.day)
                .where(computation_runs.c.day > latest - timedelta(days=horizon_days))
                .distinct()
            )
            .scalars()
            .all()
        )
    return days_to_catch_up(
        now, m.specification, effective_from=m.effective_from, horizon_days=horizon_days, computed=computed
    )


def latest_computed_day(s: Session) -> date | None:
    return s.execute(select(func.max(computation_runs.c.day))).scalar()
