"""Dispatch: open jobs near a collector, nearest first, through the geohash index.

A k-nearest search in growing circles: cover the current circle with a few geohash cells, fetch the open
pickups of those cells (index range scans on `(status, geohash)`), keep those the collector may take whose exact
distance is inside the circle. Once `limit` of them are inside it, no pickup outside can be nearer, so the answer
is exact; otherwise the circle grows (by the density seen so far) up to the radius asked for. With 100,000 open
jobs in a city this touches a few hundred rows, not the table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select, union_all
from sqlalchemy.orm import Session

from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork
from services.kernel.errors import ValidationFailed
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import leaves

from . import geo
from .domain import model as m
from .domain.commands import JobsQuery
from .handlers import collector_of
from .settings import settings_of
from .store import pickup_lines, pickups
from .views import ts

FIRST_CIRCLE_KM = 0.5
# Candidates carry only what the search needs (no datetimes: parsing them for every candidate costs more than
# the query); what a job list shows is read for the chosen few.
_COLS = (pickups.c.id, pickups.c.lat, pickups.c.lng, pickups.c.categories)


@functools.cache
def _candidates(n_cells: int) -> Any:
    """Open pickups in `n_cells` geohash cells (index range scans on (status, geohash)), inside the circle's
    bounding box and not yet started: built once per cell count, run with bound values."""
    parts = [
        select(*_COLS).where(
            pickups.c.status == m.REQUESTED,
            pickups.c.geohash >= bindparam(f"lo{i}"),
            pickups.c.geohash < bindparam(f"hi{i}"),
            pickups.c.lat.between(bindparam("lat_lo"), bindparam("lat_hi")),
            pickups.c.lng.between(bindparam("lng_lo"), bindparam("lng_hi")),
            pickups.c.window_start > bindparam("now"),
        )
        for i in range(n_cells)
    ]
    return parts[0] if n_cells == 1 else union_all(*parts)


def nearest_open(
    session: Session,
    lat: float,
    lng: float,
    radius_km: float,
    limit: int,
    now: datetime,
    keep: Callable[[Any], bool] = lambda r: True,
) -> list[tuple[float, Any]]:
    """Up to `limit` (distance_km, row) of open pickups within `radius_km` that pass `keep`, nearest first."""
    circle = min(FIRST_CIRCLE_KM, radius_km)
    while True:
        cells = geo.covering_cells(lat, lng, circle)
        lat_lo, lat_hi, lng_lo, lng_hi = geo.bbox(lat, lng, circle)
        params: dict[str, Any] = dict(lat_lo=lat_lo, lat_hi=lat_hi, lng_lo=lng_lo, lng_hi=lng_hi, now=now)
        for i, cell in enumerate(cells):
            params[f"lo{i}"], params[f"hi{i}"] = geo.cell_range(cell)
        rows = session.execute(_candidates(len(cells)), params).all()
        inside = sorted(
            ((d, r) for r in rows if (d := geo.haversine_km(lat, lng, r.lat, r.lng)) <= circle),
            key=lambda x: (x[0], x[1].id),
        )
        found = []
        for d, r in inside:  # nearest first: `keep` runs on as few rows as it can
            if keep(r):
                found.append((d, r))
                if len(found) == limit:
                    return found
        if circle >= radius_km:
            return found
        # grow by the density seen so far (area ∝ r²): enough for `limit` with a margin, never less than ×1.25
        factor = 2.0 if not found else max(1.25, math.sqrt(limit / len(found)) * 1.2)
        circle = min(circle * factor, radius_km)


def list_jobs(rt: ServiceRuntime, principal: Principal, q: JobsQuery, now: datetime | None = None) -> dict:
    """Open pickups the collector may take (their categories, inside their verified area), nearest first.

    Only the district and the distance are shown: the address is the resident's, revealed on accepting."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    if (q.lat is None) != (q.lng is None):
        raise ValidationFailed.field("lat" if q.lat is None else "lng", "give lat and lng together")
    with UnitOfWork(rt.db, readonly=True) as uow:
        col = collector_of(uow.session, principal)
        lat, lng = (q.lat, q.lng) if q.lat is not None else (col.lat, col.lng)
        radius = min(q.radius_km or col.radius_km, s.jobs_max_radius_km)
        skills = frozenset(col.categories.split())
        everything = skills >= _ALL_LEAVES

        def keep(r: Any) -> bool:
            return (everything or set(r.categories.split()) <= skills) and geo.haversine_km(
                col.lat, col.lng, r.lat, r.lng
            ) <= col.radius_km

        found = nearest_open(uow.session, lat, lng, radius, q.limit, now, keep)
        ids = [r.id for _, r in found]
        items: dict[str, list] = {}
        shown = {}
        if ids:
            shown = {r.id: r for r in uow.session.execute(_SHOWN, {"ids": ids})}
            for ln in uow.session.execute(_ITEMS, {"ids": ids}):
                items.setdefault(ln.pickup_id, []).append(
                    {"category": ln.category, "est_qty": ln.est_qty, "unit": ln.unit}
                )
    tz = s.tz
    out = []
    for d, c in found:
        r = shown[c.id]
        out.append(
            {
                "id": r.id,
                "district": r.district,
                "city_code": r.city_code,
                "distance_km": round(d, 1),
                "items": items.get(r.id, []),
                "window": {"start": ts(r.window_start, tz), "end": ts(r.window_end, tz)},
                "quote_total_fen": r.quote_total_fen,
                "created_at": ts(r.created_at, tz),
            }
        )
    return {"items": out, "next_cursor": None, "center": {"lat": lat, "lng": lng}, "radius_km": radius}


_SHOWN = select(
    pickups.c.id,
    pickups.c.district,
    pickups.c.city_code,
    pickups.c.window_start,
    pickups.c.window_end,
    pickups.c.quote_total_fen,
    pickups.c.created_at,
).where(pickups.c.id.in_(bindparam("ids", expanding=True)))
_ITEMS = (
    select(pickup_lines.c.pickup_id, pickup_lines.c.category, pickup_lines.c.est_qty, pickup_lines.c.unit)
    .where(pickup_lines.c.pickup_id.in_(bindparam("ids", expanding=True)), pickup_lines.c.est_qty.isnot(None))
    .order_by(pickup_lines.c.category)
)
_ALL_LEAVES = frozenset(c.code for c in leaves())
