"""Money in fen and quantities as Decimal: rounding half-up once, clear errors for bad quantities."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel.money import fen_to_yuan_str, line_amount_fen, parse_qty, qty_str, to_fen, yuan_to_fen

fen = st.integers(min_value=-(10**12), max_value=10**12)
qty = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("999999.999"), places=3)


def test_half_up_at_the_half_fen():
    assert to_fen(Decimal("0.5")) == 1 and to_fen(Decimal("1.5")) == 2 and to_fen(Decimal("2.5")) == 3
    assert to_fen(Decimal("-0.5")) == -1  # half away from zero, as the tax rules' 四舍五入
    assert to_fen(Decimal("0.49999")) == 0


@given(fen)
def test_yuan_string_round_trips(f):
    assert yuan_to_fen(fen_to_yuan_str(f)) == f


@given(st.integers(min_value=0, max_value=10**7), qty)
def test_line_amount_is_within_half_a_fen_of_the_exact_product(unit_price_fen, q):
    exact = Decimal(unit_price_fen) * q
    amount = line_amount_fen(unit_price_fen, q)
    assert abs(Decimal(amount) - exact) <= Decimal("0.5")
    assert isinstance(amount, int)


@given(qty)
def test_quantity_string_round_trips(q):
    assert parse_qty(qty_str(q)) == q


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", "1.0001", "1e133", ""])
def test_bad_quantities_are_refused_with_a_reason(bad):
    with pytest.raises(ValueError) as exc:
        parse_qty(bad)
    assert str(exc.value)
