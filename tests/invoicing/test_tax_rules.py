"""Reverse-invoicing (反向开票) tax rules: the worked examples of TAX_RULES.md to the fen, hand-computed cases,
date-effective configuration and invoice numbers.

Given/when/then in each test's body. Amounts are in fen: 20,000.00 yuan = 2_000_000.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from importlib import resources

import pytest

from services.invoicing.domain.numbering import (
    InvoiceNumber,
    duplicate_sequence_numbers,
    format_invoice_number,
    missing_sequence_numbers,
    next_invoice_number,
    parse_invoice_number,
)
from services.invoicing.domain.tax import (
    VAT_EXEMPT,
    CapExceeded,
    InvoiceLine,
    RedLetterLine,
    SellerPosition,
    compute_invoice_taxes,
    month_settlement,
    red_letter,
    rolling_cap_window,
)
from services.invoicing.domain.tax_config import (
    NoTaxRulesInForce,
    TaxConfigError,
    default_rule_book,
    entries_in_force,
    load_rule_book,
    parse_rule_book,
)
from services.kernel.errors import RuleViolated, ValidationFailed

BOOK = default_rule_book()
SHIPPED_TOML = resources.files("services.invoicing").joinpath("tax_rules.toml").read_text(encoding="utf-8")
TAX_CODE = (
    "1040101000000000000"  # illustrative 19-digit 商品和服务税收分类编码; the taxonomy owns the real ones
)
NOV = date(2026, 11, 10)


def line(amount_fen: int, qty: str = "1000.000", category: str = "废金属/废钢") -> InvoiceLine:
    """A line of `qty` kg at amount/qty per kg (the amounts used here divide evenly)."""
    return InvoiceLine(category, TAX_CODE, Decimal(qty), "kg", int(amount_fen / Decimal(qty)), amount_fen)


def issue(
    amount_fen: int | list[int],
    *,
    on: date = NOV,
    mtd: int = 0,
    ytd: int = 0,
    trailing: int = 0,
    three_flows: bool = True,
    location: str = "urban",
    waiver: str | None = None,
    book=BOOK,
):
    amounts = amount_fen if isinstance(amount_fen, list) else [amount_fen]
    return compute_invoice_taxes(
        on,
        [line(a) for a in amounts],
        SellerPosition(mtd, ytd, trailing),
        three_flows=three_flows,
        issuer_location_class=location,
        waiver_reason=waiver,
        rule_book=book,
    )


# ---------------------------------------------------------------------------------------------- worked examples


def test_example_1_three_exempt_pickups_in_a_month_prepay_income_tax_at_a_quarter_percent():
    # Given three pickups of 20,000.00, 25,000.00 and 15,000.00 in 2026-11, year-to-date 0 before them
    invoices, mtd, ytd = [], 0, 0
    for amount in (2_000_000, 2_500_000, 1_500_000):
        # When each is invoiced with the seller's running totals
        t = issue(amount, mtd=mtd, ytd=ytd)
        invoices.append(t)
        mtd += t.sales_excl_fen
        ytd += t.sales_excl_fen
    # Then the month (60,000.00) stays exempt and income tax is 50.00 + 62.50 + 37.50 = 150.00
    assert [t.exempt for t in invoices] == [True, True, True]
    assert [t.vat_rate for t in invoices] == [VAT_EXEMPT] * 3
    assert [t.vat_fen for t in invoices] == [0, 0, 0]
    assert [t.surcharges_fen for t in invoices] == [0, 0, 0]
    assert [t.sales_excl_fen for t in invoices] == [2_000_000, 2_500_000, 1_500_000]
    assert [t.iit_fen for t in invoices] == [5_000, 6_250, 3_750]
    assert sum(t.iit_fen for t in invoices) == 15_000
    assert [t.withheld_fen for t in invoices] == [5_000, 6_250, 3_750]
    settlement = month_settlement(invoices)
    assert settlement.taxable is False
    assert settlement.month_sales_fen == 6_000_000
    assert settlement.vat_adjustment_fen == 0


def test_example_2_second_pickup_pushes_the_month_over_and_the_report_adjusts_the_first():
    # Given a pickup of 80,000.00 (month-to-date 0)
    first = issue(8_000_000)
    # Then it is issued exempt
    assert first.exempt and first.vat_fen == 0 and first.sales_excl_fen == 8_000_000
    # When 40,000.00 follows in the same month, pushing the month to 120,000.00
    second = issue(4_000_000, mtd=first.sales_excl_fen, ytd=first.sales_excl_fen)
    # Then it is taxable at 1%: excl 39,603.96, VAT 396.04
    assert not second.exempt
    assert second.vat_rate == Decimal("0.01")
    assert (second.sales_excl_fen, second.vat_fen) == (3_960_396, 39_604)
    # And the monthly report makes the whole month taxable: 80,000.00 ⇒ excl 79,207.92, VAT 792.08 due
    report = month_settlement([first, second])
    assert report.taxable is True
    assert report.month_sales_fen == 12_000_000
    settled_first, settled_second = report.invoices
    assert (settled_first.settled.sales_excl_fen, settled_first.settled.vat_fen) == (7_920_792, 79_208)
    assert settled_first.vat_adjustment_fen == 79_208
    assert settled_second.vat_adjustment_fen == 0 and not settled_second.changed
    assert report.vat_adjustment_fen == 79_208
    assert report.vat_fen == 79_208 + 39_604
    # surcharges follow the VAT (urban issuer, halved): 3.5% / 1.5% / 1% of 792.08
    assert settled_first.surcharge_adjustments == {
        "city_maintenance": 2_772,
        "education": 1_188,
        "local_education": 792,
    }
    # the income-tax prepayment is not re-computed by the settlement
    assert settled_first.settled.iit_fen == first.iit_fen == 20_000
    assert [k for k, _ in report.adjustments] == [0]


def test_example_3_invoice_straddling_600000_splits_the_income_tax():
    # Given year-to-date 590,000.00 and an exempt invoice of 20,000.00
    t = issue(2_000_000, ytd=59_000_000)
    # Then 0.25% × 10,000 + 0.5% × 10,000 = 25.00 + 50.00 = 75.00
    assert t.exempt
    assert t.iit_fen == 7_500
    slices = [(s.base_fen, s.rate) for s in t.lines[0].iit_slices]
    assert slices == [(1_000_000, Decimal("0.0025")), (1_000_000, Decimal("0.005"))]


def test_example_4_cap_refuses_the_invoice_and_names_the_cap_and_the_current_total():
    # Given a trailing-12-month total of 4,990,000.00 and a new pickup of 20,000.00
    with pytest.raises(CapExceeded) as caught:
        issue(2_000_000, trailing=499_000_000)
    # Then the invoice is refused with reason cap_exceeded (422), naming the cap and the current total
    err = caught.value
    assert isinstance(err, RuleViolated)
    assert err.status == 422
    assert err.extra["reason"] == "cap_exceeded"
    assert "5,000,000.00" in err.detail and "4,990,000.00" in err.detail
    assert err.cap_fen == 500_000_000 and err.current_total_fen == 499_000_000
    assert err.invoice_sales_excl_fen == 2_000_000
    body = err.problem()
    assert body["reason"] == "cap_exceeded" and body["current_total_fen"] == 499_000_000


def test_example_5_before_july_2026_income_tax_is_half_a_percent_even_with_three_flows():
    # Given an exempt invoice of 10,000.00 dated 2026-06-30 (三流合一 holds)
    t = issue(1_000_000, on=date(2026, 6, 30))
    # Then income tax is 0.5% = 50.00
    assert t.exempt
    assert t.iit_fen == 5_000


# ---------------------------------------------------------------------------------------------- hand-computed


def test_surcharges_hand_computed_for_an_urban_issuer_while_relief_lasts():
    # Given 120,000.00 in one invoice on 2026-11-10 (month over the threshold on its own), urban issuer
    t = issue(12_000_000)
    # Then: excl = 12,000,000 / 1.01 = 11,881,188.12 → 11,881,188; VAT 118,812 (1,188.12)
    assert (t.total_fen, t.sales_excl_fen, t.vat_fen) == (12_000_000, 11_881_188, 118_812)
    # 城市维护建设税 7% × ½ = 3.5% × 118,812 = 4,158.42 → 4,158
    # 教育费附加     3% × ½ = 1.5% × 118,812 = 1,782.18 → 1,782
    # 地方教育附加   2% × ½ = 1%   × 118,812 = 1,188.12 → 1,188
    assert t.surcharges == {"city_maintenance": 4_158, "education": 1_782, "local_education": 1_188}
    assert (t.city_maintenance_fen, t.education_surcharge_fen, t.local_education_surcharge_fen) == (
        4_158,
        1_782,
        1_188,
    )
    assert t.surcharges_fen == 7_128
    # 个人所得税 0.25% × 11,881,188 = 29,702.97 → 29,703
    assert t.iit_fen == 29_703
    assert t.withheld_fen == 118_812 + 7_128 + 29_703 == 155_643
    assert t.net_fen == 12_000_000 - 155_643
    assert t.summary() == {
        "kind": "blue",
        "exempt": False,
        "total_fen": 12_000_000,
        "sales_excl_fen": 11_881_188,
        "vat_rate": "0.01",
        "vat_fen": 118_812,
        "surcharges": {"city_maintenance": 4_158, "education": 1_782, "local_education": 1_188},
        "surcharges_fen": 7_128,
        "iit_fen": 29_703,
        "withheld_fen": 155_643,
    }


@pytest.mark.parametrize("location, city_fen", [("urban", 4_158), ("county_town", 2_970), ("other", 594)])
def test_city_maintenance_tax_follows_the_issuer_location_class(location, city_fen):
    # 5% × ½ × 118,812 = 2,970.30 → 2,970; 1% × ½ × 118,812 = 594.06 → 594
    t = issue(12_000_000, location=location)
    assert t.city_maintenance_fen == city_fen
    assert (t.education_surcharge_fen, t.local_education_surcharge_fen) == (1_782, 1_188)


def test_surcharges_round_half_up_to_the_fen():
    # Given the month already at 100,000.00 and a 303.00 invoice: excl 300.00 exactly, VAT 3.00
    t = issue(30_300, mtd=10_000_000)
    assert (t.sales_excl_fen, t.vat_fen) == (30_000, 300)
    # 3.5% × 300 = 10.5 → 11; 1.5% × 300 = 4.5 → 5; 1% × 300 = 3
    assert t.surcharges == {"city_maintenance": 11, "education": 5, "local_education": 3}
    assert t.iit_fen == 75  # 0.25% × 30,000


def test_exemption_threshold_includes_its_own_amount():
    # 月销售额10万元以下（含本数）: exactly 100,000.00 is exempt, one fen more is taxable
    assert issue(4_000_000, mtd=6_000_000).exempt
    assert not issue(4_000_001, mtd=6_000_000).exempt


def test_waiver_with_a_coded_reason_taxes_at_three_percent():
    # Given a taxable invoice of 10,300.00 and the seller waiving the reduction (因为实际经营需要)
    t = issue(1_030_000, mtd=10_000_000, waiver="business_need")
    # Then 3%: excl 10,000.00, VAT 300.00
    assert t.vat_rate == Decimal("0.03")
    assert (t.sales_excl_fen, t.vat_fen) == (1_000_000, 30_000)
    assert issue(1_030_000, mtd=10_000_000, waiver="prior_3pct_correction").vat_fen == 30_000
    # An exempt invoice stays exempt whatever the waiver; should its month turn taxable, it is taxed at 3%
    exempt = issue(1_030_000, waiver="business_need")
    assert exempt.exempt and exempt.applied.taxable_vat_rate == Decimal("0.03")


def test_unknown_waiver_reason_is_refused_naming_the_field():
    with pytest.raises(ValidationFailed) as caught:
        issue(1_000_000, waiver="cheaper")
    assert caught.value.errors[0]["field"] == "waiver_reason"


def test_unknown_location_class_is_refused_naming_the_field():
    with pytest.raises(ValidationFailed) as caught:
        issue(1_000_000, location="downtown")
    assert caught.value.errors[0]["field"] == "issuer_location_class"


def test_without_three_flows_income_tax_stays_at_half_a_percent_after_july_2026():
    assert issue(1_000_000, three_flows=False).iit_fen == 5_000
    assert issue(1_000_000, three_flows=True).iit_fen == 2_500


def test_year_to_date_above_the_tier_pays_half_a_percent():
    assert issue(1_000_000, ytd=60_000_000).iit_fen == 5_000
    assert (
        issue(1_000_000, ytd=59_000_000).iit_fen == 2_500
    )  # ends exactly at 600,000.00: all in the low tier


def test_lines_are_rounded_once_each_and_sum_exactly_to_the_invoice():
    # Given two taxable lines of 100.00 and 200.00 (month already over the threshold)
    t = issue([10_000, 20_000], mtd=10_000_000)
    # 10,000 / 1.01 = 9,900.99 → 9,901 (VAT 99); 20,000 / 1.01 = 19,801.98 → 19,802 (VAT 198)
    assert [(x.sales_excl_fen, x.vat_fen) for x in t.lines] == [(9_901, 99), (19_802, 198)]
    assert (t.total_fen, t.sales_excl_fen, t.vat_fen) == (30_000, 29_703, 297)


def test_a_line_straddling_the_income_tax_tier_splits_and_later_lines_start_above_it():
    # Given year-to-date 595,000.00 and two exempt lines of 10,000.00 and 3,000.00
    t = issue([1_000_000, 300_000], ytd=59_500_000)
    first, second = t.lines
    # first line: 5,000 at 0.25% + 5,000 at 0.5% = 12.50 + 25.00; second: all at 0.5% = 15.00
    assert first.iit_fen == 3_750 and second.iit_fen == 1_500
    assert second.year_to_date_before_fen == 60_500_000
    assert t.iit_fen == 5_250


def test_cap_reached_exactly_is_accepted():
    t = issue(1_000_000, trailing=499_000_000)
    assert t.sales_excl_fen + 499_000_000 == 500_000_000


def test_cap_counts_sales_excluding_vat():
    # Given the month over the threshold: 20,200.00 ⇒ excl 20,000.00, which exactly reaches the cap
    t = issue(2_020_000, mtd=10_000_000, trailing=498_000_000)
    assert t.sales_excl_fen == 2_000_000
    with pytest.raises(CapExceeded):
        issue(2_020_101, mtd=10_000_000, trailing=498_000_000)


def test_rolling_cap_window_is_twelve_natural_months_ending_with_the_invoice_month():
    assert rolling_cap_window(date(2026, 11, 10)) == (date(2025, 12, 1), date(2026, 11, 30))
    assert rolling_cap_window(date(2026, 1, 31)) == (date(2025, 2, 1), date(2026, 1, 31))
    assert rolling_cap_window(date(2028, 2, 3)) == (date(2027, 3, 1), date(2028, 2, 29))


def test_blue_lines_must_be_positive_and_present():
    with pytest.raises(ValidationFailed):
        compute_invoice_taxes(
            NOV, [], SellerPosition(), three_flows=True, issuer_location_class="urban", rule_book=BOOK
        )
    with pytest.raises(ValidationFailed) as caught:
        issue(0)
    assert caught.value.errors[0]["field"] == "lines[0].amount_fen"
    with pytest.raises(ValidationFailed):
        SellerPosition(month_to_date_sales_excl_fen=-1)
    with pytest.raises(ValidationFailed):
        InvoiceLine("废纸", TAX_CODE, Decimal("1"), "kg", 100, 1.5)  # type: ignore[arg-type]


def test_invoice_line_takes_a_decimal_string_quantity():
    assert InvoiceLine("废纸", TAX_CODE, "12.345", "kg", 100, 1_235).qty == Decimal("12.345")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- red letter


def test_full_red_letter_nets_the_blue_invoice_to_zero():
    blue = issue([12_000_000, 345_678], ytd=59_000_000)
    red = red_letter(blue, date(2026, 12, 2))
    assert red.kind == "red" and red.red_letter_of_date == blue.invoice_date
    for field in ("total_fen", "sales_excl_fen", "vat_fen", "surcharges_fen", "iit_fen", "withheld_fen"):
        assert getattr(blue, field) + getattr(red, field) == 0, field
    assert red.vat_rate == blue.vat_rate
    assert [t.line.qty for t in red.lines] == [Decimal("-1000.000")] * 2


def test_partial_red_letter_leaves_the_taxes_of_what_is_kept_and_takes_income_tax_from_the_top_tier():
    # Given a taxable blue line of 50,500.00 (1,000 kg) with year-to-date 590,000.00:
    #   excl 50,000.00, VAT 500.00, surcharges 17.50/7.50/5.00, IIT 0.25%×10,000 + 0.5%×40,000 = 225.00
    blue = issue(5_050_000, mtd=10_000_000, ytd=59_000_000)
    assert (blue.sales_excl_fen, blue.vat_fen, blue.iit_fen) == (5_000_000, 50_000, 22_500)
    assert blue.surcharges == {"city_maintenance": 1_750, "education": 750, "local_education": 500}
    # When 10,100.00 for 200 kg is taken back
    red = red_letter(blue, date(2026, 11, 28), [RedLetterLine(0, 1_010_000, Decimal("200"))])
    # Then the red letter is −10,100.00: excl −10,000.00, VAT −100.00, surcharges −3.50/−1.50/−1.00,
    # IIT −50.00 (all from the 0.5% tier)
    assert (red.total_fen, red.sales_excl_fen, red.vat_fen) == (-1_010_000, -1_000_000, -10_000)
    assert red.surcharges == {"city_maintenance": -350, "education": -150, "local_education": -100}
    assert red.iit_fen == -5_000
    assert [(s.base_fen, s.rate) for s in red.lines[0].iit_slices] == [(-1_000_000, Decimal("0.005"))]
    assert red.lines[0].line.qty == Decimal("-200") and red.lines[0].line.unit_price_fen == 5_050


def test_red_letter_uses_the_blue_invoice_rates_after_they_changed():
    # A blue invoice at 1% on 2027-12-31 offset on 2028-01-05 stays at 1% (its own rates), not the later 3%
    blue = issue(1_010_000, on=date(2027, 12, 31), mtd=10_000_000)
    assert blue.vat_rate == Decimal("0.01")
    red = red_letter(blue, date(2028, 1, 5))
    assert red.vat_rate == Decimal("0.01") and red.vat_fen == -blue.vat_fen


def test_red_letter_refuses_bad_offsets():
    blue = issue(1_000_000)
    with pytest.raises(ValidationFailed):
        red_letter(blue, date(2026, 11, 1))  # predates the blue invoice
    with pytest.raises(ValidationFailed):
        red_letter(blue, NOV, [RedLetterLine(0, 1_000_001, Decimal("1"))])  # more than the line
    with pytest.raises(ValidationFailed):
        red_letter(blue, NOV, [RedLetterLine(1, 1, Decimal("0"))])  # no such line
    with pytest.raises(ValidationFailed):
        red_letter(blue, NOV, [RedLetterLine(0, 1, Decimal("0")), RedLetterLine(0, 1, Decimal("0"))])
    with pytest.raises(ValidationFailed):
        red_letter(red_letter(blue, NOV), NOV)  # a red letter is not offset by another


# ---------------------------------------------------------------------------------------------- month settlement


def test_a_red_letter_in_the_same_month_can_bring_the_month_back_under_the_threshold():
    # Given 80,000.00 (exempt), 40,000.00 (taxable), then 40,000.00 fully red-lettered in the same month
    a = issue(8_000_000)
    b = issue(4_000_000, mtd=8_000_000, ytd=8_000_000)
    red_b = red_letter(b, date(2026, 11, 20))
    report = month_settlement([a, b, red_b])
    # Then the month's sales are 80,000.00: exempt; b is settled exempt and its red letter with it
    assert report.taxable is False and report.month_sales_fen == 8_000_000
    assert [i.vat_adjustment_fen for i in report.invoices] == [0, -39_604, 39_604]
    assert report.vat_adjustment_fen == 0 and report.vat_fen == 0
    assert report.surcharges_fen == 0


def test_a_red_letter_of_an_earlier_month_keeps_its_taxes_and_reduces_this_month():
    october = issue(12_000_000, on=date(2026, 10, 8))
    assert not october.exempt
    november_blue = issue(9_500_000, ytd=october.sales_excl_fen)
    november_red = red_letter(october, date(2026, 11, 12), [RedLetterLine(0, 3_000_000, Decimal("0"))])
    report = month_settlement([november_blue, november_red])
    assert report.month_sales_fen == 6_500_000 and report.taxable is False
    assert all(not i.changed for i in report.invoices)
    assert report.invoices[1].settled.vat_fen == november_red.vat_fen < 0


def test_month_settlement_refuses_invoices_of_several_months_or_none():
    with pytest.raises(ValueError):
        month_settlement([])
    with pytest.raises(ValueError):
        month_settlement([issue(100), issue(100, on=date(2026, 12, 1))])


# ---------------------------------------------------------------------------------------------- configuration


def test_rules_in_force_on_an_invoice_date():
    r = BOOK.rules_for(NOV)
    assert r.vat_exemption_threshold_fen == 10_000_000
    assert (r.vat_levy_rate, r.vat_reduced_rate) == (Decimal("0.03"), Decimal("0.01"))
    assert {w.code for w in r.waiver_reasons} == {"prior_3pct_correction", "business_need"}
    assert r.location_classes == {"urban", "county_town", "other"}
    assert [(s.code, s.rate) for s in r.surcharge_rates("urban")] == [
        ("city_maintenance", Decimal("0.035")),
        ("education", Decimal("0.015")),
        ("local_education", Decimal("0.010")),
    ]
    assert r.rolling_cap.sales_excl_fen == 500_000_000 and r.rolling_cap.months == 12
    assert [(t.up_to_year_sales_excl_fen, t.rate) for t in r.iit_prepayment.schedule(True)] == [
        (60_000_000, Decimal("0.0025")),
        (None, Decimal("0.005")),
    ]
    assert [(t.up_to_year_sales_excl_fen, t.rate) for t in r.iit_prepayment.schedule(False)] == [
        (None, Decimal("0.005"))
    ]
    assert any("2024年第5号" in s for s in r.sources) and any("2026年第12号" in s for s in r.sources)


def test_income_tax_rule_changes_on_2026_07_01():
    assert BOOK.rules_for(date(2026, 6, 30)).iit_prepayment.schedule(True)[0].rate == Decimal("0.005")
    assert BOOK.rules_for(date(2026, 7, 1)).iit_prepayment.schedule(True)[0].rate == Decimal("0.0025")
    assert issue(1_000_000, on=date(2026, 7, 1)).iit_fen == 2_500


def test_reduction_relief_and_exemption_end_after_2027_in_the_shipped_configuration():
    last, first_after = BOOK.rules_for(date(2027, 12, 31)), BOOK.rules_for(date(2028, 1, 1))
    assert last.vat_rate(None) == Decimal("0.01") and first_after.vat_rate(None) == Decimal("0.03")
    assert last.surcharge_relief is not None and first_after.surcharge_relief is None
    assert first_after.vat_exemption_threshold_fen is None
    # 10,300.00 in 2028: excl 10,000.00, VAT 300.00; surcharges in full: 7% 21.00, 3% 9.00, 2% 6.00
    t = issue(1_030_000, on=date(2028, 1, 10))
    assert not t.exempt and (t.sales_excl_fen, t.vat_fen) == (1_000_000, 30_000)
    assert t.surcharges == {"city_maintenance": 2_100, "education": 900, "local_education": 600}


def test_surcharge_relief_end_date_is_configuration():
    # Given a deployment that ends the relief on 2026-12-31
    book = parse_rule_book(
        SHIPPED_TOML.replace(
            'effective_to = 2027-12-31\nfactor = "0.5"', 'effective_to = 2026-12-31\nfactor = "0.5"'
        )
    )
    # Then a January 2027 invoice pays surcharges in full: 7% × 1,188.12 = 83.17, 3% = 35.64, 2% = 23.76
    t = issue(12_000_000, on=date(2027, 1, 4), book=book)
    assert t.vat_fen == 118_812
    assert t.surcharges == {"city_maintenance": 8_317, "education": 3_564, "local_education": 2_376}
    assert issue(12_000_000, on=date(2026, 12, 31), book=book).surcharges_fen == 7_128


def test_no_rules_before_the_regime():
    with pytest.raises(NoTaxRulesInForce) as caught:
        BOOK.rules_for(date(2024, 4, 28))
    assert caught.value.extra["reason"] == "no_tax_rules_in_force"
    assert BOOK.rules_for(date(2024, 4, 29)).iit_prepayment.rate == Decimal("0.005")


def test_load_rule_book_defaults_to_the_shipped_file_and_reads_a_given_one(tmp_path):
    assert load_rule_book() is default_rule_book()
    path = tmp_path / "rules.toml"
    path.write_text(SHIPPED_TOML, encoding="utf-8")
    assert load_rule_book(path) == BOOK


def test_every_entry_in_force_names_its_source():
    kinds = {kind for kind, e in entries_in_force(BOOK, NOV) if e.source}
    assert {
        "regime",
        "vat_exemption_threshold",
        "vat_levy_rate",
        "vat_reduced_rate",
        "vat_waiver_reason",
        "surcharge",
        "surcharge_relief",
        "iit_prepayment",
        "rolling_cap",
    } == kinds
    assert date(2026, 7, 1) in BOOK.change_dates() and date(2028, 1, 1) in BOOK.change_dates()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.replace('rate = "0.01"', "rate = 0.01"), "never a float"),
        (lambda s: s.replace("effective_from = 2026-07-01", "effective_from = 2026-06-30"), "overlap"),
        (
            lambda s: s.replace("effective_from = 2026-07-01", "effective_from = 2026-07-02"),
            "no entry in force",
        ),
        (lambda s: s.replace('source = "国家税务总局公告2024年第5号 第一条"\n', "", 1), "source"),
        (lambda s: s.replace("schema_version = 1", "schema_version = 2"), "schema_version"),
        (lambda s: s.replace("months = 12", "months = 0"), "months"),
        (lambda s: s.replace("up_to_year_sales_excl_fen = 60_000_000, ", ""), "tier"),
        (lambda s: s + "\n[[vat_levy_rat]]\n", "unknown keys"),
        (lambda s: s.replace('"local_education"]', '"local_educaton"]'), "unknown surcharges"),
        (lambda s: s.replace('rate = "0.03"\nsource', 'rate = "3"\nsource'), "between 0 and 1"),
        (
            lambda s: s.replace("effective_to = 2026-06-30", "effective_to = 2024-01-01"),
            "before effective_from",
        ),
    ],
)
def test_malformed_configuration_is_refused_at_load(mutate, message):
    with pytest.raises(TaxConfigError, match=message):
        parse_rule_book(mutate(SHIPPED_TOML))


# ---------------------------------------------------------------------------------------------- numbering


def test_invoice_number_is_20_digits_year_issuer_sequence():
    assert format_invoice_number(2026, 1234, 57) == "26000012340000000057"
    assert parse_invoice_number("26000012340000000057") == InvoiceNumber(2026, 1234, 57)
    assert len(str(InvoiceNumber(2099, 99_999_999, 9_999_999_999))) == 20


def test_invoice_numbers_run_per_issuer_and_year_without_gaps():
    assert next_invoice_number(None, year=2026, issuer_code=7) == InvoiceNumber(2026, 7, 1)
    assert next_invoice_number(41, year=2026, issuer_code=7) == InvoiceNumber(2026, 7, 42)
    assert InvoiceNumber(2026, 7, 42).next() == InvoiceNumber(2026, 7, 43)
    assert missing_sequence_numbers([1, 2, 4, 5, 7]) == [3, 6]
    assert missing_sequence_numbers([]) == []
    assert duplicate_sequence_numbers([1, 2, 2, 3, 3, 3]) == [2, 3]


@pytest.mark.parametrize(
    "text",
    [
        "2600001234000000005",
        "260000123400000000571",
        "26A00012340000000057",
        "26000000000000000057",
        "26000012340000000000",
        "２６000012340000000057",
    ],
)
def test_malformed_invoice_numbers_are_refused_naming_the_field(text):
    with pytest.raises(ValidationFailed) as caught:
        parse_invoice_number(text)
    assert caught.value.errors[0]["field"] == "number"
