"""Properties of the reverse-invoicing tax rules over many generated invoices (hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.invoicing.domain.numbering import (
    InvoiceNumber,
    format_invoice_number,
    missing_sequence_numbers,
    parse_invoice_number,
)
from services.invoicing.domain.tax import (
    CapExceeded,
    InvoiceLine,
    InvoiceTaxes,
    RedLetterLine,
    SellerPosition,
    compute_invoice_taxes,
    iit_prepayment_fen,
    iit_slices,
    month_settlement,
    red_letter,
    vat_split,
)
from services.invoicing.domain.tax_config import IitTier, default_rule_book

BOOK = default_rule_book()
TAX_CODE = "1040101000000000000"
TIERS = (IitTier(60_000_000, Decimal("0.0025")), IitTier(None, Decimal("0.005")))
THRESHOLD = 10_000_000
CAP = 500_000_000

# applied per test: a module-level profile would change every other module's hypothesis settings too
PROPERTY = settings(max_examples=200, deadline=None)

# dates across every rule change of the shipped configuration (2026-07-01, 2028-01-01)
dates = st.dates(min_value=date(2024, 4, 29), max_value=date(2029, 12, 31))
amounts = st.integers(min_value=1, max_value=3_000_000_000)  # up to 30,000,000.00 yuan per line
qtys = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=3)
lines_st = st.lists(
    st.builds(lambda a, q: InvoiceLine("废金属/废铜", TAX_CODE, q, "kg", 100, a), amounts, qtys),
    min_size=1,
    max_size=6,
)
positions = st.builds(
    SellerPosition,
    month_to_date_sales_excl_fen=st.integers(0, 20_000_000),
    year_to_date_sales_excl_fen=st.integers(0, 120_000_000),
    trailing_12m_sales_excl_fen=st.integers(0, 600_000_000),
)
locations = st.sampled_from(["urban", "county_town", "other"])


def issue(on, lines, position, three_flows=True, location="urban", waiver=None) -> InvoiceTaxes:
    return compute_invoice_taxes(
        on,
        lines,
        position,
        three_flows=three_flows,
        issuer_location_class=location,
        waiver_reason=waiver,
        rule_book=BOOK,
    )


def try_issue(*args, **kw) -> InvoiceTaxes | None:
    try:
        return issue(*args, **kw)
    except CapExceeded:
        return None


def half_up(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@PROPERTY
@given(dates, lines_st, positions, st.booleans(), locations)
def test_lines_sum_exactly_to_the_totals(on, lines, position, three_flows, location):
    t = try_issue(on, lines, position, three_flows, location)
    assume(t is not None)
    assert t.total_fen == sum(x.amount_fen for x in lines)
    assert t.sales_excl_fen == sum(x.sales_excl_fen for x in t.lines)
    assert t.vat_fen == sum(x.vat_fen for x in t.lines)
    assert t.iit_fen == sum(x.iit_fen for x in t.lines)
    assert t.surcharges_fen == sum(x.surcharges_fen for x in t.lines) == sum(t.surcharges.values())
    for code, fen in t.surcharges.items():
        assert fen == sum(dict(x.surcharges)[code] for x in t.lines)
    assert t.withheld_fen == t.vat_fen + t.surcharges_fen + t.iit_fen
    assert t.net_fen + t.withheld_fen == t.total_fen


@PROPERTY
@given(dates, lines_st, positions, st.booleans(), locations)
def test_vat_plus_sales_excl_is_the_total_on_every_line(on, lines, position, three_flows, location):
    t = try_issue(on, lines, position, three_flows, location)
    assume(t is not None)
    for x in t.lines:
        assert x.sales_excl_fen + x.vat_fen == x.line.amount_fen
        if t.exempt:
            assert x.vat_fen == 0 and x.surcharges_fen == 0
        else:
            rate = t.applied.taxable_vat_rate
            assert x.sales_excl_fen == half_up(Decimal(x.line.amount_fen) / (1 + rate))
    assert t.sales_excl_fen + t.vat_fen == t.total_fen


@PROPERTY
@given(dates, lines_st, positions)
def test_exempt_exactly_when_the_month_stays_within_the_threshold(on, lines, position):
    t = try_issue(on, lines, position)
    assume(t is not None)
    threshold = BOOK.rules_for(on).vat_exemption_threshold_fen
    expected = threshold is not None and position.month_to_date_sales_excl_fen + t.total_fen <= threshold
    assert t.exempt is expected


@PROPERTY
@given(dates, lines_st, positions, st.booleans(), locations)
def test_full_red_letter_nets_the_blue_to_zero(on, lines, position, three_flows, location):
    blue = try_issue(on, lines, position, three_flows, location)
    assume(blue is not None)
    red = red_letter(blue, on + timedelta(days=40))
    for b, r in zip(blue.lines, red.lines, strict=True):
        assert b.line.amount_fen + r.line.amount_fen == 0
        assert b.line.qty + r.line.qty == 0
        assert b.sales_excl_fen + r.sales_excl_fen == 0
        assert b.vat_fen + r.vat_fen == 0
        assert b.iit_fen + r.iit_fen == 0
        assert all(fb + fr == 0 for (_, fb), (_, fr) in zip(b.surcharges, r.surcharges, strict=True))
    for field in ("total_fen", "sales_excl_fen", "vat_fen", "surcharges_fen", "iit_fen", "withheld_fen"):
        assert getattr(blue, field) + getattr(red, field) == 0


@PROPERTY
@given(dates, amounts, positions, st.booleans(), st.data())
def test_partial_red_letter_leaves_exactly_the_taxes_of_what_is_kept(on, amount, position, three_flows, data):
    blue = try_issue(
        on, [InvoiceLine("废纸", TAX_CODE, Decimal("10"), "kg", 1, amount)], position, three_flows
    )
    assume(blue is not None)
    taken = data.draw(st.integers(1, amount))
    red = red_letter(blue, on, [RedLetterLine(0, taken, Decimal("0"))])
    b, r = blue.lines[0], red.lines[0]
    kept = amount - taken
    rate = None if blue.exempt else blue.applied.taxable_vat_rate
    kept_excl, kept_vat = vat_split(kept, rate)
    assert (b.sales_excl_fen + r.sales_excl_fen, b.vat_fen + r.vat_fen) == (kept_excl, kept_vat)
    assert b.iit_fen + r.iit_fen == iit_prepayment_fen(
        kept_excl, b.year_to_date_before_fen, blue.applied.iit_schedule
    )
    # a red letter never adds tax
    assert r.vat_fen <= 0 and r.iit_fen <= 0 and r.surcharges_fen <= 0 and r.sales_excl_fen <= 0


@PROPERTY
@given(dates, lines_st, positions, st.booleans())
def test_an_accepted_invoice_never_exceeds_the_cap(on, lines, position, three_flows):
    try:
        t = issue(on, lines, position, three_flows)
    except CapExceeded as exc:
        assert exc.current_total_fen + exc.invoice_sales_excl_fen > exc.cap_fen == CAP
        assert exc.extra["reason"] == "cap_exceeded"
        return
    assert position.trailing_12m_sales_excl_fen + t.sales_excl_fen <= CAP


@PROPERTY
@given(st.integers(0, 200_000_000), st.integers(0, 200_000_000), st.integers(0, 120_000_000))
def test_income_tax_is_monotone_in_its_base(a, b, ytd):
    low, high = sorted((a, b))
    assert iit_prepayment_fen(low, ytd, TIERS) <= iit_prepayment_fen(high, ytd, TIERS)


@PROPERTY
@given(
    dates, st.integers(1, 500_000_000), st.integers(1, 500_000_000), positions, st.booleans(), st.booleans()
)
def test_income_tax_is_monotone_in_the_invoice_amount_within_one_vat_status(
    on, a, b, position, three_flows, month_over
):
    # Across the exemption threshold an invoice's tax base drops (exempt: sales = total; taxable: total / 1.01),
    # so the income tax is monotone in the amount for a given VAT status — pin the status through month-to-date.
    low, high = sorted((a, b))
    if month_over:
        position = SellerPosition(THRESHOLD, position.year_to_date_sales_excl_fen, 0)
    else:
        position = SellerPosition(0, position.year_to_date_sales_excl_fen, 0)
        low, high = min(low, THRESHOLD), min(high, THRESHOLD)
    x = issue(on, [InvoiceLine("废纸", TAX_CODE, Decimal("1"), "kg", low, low)], position, three_flows)
    y = issue(on, [InvoiceLine("废纸", TAX_CODE, Decimal("1"), "kg", high, high)], position, three_flows)
    assume(x.exempt == y.exempt)
    assert x.sales_excl_fen <= y.sales_excl_fen
    assert x.iit_fen <= y.iit_fen
    assert x.withheld_fen <= y.withheld_fen


@PROPERTY
@given(st.integers(0, 300_000_000), st.integers(0, 150_000_000))
def test_straddle_split_is_correct_for_any_year_to_date(base, ytd):
    slices = iit_slices(base, ytd, TIERS)
    assert sum(s.base_fen for s in slices) == base
    low = max(0, min(base, 60_000_000 - ytd))
    high = base - low
    assert [(s.base_fen, s.rate) for s in slices] == [
        (n, r) for n, r in ((low, Decimal("0.0025")), (high, Decimal("0.005"))) if n
    ]
    expected = half_up(low * Decimal("0.0025") + high * Decimal("0.005"))
    assert iit_prepayment_fen(base, ytd, TIERS) == expected


@PROPERTY
@given(lines_st, st.integers(0, 120_000_000))
def test_straddle_split_across_the_lines_of_an_invoice(lines, ytd):
    # exempt invoice in 2026-11 with 三流合一: each line continues where the previous one ended
    t = try_issue(date(2026, 11, 5), lines, SellerPosition(0, ytd, 0))
    assume(t is not None)
    position = ytd
    for x in t.lines:
        assert x.year_to_date_before_fen == position
        assert x.iit_fen == iit_prepayment_fen(x.sales_excl_fen, position, TIERS)
        position += x.sales_excl_fen
    # per-line rounding stays within half a fen per line of the invoice-level figure
    low = max(0, min(t.sales_excl_fen, 60_000_000 - ytd))
    exact = low * Decimal("0.0025") + (t.sales_excl_fen - low) * Decimal("0.005")
    assert abs(t.iit_fen - exact) <= Decimal(len(t.lines)) / 2


@PROPERTY
@given(st.lists(st.tuples(st.integers(1, 28), st.integers(1, 6_000_000)), min_size=1, max_size=8), locations)
def test_month_settlement_taxes_the_whole_month_or_none_of_it(pickups, location):
    # Given a month of pickups issued in date order with the running month-to-date figure
    invoices, mtd = [], 0
    for day, amount in sorted(pickups):
        t = issue(
            date(2026, 11, day),
            [InvoiceLine("废纸", TAX_CODE, Decimal("1"), "kg", amount, amount)],
            SellerPosition(mtd, 0, 0),
            location=location,
        )
        invoices.append(t)
        mtd += t.sales_excl_fen
    report = month_settlement(invoices)
    total = sum(t.total_fen for t in invoices)
    assert report.taxable is (total > THRESHOLD)
    assert {s.settled.exempt for s in report.invoices} == {not report.taxable}
    if any(not t.exempt for t in invoices):
        assert report.taxable  # an invoice issued taxable means the month ends taxable (no red letters here)
    for s in report.invoices:
        expected = vat_split(
            s.issued.total_fen, None if s.settled.exempt else s.issued.applied.taxable_vat_rate
        )
        assert (s.settled.sales_excl_fen, s.settled.vat_fen) == expected
        assert s.settled.iit_fen == s.issued.iit_fen
        assert s.vat_adjustment_fen == s.settled.vat_fen - s.issued.vat_fen >= 0
    assert report.vat_adjustment_fen == report.vat_fen - sum(t.vat_fen for t in invoices)


@PROPERTY
@given(st.integers(2000, 2099), st.integers(1, 99_999_999), st.integers(1, 9_999_999_999))
def test_invoice_numbers_round_trip_and_sort_like_their_parts(year, issuer, seq):
    text = format_invoice_number(year, issuer, seq)
    assert len(text) == 20 and text.isdigit()
    assert parse_invoice_number(text) == InvoiceNumber(year, issuer, seq)
    if seq < 9_999_999_999:
        assert format_invoice_number(year, issuer, seq) < format_invoice_number(year, issuer, seq + 1)


@PROPERTY
@given(st.sets(st.integers(1, 500), max_size=100))
def test_gap_check_finds_exactly_the_absent_sequence_numbers(seqs):
    gaps = missing_sequence_numbers(seqs)
    assert set(gaps).isdisjoint(seqs)
    assert set(gaps) | seqs == set(range(1, max(seqs, default=0) + 1))


@pytest.mark.parametrize("amount", [1, 50, 99, 100, 101, 151, 10_000_000])
def test_tiny_and_round_amounts_keep_the_identities(amount):
    t = issue(
        date(2026, 11, 5),
        [InvoiceLine("废纸", TAX_CODE, Decimal("1"), "kg", amount, amount)],
        SellerPosition(THRESHOLD, 0, 0),
    )
    assert t.sales_excl_fen + t.vat_fen == amount
    assert t.vat_fen >= 0 and t.sales_excl_fen >= 0
