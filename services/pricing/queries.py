"""The read side: quotes, series history (every version), correction notices, disclosures, the audit view.

Nothing here selects a contributor: outputs carry values, counts and observation ids only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.kernel.errors import NotFound, ValidationFailed
from services.kernel.money import qty_str
from services.kernel.regions import NATIONAL, fallback_chain

from . import audit
from .compute import INDEX, PRICE, latest_computed_day
from .domain.index_math import Band
from .domain.methodology import load_methodology
from .store import correction_notices, observations, published_values, series_inputs

pv = published_values


# --------------------------------------------------------------------------------------------- quote


def quote(s: Session, category: str, city_code: str, *, max_age_days: int) -> dict[str, Any]:
    """The price for a category in a city: the newest published value along city → province → national.

    A region counts when its newest value (within `max_age_days` of the latest computed day) is a value; a
    region whose newest value is "insufficient data" is skipped, never answered with an older value. The
    answer is stale when it is not the city's own value for the latest computed day. With nothing computed,
    the seeded national reference price answers (`reference: true`, stale).
    """
    chain = fallback_chain(city_code)
    latest_day = latest_computed_day(s)
    rows = []
    if latest_day is not None:
        rows = s.execute(
            select(
                pv.c.region,
                pv.c.date,
                pv.c.version,
                pv.c.value,
                pv.c.stale,
                pv.c.source_region,
                pv.c.methodology_version,
            )
            .where(
                pv.c.code == category,
                pv.c.kind == PRICE,
                pv.c.reference.is_(False),
                pv.c.region.in_(chain),
                pv.c.date >= latest_day - timedelta(days=max_age_days),
            )
            .order_by(pv.c.date, pv.c.version)
        ).all()
    newest: dict[str, Any] = {}
    for r in rows:
        newest[r.region] = r  # ascending (date, version): the last one is the newest
    for region in chain:
        r = newest.get(region)
        if r is None or r.value is None:
            continue
        own = region == city_code and not r.stale
        return dict(
            category=category,
            city_code=city_code,
            unit_price_fen=int(r.value),
            as_of=r.date,
            source_region=r.source_region or region,
            stale=not own or r.date < latest_day,
            reference=False,
            version=r.version,
            methodology_version=r.methodology_version,
            tried=chain[: chain.index(region) + 1],
        )
    ref = s.execute(
        select(pv.c.date, pv.c.version, pv.c.value, pv.c.methodology_version)
        .where(pv.c.code == category, pv.c.region == NATIONAL, pv.c.reference.is_(True))
        .order_by(pv.c.version.desc())
        .limit(1)
    ).first()
    if ref is None or ref.value is None:
        raise NotFound(f"no price published for {category} anywhere along {' → '.join(chain)}")
    return dict(
        category=category,
        city_code=city_code,
        unit_price_fen=int(ref.value),
        as_of=ref.date,
        source_region=NATIONAL,
        stale=True,
        reference=True,
        version=ref.version,
        methodology_version=ref.methodology_version,
        tried=chain,
    )


# --------------------------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryQuery:
    code: str
    region: str
    date_from: date | None = None
    date_to: date | None = None
    version: int | None = None
    all_versions: bool = False
    as_of: datetime | None = None
    limit: int = 366
    cursor: str | None = None


def _disclosure(raw: str | None) -> dict[str, Any]:
    return json.loads(raw) if raw else {}


def _item(r: Any, superseded: bool) -> dict[str, Any]:
    d = _disclosure(r.audit)
    status = r.status or (
        "reference" if r.reference else "published" if r.value is not None else "insufficient_data"
    )
    return dict(
        date=r.date,
        value=r.value,
        version=r.version,
        stale=r.stale,
        n_obs=r.n_obs,
        code=r.code,
        region=r.region,
        kind=r.kind,
        unit_price_fen=int(r.value) if r.kind == PRICE and r.value is not None else None,
        status=status,
        source_region=r.source_region,
        reference=r.reference,
        n_excluded=d.get("n_excluded", 0),
        excluded_by_reason=d.get("excluded_by_reason", {}),
        methodology_version=r.methodology_version,
        published_at=r.published_at,
        superseded=superseded,
    )


def _parse_cursor(cursor: str | None) -> tuple[date, int] | None:
    if not cursor:
        return None
    try:
        d, v = cursor.split(":")
        return date.fromisoformat(d), int(v)
    except ValueError:
        raise ValidationFailed.field("cursor", "not a cursor from a previous page") from None


def history(s: Session, q: HistoryQuery) -> dict[str, Any]:
    """Versions of one series by date: the latest of each date (default), one `version`, what was published
    `as_of` a time, or every version (`all_versions`, older ones `superseded`)."""
    cond = [pv.c.code == q.code, pv.c.region == q.region]
    if q.date_from:
        cond.append(pv.c.date >= q.date_from)
    if q.date_to:
        cond.append(pv.c.date <= q.date_to)
    after = _parse_cursor(q.cursor)
    if after:
        cond.append(pv.c.date >= after[0])
    rows = s.execute(select(pv).where(*cond).order_by(pv.c.date, pv.c.version)).all()
    newest: dict[date, int] = {}
    for r in rows:
        newest[r.date] = r.version
    if q.all_versions:
        chosen = [(r, r.version < newest[r.date]) for r in rows]
    elif q.version is not None:
        chosen = [(r, r.version < newest[r.date]) for r in rows if r.version == q.version]
    elif q.as_of is not None:
        seen: dict[date, Any] = {}
        for r in rows:
            if r.published_at <= q.as_of:
                seen[r.date] = r
        chosen = [(r, r.version < newest[r.date]) for r in seen.values()]
    else:
        chosen = [(r, False) for r in rows if r.version == newest[r.date]]
    if after:
        chosen = [(r, sup) for r, sup in chosen if (r.date, r.version) > after]
    page = chosen[: q.limit]
    more = len(chosen) > q.limit
    last = page[-1][0] if page else None
    return dict(
        code=q.code,
        region=q.region,
        items=[_item(r, sup) for r, sup in page],
        next_cursor=f"{last.date.isoformat()}:{last.version}" if more and last else None,
    )


CSV_FIELDS = (
    "date",
    "code",
    "region",
    "kind",
    "value",
    "unit_price_fen",
    "version",
    "stale",
    "source_region",
    "n_obs",
    "n_excluded",
    "status",
    "reference",
    "methodology_version",
    "published_at",
    "superseded",
)


def history_csv(s: Session, q: HistoryQuery) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    cursor = q.cursor
    while True:
        page = history(s, HistoryQuery(**{**q.__dict__, "cursor": cursor, "limit": 5000}))
        for it in page["items"]:
            w.writerow([_csv_cell(it[f]) for f in CSV_FIELDS])
        cursor = page["next_cursor"]
        if not cursor:
            return buf.getvalue()


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    return str(v)


# --------------------------------------------------------------------------------------------- notices


def notices(
    s: Session,
    *,
    code: str | None,
    region: str | None,
    date_from: date | None,
    date_to: date | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Correction notices, newest first: old value, new value, reason, methodology version, when."""
    n = correction_notices
    cond = []
    if code:
        cond.append(n.c.code == code)
    if region:
        cond.append(n.c.region == region)
    if date_from:
        cond.append(n.c.date >= date_from)
    if date_to:
        cond.append(n.c.date <= date_to)
    if cursor:
        try:
            cond.append(n.c.id < int(cursor))
        except ValueError:
            raise ValidationFailed.field("cursor", "not a cursor from a previous page") from None
    rows = s.execute(select(n).where(*cond).order_by(n.c.id.desc()).limit(limit + 1)).all()
    items = [
        dict(
            id=r.id,
            code=r.code,
            region=r.region,
            date=r.date,
            kind=r.kind,
            old_version=r.old_version,
            new_version=r.new_version,
            old_value=r.old_value,
            new_value=r.new_value,
            old_stale=r.old_stale,
            new_stale=r.new_stale,
            reason=r.reason,
            methodology_version=r.methodology_version,
            published_at=r.published_at,
        )
        for r in rows[:limit]
    ]
    return dict(items=items, next_cursor=str(rows[limit - 1].id) if len(rows) > limit else None)


# --------------------------------------------------------------------------------------------- one value


def _version_row(s: Session, code: str, region: str, day: date, version: int | None) -> Any:
    cond = [pv.c.code == code, pv.c.region == region, pv.c.date == day]
    if version is not None:
        cond.append(pv.c.version == version)
    r = s.execute(select(pv).where(*cond).order_by(pv.c.version.desc()).limit(1)).first()
    if r is None:
        what = f"{code}@{region} on {day}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"nothing published for {what}")
    return r


def _with_band(d: dict[str, Any]) -> dict[str, Any]:
    """Add the outlier band (median ± half-width, fen) to a price disclosure. The computation stores the exact
    median and MAD only; the band follows from them and the methodology version named beside them."""
    m = load_methodology()
    if "median_fen" in d and "mad_fen" in d and d.get("methodology_version") == m.version:
        band = Band(int(Decimal(d["median_fen"]) * 2), int(Decimal(d["mad_fen"]) * 4), m.outliers)
        d["band_fen"] = {
            "median": _plain(band.median_fen),
            "low": _plain(band.low_fen),
            "high": _plain(band.high_fen),
        }
    return d


def _plain(x: Decimal) -> str:
    return format(x.normalize(), "f") if x != 0 else "0"


def disclosure(s: Session, code: str, region: str, day: date, version: int | None) -> dict[str, Any]:
    """A published value with everything disclosed about it (counts and reasons; never who contributed)."""
    r = _version_row(s, code, region, day, version)
    newest = s.execute(
        select(pv.c.version)
        .where(pv.c.code == code, pv.c.region == region, pv.c.date == day)
        .order_by(pv.c.version.desc())
        .limit(1)
    ).scalar_one()
    return _item(r, r.version < newest) | {"disclosure": _with_band(_disclosure(r.audit))}


def audit_inputs(s: Session, code: str, region: str, day: date, version: int | None) -> dict[str, Any]:
    """Admin: the inputs of one published price version, each with its tier, price, quantity and the reason it
    was used or excluded. Contributors appear as neither names nor codes."""
    r = _version_row(s, code, region, day, version)
    if r.kind == INDEX:
        return dict(
            code=code,
            region=region,
            date=day,
            version=r.version,
            kind=INDEX,
            components=_disclosure(r.audit).get("components", {}),
            inputs=[],
        )
    blob = s.execute(
        select(series_inputs.c.input_ids, series_inputs.c.input_reasons).where(
            series_inputs.c.code == code,
            series_inputs.c.region == region,
            series_inputs.c.date == day,
            series_inputs.c.version == r.version,
        )
    ).first()
    if blob is None:  # a seeded reference price has no inputs
        return dict(code=code, region=region, date=day, version=r.version, kind=PRICE, inputs=[])
    ids, reasons = audit.decode_inputs(blob.input_ids, blob.input_reasons)
    o = observations
    by_id: dict[int, Any] = {}
    id_list = ids.tolist()
    for i in range(0, len(id_list), 900):
        for row in s.execute(
            select(
                o.c.id,
                o.c.city_code,
                o.c.tier,
                o.c.kind,
                o.c.unit_price_fen,
                o.c.qty_milli,
                o.c.observed_at,
                o.c.source,
                o.c.related_party,
            ).where(o.c.id.in_(id_list[i : i + 900]))
        ):
            by_id[row.id] = row
    inputs = []
    for oid, code_ in zip(id_list, reasons.tolist(), strict=True):
        row = by_id[oid]
        inputs.append(
            dict(
                observation_id=oid,
                city_code=row.city_code,
                tier=row.tier,
                kind=row.kind,
                unit_price_fen=row.unit_price_fen,
                qty=qty_str(_milli(row.qty_milli)),
                observed_at=row.observed_at,
                source=row.source,
                related_party=row.related_party,
                reason=audit.reason_name(code_),
            )
        )
    return dict(
        code=code,
        region=region,
        date=day,
        version=r.version,
        kind=PRICE,
        methodology_version=r.methodology_version,
        disclosure=_with_band(_disclosure(r.audit)),
        inputs=inputs,
    )


INPUTS_DEFAULT_LIMIT, INPUTS_MAX_LIMIT = 100, 1000


def day_inputs(
    s: Session,
    day: date,
    *,
    category: str | None,
    city_code: str | None,
    tier: str | None,
    limit: int | None,
    cursor: str | None,
) -> dict[str, Any]:
    """Admin: the inputs recorded for a day (whichever computation will read them, or has), in id order. What
    came in before the day's computation can be checked here; contributors appear as neither names nor codes."""
    o = observations
    n = min(limit or INPUTS_DEFAULT_LIMIT, INPUTS_MAX_LIMIT)
    stmt = select(
        o.c.id,
        o.c.category,
        o.c.city_code,
        o.c.tier,
        o.c.kind,
        o.c.unit_price_fen,
        o.c.qty_milli,
        o.c.observed_at,
        o.c.source,
        o.c.related_party,
    ).where(o.c.day == day)
    if category:
        stmt = stmt.where(o.c.category == category)
    if city_code:
        stmt = stmt.where(o.c.city_code == city_code)
    if tier:
        stmt = stmt.where(o.c.tier == tier)
    if cursor:
        try:
            stmt = stmt.where(o.c.id > int(cursor))
        except ValueError:
            raise ValidationFailed.field("cursor", "not a cursor of this list") from None
    rows = s.execute(stmt.order_by(o.c.id).limit(n + 1)).all()
    return dict(
        date=day,
        items=[
            dict(
                observation_id=r.id,
                category=r.category,
                city_code=r.city_code,
                tier=r.tier,
                kind=r.kind,
                unit_price_fen=r.unit_price_fen,
                qty=qty_str(_milli(r.qty_milli)),
                observed_at=r.observed_at,
                source=r.source,
                related_party=r.related_party,
            )
            for r in rows[:n]
        ],
        next_cursor=str(rows[n - 1].id) if len(rows) > n else None,
    )


def _milli(q: int) -> Decimal:
    return Decimal(q).scaleb(-3)
