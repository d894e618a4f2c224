"""From a settled pickup or a trade to the figures statistics keep: pure functions, no I/O.

Units kept exactly as integers: mass in grams, value in fen, CO2e in grams. A line in kg is its weight; a line in
pieces (件) gets its mass from the factor table's typical mass per piece (an estimate, flagged as one). The CO2e of
a line is its mass × the category's factor, rounded half-up to the gram once per line.

Carbon is counted once, where material enters recycling: at the doorstep pickup. A trade moves material already
counted (or bought outside the platform) onwards, so its CO2e is the savings *embodied* in the traded tonnes: shown
to the firms that traded it, never added to a region's total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from .factors import FactorTable, LowValueLists

GRAMS_PER_KG = 1000
GRAMS_PER_T = 1_000_000


def local_day(at: datetime, tz: ZoneInfo) -> date:
    """The calendar day of `at` where the figures are reported (a pickup at 23:30 in Shanghai is that day's)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(tz).date()


def month_of(day: date) -> date:
    return day.replace(day=1)


def grams(qty: Decimal, per_unit_kg: Decimal = Decimal(1)) -> int:
    return int((qty * per_unit_kg * GRAMS_PER_KG).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def co2e_grams(mass_g: int, factor_t_per_t: Decimal) -> int:
    return int((Decimal(mass_g) * factor_t_per_t).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class LineFigures:
    """One category of one settled pickup (lines of the same category merged)."""

    category: str
    unit: str  # kg | piece
    qty: Decimal  # kg or pieces, as weighed
    mass_g: int
    mass_estimated: bool  # pieces converted with a typical mass
    value_fen: int
    co2e_g: int
    low_value: bool
    factor_status: str


@dataclass(frozen=True)
class SettledLineIn:
    category: str
    unit: str
    qty: str
    amount_fen: int


def pickup_lines(
    lines: list[SettledLineIn], region_code: str, factors: FactorTable, low_value: LowValueLists
) -> list[LineFigures]:
    """The figures of a settled pickup's lines, one per category, in category order."""
    merged: dict[str, tuple[str, Decimal, int]] = {}
    for ln in lines:
        unit, qty, fen = merged.get(ln.category, (ln.unit, Decimal(0), 0))
        merged[ln.category] = (unit, qty + Decimal(ln.qty), fen + ln.amount_fen)
    out = []
    for category in sorted(merged):
        unit, qty, fen = merged[category]
        factor = factors.factor(category)
        if unit == "piece":
            # a category the table does not know (an older taxonomy) weighs nothing rather than a made-up mass
            mass = grams(qty, factors.piece_mass_kg.get(category, Decimal(0)))
        else:
            mass = grams(qty)
        out.append(
            LineFigures(
                category=category,
                unit=unit,
                qty=qty,
                mass_g=mass,
                mass_estimated=unit == "piece",
                value_fen=fen,
                co2e_g=co2e_grams(mass, factor.t_co2e_per_t) if factor else 0,
                low_value=low_value.is_low_value(category, region_code),
                factor_status=factor.status if factor else "none",
            )
        )
    return out


def trade_mass_g(qty_t: str) -> int:
    return int((Decimal(qty_t) * GRAMS_PER_T).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def trade_co2e_g(category: str, mass_g: int, factors: FactorTable) -> int:
    factor = factors.factor(category)
    return co2e_grams(mass_g, factor.t_co2e_per_t) if factor else 0


def kg_str(g: int) -> str:
    """Grams as a kg decimal string with 3 places (the platform's weight format)."""
    return format((Decimal(g) / GRAMS_PER_KG).quantize(Decimal("0.001")), "f")


def t_str(g: int) -> str:
    """Grams as tonnes with 6 places (exact to the gram)."""
    return format((Decimal(g) / GRAMS_PER_T).quantize(Decimal("0.000001")), "f")


def share_str(part: int, whole: int) -> str | None:
    """part / whole to 4 places; None when there is no whole."""
    if whole <= 0:
        return None
    return format((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP), "f")


def region_prefix(code: str) -> str:
    """The GB/T 2260 prefix every code inside `code` starts with: 000000 → "", a province → 2 digits, a city → 4,
    a county → all 6. Stats keep each fact at the code it came with and roll up by prefix."""
    if code == "000000":
        return ""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code
