"""Places: the administrative division of an address (GB/T 2260), its display name, the seat coordinates.

Backed by services.kernel.regions (the civil-affairs table); without it, a city_code is only checked for shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from services.kernel.errors import ValidationFailed

try:
    from services.kernel import regions
except ImportError:  # pragma: no cover - the kernel module ships with the platform
    regions = None  # type: ignore[assignment]

# names of the placeholder rows of municipalities (直辖市): not shown in a district label
_PLACEHOLDERS = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}


@dataclass(frozen=True)
class Seat:
    name: str
    level: str
    lat: float
    lng: float


def validate_city_code(code: str, field: str = "city_code") -> str:
    if regions is not None:
        return regions.validate_city_code(code, field)
    if not (isinstance(code, str) and len(code) == 6 and code.isdigit() and code != "000000"):
        raise ValidationFailed.field(field, "must be a 6-digit administrative division code (GB/T 2260)")
    return code


@functools.lru_cache(maxsize=4096)
def district_of(city_code: str) -> str:
    """The district-level place name shown to collectors before they accept (e.g. "北京市 朝阳区")."""
    if regions is None:
        return city_code
    names = []
    for code in dict.fromkeys([city_code[:2] + "0000", city_code[:4] + "00", city_code]):
        try:
            name = regions.region(code).name
        except KeyError:
            continue
        if name not in _PLACEHOLDERS and name not in names:
            names.append(name)
    return " ".join(names) or city_code


@functools.lru_cache(maxsize=4096)
def seat_of(city_code: str) -> Seat | None:
    """Where the division's seat is (for the "coordinates match the city_code" check); None when unknown or a
    province (too large to say anything useful)."""
    if regions is None:
        return None
    try:
        r = regions.region(city_code)
    except KeyError:
        return None
    if r.lat is None or r.lng is None or r.level not in ("city", "county"):
        return None
    return Seat(r.name, r.level, r.lat, r.lng)
