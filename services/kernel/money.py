"""Money in integer fen (分), quantities as Decimal. Never float.

Rounding of tax and derived amounts is half-up to the fen, applied once where a rule says so.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

FEN_PER_YUAN = 100
KG_PLACES = Decimal("0.001")
_PLAIN = re.compile(r"-?[0-9]+(\.[0-9]+)?")
MAX_QTY_DIGITS = 12  # a trillion kg: anything larger is a typo, and quantize() would overflow the context


def to_fen(amount: Decimal | int | str) -> int:
    """Round a Decimal amount of fen half-up to a whole fen."""
    return int(Decimal(amount).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def yuan_to_fen(yuan: Decimal | int | str) -> int:
    return to_fen(Decimal(str(yuan)) * FEN_PER_YUAN)


def fen_to_yuan_str(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def parse_qty(value: str | int | Decimal, places: Decimal = KG_PLACES) -> Decimal:
    """A quantity as a Decimal with 3 places (kg) — raises ValueError with a clear message."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"not a decimal number: {value!r}")
    text = value if isinstance(value, str) else str(value)
    # plain ASCII decimals only: Decimal() alone reads "２_１" as 21, "1E2" as 100 and " 7 " as 7
    if not _PLAIN.fullmatch(text):
        raise ValueError(f'not a plain decimal number such as "12.345": {value!r}'[:120])
    try:
        q = Decimal(text)
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not q.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if q.adjusted() >= MAX_QTY_DIGITS:
        raise ValueError(f"too large: at most {MAX_QTY_DIGITS} digits before the decimal point")
    if q != q.quantize(places):
        raise ValueError(f"at most {abs(int(places.as_tuple().exponent))} decimal places")
    return q.quantize(places)


def qty_str(q: Decimal) -> str:
    return format(q.quantize(KG_PLACES), "f")


def line_amount_fen(unit_price_fen: int, qty: Decimal) -> int:
    """Amount of one priced line: unit price × quantity, half-up to the fen."""
    return to_fen(Decimal(unit_price_fen) * qty)
