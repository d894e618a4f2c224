"""Dispatch: geohash cells cover every point of a circle; the nearest-jobs search equals a brute-force scan."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.booking import geo
from services.booking.dispatch import nearest_open

from .support import HOME, app_client, auth, booking_body, platform_for, seed_open_jobs, uid, verify_collector


def test_geohash_known_values():
    assert geo.encode(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert geo.encode(-25.382708, -49.265506, 7) == "6gkzwgj"  # both from the geohash.org reference examples
    c = geo.decode(geo.encode(39.9087, 116.4605, 5))
    assert c.lat_min <= 39.9087 <= c.lat_max and c.lng_min <= 116.4605 <= c.lng_max


def _offset(lat: float, lng: float, km: float, bearing_deg: float) -> tuple[float, float]:
    d = km / geo.EARTH_RADIUS_KM
    b, p1, l1 = math.radians(bearing_deg), math.radians(lat), math.radians(lng)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), math.degrees(l2)


@given(
    lat=st.floats(18.5, 53),
    lng=st.floats(74, 134),
    radius=st.floats(0.05, 60),
    frac=st.floats(0, 0.999),
    bearing=st.floats(0, 360),
)
@settings(max_examples=300, deadline=None)
def test_covering_cells_contain_every_point_of_the_circle(lat, lng, radius, frac, bearing):
    cells = geo.covering_cells(lat, lng, radius)
    assert 1 <= len(cells) <= 16
    plat, plng = _offset(lat, lng, radius * frac, bearing)
    assert geo.haversine_km(lat, lng, plat, plng) <= radius
    h = geo.encode(plat, plng)
    assert any(h.startswith(c) for c in cells), (h, cells)
    lo, hi = geo.cell_range(next(c for c in cells if h.startswith(c)))
    assert lo <= h < hi


def _brute(jobs, lat, lng, radius, limit):  # noqa: ANN001, ANN202
    found = sorted((geo.haversine_km(lat, lng, jl, jg), jid) for jid, jl, jg in jobs)
    return [jid for d, jid in found if d <= radius][:limit]


def _nearest_equals_brute_force(settings_) -> None:  # noqa: ANN001
    platform = platform_for(settings_)
    rt = platform["booking"]
    jobs = seed_open_jobs(rt, 3000, HOME, spread_km=20, seed=3)
    rnd = random.Random(5)
    with rt.db.session() as s:
        for _ in range(40):
            lat = HOME[0] + rnd.uniform(-0.2, 0.2)
            lng = HOME[1] + rnd.uniform(-0.2, 0.2)
            radius = rnd.choice([0.3, 1, 3, 8, 25])
            limit = rnd.choice([1, 10, 50])
            got = [r.id for _, r in nearest_open(s, lat, lng, radius, limit, datetime.now(UTC))]
            want = _brute(jobs, lat, lng, radius, limit)
            assert got == want, (lat, lng, radius, limit)


def test_nearest_jobs_equal_brute_force_sqlite(sqlite_settings):
    _nearest_equals_brute_force(sqlite_settings)


@pytest.mark.postgres
def test_nearest_jobs_equal_brute_force_postgres(pg_settings):
    _nearest_equals_brute_force(pg_settings)


def test_open_jobs_are_found_through_the_index(sqlite_settings):
    platform = platform_for(sqlite_settings)
    with platform["booking"].db.session() as s:
        plan = s.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT id FROM pickups WHERE status = 'requested' "
                "AND geohash >= 'wx4g2' AND geohash < 'wx4g2~'"
            )
        ).all()
    assert "ix_pickups_status_geohash" in " ".join(str(r) for r in plan)


async def test_jobs_nearest_first_within_radius(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    col = uid("col")
    verify_collector(platform, col, radius_km=10)
    r_h = auth(s, uid("res"), "resident")
    ids = []
    for km in (3.0, 0.5, 1.5, 12.0):  # 12 km: outside the collector's 10 km area
        lat, lng = _offset(*HOME, km, 90)
        r = await client.post("/v1/pickups", json=booking_body(lat=lat, lng=lng), headers=r_h)
        assert r.status == 201, await r.text()
        ids.append((await r.json())["id"])
    c_h = auth(s, col, "collector")
    page = await (await client.get("/v1/jobs", headers=c_h)).json()
    assert [j["id"] for j in page["items"]] == [ids[1], ids[2], ids[0]]
    assert [j["distance_km"] for j in page["items"]] == [0.5, 1.5, 3.0]
    page = await (
        await client.get(f"/v1/jobs?lat={HOME[0]}&lng={HOME[1]}&radius_km=2&limit=1", headers=c_h)
    ).json()
    assert [j["id"] for j in page["items"]] == [ids[1]]
    r = await client.get(f"/v1/jobs?lat={HOME[0]}", headers=c_h)
    assert r.status == 400
