"""The GB/T 2260 division table (from the cpca package's bundled CSV) and the price fallback chain."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.kernel import regions
from services.kernel.errors import ValidationFailed
from services.kernel.regions import (
    NATIONAL,
    fallback_chain,
    is_known,
    province_of,
    region,
    validate_city_code,
)


def test_a_county_has_its_name_level_and_coordinates() -> None:
    r = region("440305")
    assert (r.code, r.name, r.level) == ("440305", "南山区", "county")
    assert r.lat == pytest.approx(22.53, abs=0.05) and r.lng == pytest.approx(113.93, abs=0.05)


@pytest.mark.parametrize(
    ("code", "name", "level"),
    [
        ("110000", "北京市", "province"),
        ("440000", "广东省", "province"),
        ("440300", "深圳市", "city"),
        ("330100", "杭州市", "city"),
        ("110101", "东城区", "county"),
        ("650000", "新疆维吾尔自治区", "province"),
    ],
)
def test_levels_follow_the_shape_of_the_code(code: str, name: str, level: str) -> None:
    assert region(code).name == name
    assert region(code).level == level


def test_national_is_a_region_but_not_a_row_of_the_table() -> None:
    assert region(NATIONAL).level == "national" and region(NATIONAL).name == "全国"
    assert is_known(NATIONAL)
    assert all(r.code != NATIONAL for r in regions.all_regions())


def test_the_table_is_the_full_civil_affairs_table() -> None:
    rows = regions.all_regions()
    levels = [r.level for r in rows]
    assert levels.count("province") == 34  # incl. 台湾, 香港, 澳门
    assert levels.count("city") > 300 and levels.count("county") > 2800
    assert [r.code for r in rows] == sorted(r.code for r in rows)


def test_rows_without_coordinates_in_the_source_have_none() -> None:
    r = region("469000")  # 省直辖县级行政区划: a grouping row with no coordinates in the source
    assert r.lat is None and r.lng is None


def test_unknown_and_malformed_codes_are_not_known() -> None:
    assert not is_known("999999")
    assert not is_known("44030")
    assert not is_known("4403055")
    assert not is_known("44030a")
    assert not is_known(440305)
    assert not is_known("４４０３０５")  # full-width digits are digits to str.isdigit, not to us
    with pytest.raises(KeyError):
        region("999999")


def test_province_of_takes_the_first_two_digits() -> None:
    assert province_of("440305") == "440000"
    assert province_of("440300") == "440000"
    assert province_of("440000") == "440000"
    assert province_of(NATIONAL) == NATIONAL
    with pytest.raises(ValueError):
        province_of("4403")


def test_fallback_chain_is_code_then_province_then_national_without_duplicates() -> None:
    assert fallback_chain("440305") == ["440305", "440000", NATIONAL]
    assert fallback_chain("440300") == ["440300", "440000", NATIONAL]
    assert fallback_chain("440000") == ["440000", NATIONAL]
    assert fallback_chain(NATIONAL) == [NATIONAL]


def test_fallback_chain_refuses_unknown_codes() -> None:
    with pytest.raises(ValidationFailed):
        fallback_chain("999999")


def test_validate_city_code_returns_known_codes() -> None:
    assert validate_city_code("330106") == "330106"
    assert validate_city_code("000000", allow_national=True) == NATIONAL


@pytest.mark.parametrize(
    "bad", ["", "3301", "33010600", "abcdef", "330106 ", None, 330106, "999999", "000000"]
)
def test_validate_city_code_names_the_field(bad: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_city_code(bad, field="pickup.city_code")
    assert exc.value.errors[0]["field"] == "pickup.city_code"
    assert exc.value.status == 400


def test_the_table_is_loaded_once() -> None:
    assert regions._table() is regions._table()


def test_loading_the_table_does_not_import_cpca_or_pandas() -> None:
    code = (
        "import sys\n"
        "from services.kernel import regions\n"
        "assert regions.region('440305').name == '南山区'\n"
        "assert 'cpca' not in sys.modules, 'cpca was imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
