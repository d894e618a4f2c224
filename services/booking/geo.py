"""Geohash cells and great-circle distances: the spatial index behind dispatch (派单/抢单) and slot areas.

A pickup's exact coordinates are stored with their geohash (precision 9, ~5 m). Cells are prefixes, so "every
pickup in cell `wx4g0`" is an index range scan on the geohash column (`>= 'wx4g0' AND < 'wx4g0~'`). A radius
search covers the circle's bounding box with a handful of cells at the finest precision that keeps the cell
count small, fetches the candidates through the index, then keeps those whose exact (haversine) distance is in
range. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"  # ascending in ASCII, so prefix ranges are string ranges
_DECODE = {c: i for i, c in enumerate(BASE32)}
EARTH_RADIUS_KM = 6371.0088
KM_PER_DEG_LAT = math.pi * EARTH_RADIUS_KM / 180
STORED_PRECISION = 9
# Upper bound of a prefix range: sorts after every geohash character (under byte order / collation "C").
RANGE_END = "~"


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _bits(precision: int) -> tuple[int, int]:
    """(latitude bits, longitude bits) of a geohash of this length (longitude takes the odd bit)."""
    total = 5 * precision
    return total // 2, (total + 1) // 2


def cell_size_deg(precision: int) -> tuple[float, float]:
    lat_bits, lng_bits = _bits(precision)
    return 180.0 / (1 << lat_bits), 360.0 / (1 << lng_bits)


def _index(lat: float, lng: float, precision: int) -> tuple[int, int]:
    lat_bits, lng_bits = _bits(precision)
    i = int((lat + 90.0) / 180.0 * (1 << lat_bits))
    j = int((lng + 180.0) / 360.0 * (1 << lng_bits))
    return min(max(i, 0), (1 << lat_bits) - 1), min(max(j, 0), (1 << lng_bits) - 1)


def _from_index(i: int, j: int, precision: int) -> str:
    lat_bits, lng_bits = _bits(precision)
    out = []
    value = 0
    lb, gb = lat_bits, lng_bits
    for k in range(5 * precision):
        if k % 2 == 0:  # even bits are longitude
            gb -= 1
            bit = (j >> gb) & 1
        else:
            lb -= 1
            bit = (i >> lb) & 1
        value = (value << 1) | bit
        if k % 5 == 4:
            out.append(BASE32[value])
            value = 0
    return "".join(out)


def encode(lat: float, lng: float, precision: int = STORED_PRECISION) -> str:
    i, j = _index(lat, lng, precision)
    return _from_index(i, j, precision)


@dataclass(frozen=True)
class Cell:
    lat_min: float
    lat_max: float
    lng_min: float
    lng_max: float

    @property
    def center(self) -> tuple[float, float]:
        return (self.lat_min + self.lat_max) / 2, (self.lng_min + self.lng_max) / 2


def decode(geohash: str) -> Cell:
    lat_lo, lat_hi, lng_lo, lng_hi = -90.0, 90.0, -180.0, 180.0
    even = True
    for ch in geohash:
        try:
            v = _DECODE[ch]
        except KeyError:
            raise ValueError(f"not a geohash: {geohash!r}") from None
        for shift in range(4, -1, -1):
            bit = (v >> shift) & 1
            if even:
                mid = (lng_lo + lng_hi) / 2
                lng_lo, lng_hi = (mid, lng_hi) if bit else (lng_lo, mid)
            else:
                mid = (lat_lo + lat_hi) / 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return Cell(lat_lo, lat_hi, lng_lo, lng_hi)


def bbox(lat: float, lng: float, radius_km: float) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lng_min, lng_max) of a box containing the circle."""
    dlat = radius_km / KM_PER_DEG_LAT
    coslat = max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-6)
    dlng = radius_km / (KM_PER_DEG_LAT * coslat)
    return lat - dlat, lat + dlat, lng - dlng, lng + dlng


def covering_cells(
    lat: float, lng: float, radius_km: float, max_cells: int = 16, finest: int = 8
) -> list[str]:
    """Geohash cells whose union contains every point within `radius_km` of (lat, lng).

    The finest precision (up to `finest`) whose cells over the circle's bounding box number at most `max_cells`;
    at worst one precision coarser than the radius (at most 4 cells).
    """
    lat_lo, lat_hi, lng_lo, lng_hi = bbox(lat, lng, radius_km)
    for precision in range(finest, 0, -1):
        i0, j0 = _index(lat_lo, lng_lo, precision)
        i1, j1 = _index(lat_hi, lng_hi, precision)
        if (i1 - i0 + 1) * (j1 - j0 + 1) <= max_cells or precision == 1:
            return sorted(_from_index(i, j, precision) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
    raise AssertionError("unreachable")


def cell_range(cell: str) -> tuple[str, str]:
    """[low, high) bounds of every geohash inside `cell`."""
    return cell, cell + RANGE_END
