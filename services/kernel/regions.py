"""Administrative divisions (行政区划代码, GB/T 2260): names, levels, coordinates, the price fallback chain.

The table is not typed by hand: it is the civil-affairs table bundled with the `cpca` package
(`cpca/resources/adcodes.csv`: 12-digit adcode, name, longitude, latitude). We read that file through
`importlib.resources` from a module object built from cpca's import spec *without executing it*, because
importing `cpca` itself pulls in pandas (hundreds of milliseconds and megabytes we do not need).

Codes here are the 6-digit form used everywhere in the platform (`city_code`):

- province (省级):   ``PP0000``  e.g. 440000 广东省
- city (地级):       ``PPCC00``  e.g. 440300 深圳市 (also the 市辖区/县 placeholders of 直辖市, e.g. 110100)
- county (县级):     ``PPCCDD``  e.g. 440305 南山区
- national (全国):   ``000000``  not a row of the table; the top of every fallback chain.

The table is loaded once, lazily, on first use.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from .errors import ValidationFailed

NATIONAL = "000000"
NATIONAL_NAME = "全国"

Level = Literal["national", "province", "city", "county"]

_SOURCE_PACKAGE = "cpca"
_SOURCE_FILE = ("resources", "adcodes.csv")


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # 6 digits
    name: str
    level: Level
    lat: float | None  # WGS-84-ish degrees as shipped by the source; None where the table has none
    lng: float | None


def level_of(code: str) -> Level:
    """The level a well-formed 6-digit code denotes by its shape (no table look-up)."""
    if code == NATIONAL:
        return "national"
    if code.endswith("0000"):
        return "province"
    if code.endswith("00"):
        return "city"
    return "county"


def _read_source_csv() -> str:
    spec = importlib.util.find_spec(_SOURCE_PACKAGE)  # a top-level find_spec does not import the package
    if spec is None:
        raise RuntimeError("the administrative division table needs the 'cpca' package installed")
    unexecuted = importlib.util.module_from_spec(
        spec
    )  # gives resources a package anchor; cpca/__init__ never runs
    return resources.files(unexecuted).joinpath(*_SOURCE_FILE).read_text(encoding="utf-8")


def _parse_table(text: str) -> dict[str, Region]:
    table: dict[str, Region] = {}
    for row in csv.DictReader(io.StringIO(text)):
        adcode = row["adcode"].strip()
        if len(adcode) != 12 or not adcode.isdigit() or adcode[6:] != "000000":
            continue  # township-level rows (乡镇) are below what the platform prices; none ship today
        code = adcode[:6]
        lng, lat = row.get("longitude", "").strip(), row.get("latitude", "").strip()
        table[code] = Region(
            code=code,
            name=row["name"].strip(),
            level=level_of(code),
            lat=float(lat) if lat else None,
            lng=float(lng) if lng else None,
        )
    table[NATIONAL] = Region(NATIONAL, NATIONAL_NAME, "national", None, None)
    return table


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Region]:
    return _parse_table(_read_source_csv())


def _well_formed(code: object) -> bool:
    return isinstance(code, str) and len(code) == 6 and code.isascii() and code.isdigit()


def is_known(code: object) -> bool:
    """True for a 6-digit code in the table, and for NATIONAL."""
    return _well_formed(code) and code in _table()


def region(code: str) -> Region:
    """The division with this 6-digit code; KeyError if unknown (use validate_city_code on user input)."""
    if not _well_formed(code):
        raise KeyError(code)
    return _table()[code]


def province_of(code: str) -> str:
    """The province-level code: first two digits + '0000' (NATIONAL stays NATIONAL)."""
    if not _well_formed(code):
        raise ValueError(f"not a 6-digit division code: {code!r}")
    return NATIONAL if code == NATIONAL else code[:2] + "0000"


def all_regions() -> list[Region]:
    """Every division of the table (without NATIONAL), sorted by code."""
    return sorted((r for r in _table().values() if r.level != "national"), key=lambda r: r.code)


def validate_city_code(code: object, field: str = "city_code", *, allow_national: bool = False) -> str:
    """The code itself if it is a known GB/T 2260 division (province, city or county level).

    Raises ValidationFailed naming `field` for anything malformed or unknown. NATIONAL is refused unless
    `allow_national` (an address is never "all of China"; a price query may be).
    """
    if not _well_formed(code):
        raise ValidationFailed.field(
            field, f"must be a 6-digit administrative division code (GB/T 2260), got {code!r}"
        )
    assert isinstance(code, str)
    if code == NATIONAL:
        if allow_national:
            return code
        raise ValidationFailed.field(
            field, "000000 (national) is not a place; give a province, city or county code"
        )
    if code not in _table():
        raise ValidationFailed.field(field, f"unknown administrative division code {code}")
    return code


def fallback_chain(city_code: str) -> list[str]:
    """Regions to try for a price, nearest first: the code, its province, then NATIONAL (no duplicates).

    The prefecture-level city of a county is deliberately not a step: price series are kept per city_code as
    given, per province and nationally (see the price-index methodology, "Fallbacks").
    """
    code = validate_city_code(city_code, allow_national=True)
    chain: list[str] = []
    for step in (code, province_of(code), NATIONAL):
        if step not in chain:
            chain.append(step)
    return chain
