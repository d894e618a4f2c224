"""Check digits of Chinese identity numbers and device identifiers, with clear, field-naming errors.

- 居民身份证号码 (GB 11643-1999): 6-digit region (GB/T 2260) + 8-digit birth date (YYYYMMDD) + 3-digit sequence
  + check character by ISO 7064 MOD 11-2 (`0`-`9` or `X`).
- 统一社会信用代码 (GB 32100-2015): registration authority (1) + entity type (1) + region (6 digits) + 主体标识码 (9)
  + check character, all from a 31-character set (0-9 and A-Y without I, O, S, V, Z); weights 3^i mod 31.
- IMEI (3GPP TS 23.003): 15 digits, the last one a Luhn check digit over the first 14.

Each `validate_*` returns the normalised value or raises `ValidationFailed` naming the field; `*_check_char`
compute the check character (used by the tests' generators and by fixtures that need valid values).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any

from .errors import ValidationFailed

# --- 居民身份证号码 (GB 11643) -------------------------------------------------------------------

_ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
_ID_CHECK = "10X98765432"  # check character by (sum of weighted digits) mod 11
# First two digits: the province-level division (GB/T 2260), plus 81/82/83 used by the residence permits of
# Hong Kong, Macao and Taiwan residents (港澳台居民居住证), which share the format.
ID_PROVINCES = frozenset(
    {
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
    }
)
ID_EARLIEST_BIRTH = date(1900, 1, 1)


def id_number_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits of a 身份证号."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("needs the first 17 digits")
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def validate_id_number(value: object, field: str = "id_number", *, today: date | None = None) -> str:
    """A valid 18-character 身份证号, upper-cased (`x` → `X`); else ValidationFailed naming `field`."""
    if not isinstance(value, str):
        raise ValidationFailed.field(field, "must be a string of 18 characters (居民身份证号码)")
    v = value.strip().upper()
    if len(v) != 18:
        raise ValidationFailed.field(field, f"must be 18 characters (居民身份证号码, GB 11643), got {len(v)}")
    if not (v[:17].isascii() and v[:17].isdigit()) or not (v[17].isdigit() or v[17] == "X"):
        raise ValidationFailed.field(field, "must be 17 digits followed by a digit or X")
    if v[:2] not in ID_PROVINCES or v[2:6] == "0000" and v[:2] not in {"71", "81", "82", "83"}:
        raise ValidationFailed.field(
            field, f"the region code {v[:6]} is not a province-level division prefix"
        )
    try:
        born = date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        raise ValidationFailed.field(field, f"the birth date {v[6:14]} is not a calendar date") from None
    if not ID_EARLIEST_BIRTH <= born <= (today or date.today()):  # noqa: DTZ011 - a birth date has no time zone
        raise ValidationFailed.field(field, f"the birth date {born.isoformat()} is out of range")
    if id_number_check_char(v[:17]) != v[17]:
        raise ValidationFailed.field(field, "the check character is wrong (ISO 7064 MOD 11-2): mistyped?")
    return v


# --- 统一社会信用代码 (GB 32100) --------------------------------------------------------------

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
_USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]  # 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character of the first 17 characters of a 统一社会信用代码."""
    if len(first17) != 17 or any(c not in _USCC_VALUE for c in first17):
        raise ValueError("needs 17 characters of the USCC character set")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS))
    return USCC_CHARSET[(31 - total % 31) % 31]


def validate_uscc(value: object, field: str = "uscc") -> str:
    """A valid 18-character 统一社会信用代码, upper-cased; else ValidationFailed naming `field`."""
    if not isinstance(value, str):
        raise ValidationFailed.field(field, "must be a string of 18 characters (统一社会信用代码)")
    v = value.strip().upper()
    if len(v) != 18:
        raise ValidationFailed.field(
            field, f"must be 18 characters (统一社会信用代码, GB 32100), got {len(v)}"
        )
    bad = sorted({c for c in v if c not in _USCC_VALUE})
    if bad:
        raise ValidationFailed.field(
            field,
            f"contains characters not used in a 统一社会信用代码: {''.join(bad)}"
            " (digits and A-Y without I, O, S, V, Z)",
        )
    if not v[2:8].isdigit():
        raise ValidationFailed.field(field, f"characters 3-8 must be the 6-digit region code, got {v[2:8]}")
    if v[0] == "0" or v[1] == "0":
        raise ValidationFailed.field(field, "the registration authority and entity type codes cannot be 0")
    if uscc_check_char(v[:17]) != v[17]:
        raise ValidationFailed.field(field, "the check character is wrong (GB 32100): mistyped?")
    return v


# --- IMEI (Luhn) ------------------------------------------------------------------------------------


def luhn_check_digit(payload: str) -> str:
    """The Luhn check digit to append to `payload` (digits)."""
    if not payload.isascii() or not payload.isdigit():
        raise ValueError("digits only")
    total = 0
    for i, c in enumerate(reversed(payload)):
        d = int(c)
        if i % 2 == 0:  # every second digit from the right of the payload is doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


_SEPARATORS = re.compile(r"[\s-]")


def validate_imei(value: object, field: str = "imei") -> str:
    """A valid 15-digit IMEI (spaces and dashes allowed as separators); else ValidationFailed naming `field`."""
    if not isinstance(value, str):
        raise ValidationFailed.field(field, "must be a string of 15 digits (IMEI)")
    v = _SEPARATORS.sub("", value)
    if len(v) != 15 or not v.isascii() or not v.isdigit():
        raise ValidationFailed.field(field, "must be 15 digits (IMEI)")
    if luhn_check_digit(v[:14]) != v[14]:
        raise ValidationFailed.field(field, "the check digit is wrong (Luhn): mistyped?")
    return v


def is_valid(validator: Callable[[Any], object], value: object) -> bool:
    """Whether `validator` (any validate_* above) accepts the value."""
    try:
        validator(value)
        return True
    except ValidationFailed:
        return False
