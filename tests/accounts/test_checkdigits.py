"""身份证号 (GB 11643), 统一社会信用代码 (GB 32100) and IMEI (Luhn): generated valid values pass, any single-character
change fails, and the errors name the field."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kernel.checkdigits import (
    ID_PROVINCES,
    USCC_CHARSET,
    id_number_check_char,
    is_valid,
    luhn_check_digit,
    uscc_check_char,
    validate_id_number,
    validate_imei,
    validate_uscc,
)
from services.kernel.errors import ValidationFailed

MAINLAND = sorted(p for p in ID_PROVINCES if p not in {"71", "81", "82", "83"})


@st.composite
def id_numbers(draw) -> str:  # noqa: ANN001
    province = draw(st.sampled_from(MAINLAND))
    rest = draw(st.integers(1, 9999)).__format__("04d")
    born = date(1900, 1, 1) + timedelta(days=draw(st.integers(0, (date.today() - date(1900, 1, 1)).days)))
    seq = draw(st.integers(0, 999)).__format__("03d")
    first17 = province + rest + born.strftime("%Y%m%d") + seq
    return first17 + id_number_check_char(first17)


@st.composite
def usccs(draw) -> str:  # noqa: ANN001
    chars = st.sampled_from(USCC_CHARSET)
    head = draw(st.sampled_from(USCC_CHARSET[1:])) + draw(st.sampled_from(USCC_CHARSET[1:]))
    region = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=6, max_size=6)))
    body = "".join(draw(st.lists(chars, min_size=9, max_size=9)))
    first17 = head + region + body
    return first17 + uscc_check_char(first17)


@st.composite
def imeis(draw) -> str:  # noqa: ANN001
    payload = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=14, max_size=14)))
    return payload + luhn_check_digit(payload)


def _changed(value: str, pos: int, char: str) -> str:
    return value[:pos] + char + value[pos + 1 :]


# printable ASCII, CJK and full-width digits: anything a user could type instead
_any_char = st.one_of(st.characters(min_codepoint=0x21, max_codepoint=0x7E), st.sampled_from("０１Ｘ中"))


@settings(max_examples=300, deadline=None)
@given(id_numbers())
def test_generated_id_numbers_pass(v: str) -> None:
    assert validate_id_number(v) == v
    assert validate_id_number(v.lower()) == v  # a lower-case x is the same character


@settings(max_examples=500, deadline=None)
@given(id_numbers(), st.integers(0, 17), _any_char)
def test_any_single_change_of_an_id_number_fails(v: str, pos: int, char: str) -> None:
    if char.upper() == v[pos]:
        return
    assert not is_valid(validate_id_number, _changed(v, pos, char))


@settings(max_examples=300, deadline=None)
@given(usccs())
def test_generated_usccs_pass(v: str) -> None:
    assert validate_uscc(v) == v


@settings(max_examples=500, deadline=None)
@given(usccs(), st.integers(0, 17), _any_char)
def test_any_single_change_of_a_uscc_fails(v: str, pos: int, char: str) -> None:
    if char.upper() == v[pos]:
        return
    assert not is_valid(validate_uscc, _changed(v, pos, char))


@settings(max_examples=300, deadline=None)
@given(imeis())
def test_generated_imeis_pass(v: str) -> None:
    assert validate_imei(v) == v


@settings(max_examples=500, deadline=None)
@given(imeis(), st.integers(0, 14), _any_char)
def test_any_single_change_of_an_imei_fails(v: str, pos: int, char: str) -> None:
    if char == v[pos]:
        return
    assert not is_valid(validate_imei, _changed(v, pos, char))


@pytest.mark.parametrize("value", ["11010519491231002X", "440305199001011235"[:-1] + "X"])
def test_known_id_numbers(value: str) -> None:
    assert validate_id_number(value) == value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("11010519491231002", "18 characters"),
        ("1101051949123100XX", "17 digits"),
        ("99010519491231002X", "region"),
        ("110105194902300021", "birth date"),  # 30 February
        ("110105189912310021", "out of range"),
        ("110105194912310021", "check character"),
    ],
)
def test_id_number_errors_name_the_field_and_the_reason(value: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_id_number(value, field="seller.id_number")
    assert exc.value.errors[0]["field"] == "seller.id_number" and words in exc.value.errors[0]["message"]


def test_known_usccs_and_errors() -> None:
    assert validate_uscc("91350100m000100y43") == "91350100M000100Y43"
    for bad, words in [
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y4I", "not used"),
        ("91350100M000100Y44", "check character"),
        ("9135A100M000100Y43", "region"),
    ]:
        with pytest.raises(ValidationFailed) as exc:
            validate_uscc(bad)
        assert exc.value.errors[0]["field"] == "uscc" and words in exc.value.errors[0]["message"], bad


def test_known_imeis_and_errors() -> None:
    assert validate_imei("49-015420-323751-8") == "490154203237518"
    for bad, words in [("49015420323751", "15 digits"), ("490154203237519", "check digit")]:
        with pytest.raises(ValidationFailed) as exc:
            validate_imei(bad, field="device.imei")
        assert exc.value.errors[0]["field"] == "device.imei" and words in exc.value.errors[0]["message"]
