"""The five worked examples of TAX_RULES.md through the service: accounts' facts and booking's PickupSettled
events in (over the real bus), invoices and InvoiceIssued/InvoiceBlocked events out, amounts to the fen.

Invoices dated 2026-11 (China time), issuer qualified (urban: 北京市朝阳区), seller verified, 三流合一 holds.
"""

from __future__ import annotations

import csv
from datetime import date

import pytest
from sqlalchemy import select

from services.invoicing.exports import ReportSpec, write_report
from services.invoicing.store import invoices
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t as outbox_events

from .support import issuer_events, platform_for, publish, seller_events, settled

NOV = date(2026, 11, 10)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


@pytest.fixture
def platform(settings):
    p = platform_for(settings)
    publish(p, *issuer_events("fm_a"), *issuer_events("fm_b"))
    yield p
    p.stop()


def _invoices(platform, seller_id: str) -> list:
    with platform["invoicing"].db.session() as s:
        return s.execute(
            select(invoices)
            .where(invoices.c.seller_id == seller_id)
            .order_by(invoices.c.invoice_date, invoices.c.created_at)
        ).all()


def _published(platform, type_suffix: str) -> list[dict]:
    with platform["invoicing"].db.session() as s:
        rows = s.execute(select(outbox_events.c.payload)).scalars().all()
    envs = [Envelope.from_bytes(bytes(p)) for p in rows]
    return [e.data for e in envs if e.type.endswith(type_suffix)]


def test_example_1_three_exempt_pickups_prepay_income_tax_at_a_quarter_percent(platform, settings):
    publish(platform, *seller_events(settings, "u_ex1"))
    # When three pickups of 20,000.00, 25,000.00 and 15,000.00 settle in November
    publish(
        platform,
        settled("u_ex1", "fm_a", 2_000_000, on=date(2026, 11, 3)),
        settled("u_ex1", "fm_a", 2_500_000, on=date(2026, 11, 9)),
        settled("u_ex1", "fm_b", 1_500_000, on=date(2026, 11, 20)),
    )
    rows = _invoices(platform, "u_ex1")
    # Then each is issued exempt (month 60,000.00 ≤ 100,000) with income tax 50.00 + 62.50 + 37.50 = 150.00
    assert [r.status for r in rows] == ["issued"] * 3
    assert [r.vat_rate for r in rows] == ["免税"] * 3 and [r.vat_fen for r in rows] == [0, 0, 0]
    assert [r.surcharges_fen for r in rows] == [0, 0, 0]
    assert [r.iit_fen for r in rows] == [5_000, 6_250, 3_750]
    assert [r.withheld_fen for r in rows] == [5_000, 6_250, 3_750]
    issued = {e["pickup_id"]: e for e in _published(platform, "invoice.issued.v1")}
    assert sorted(e["withheld_fen"] for e in issued.values() if e["seller_id"] == "u_ex1") == [
        3_750,
        5_000,
        6_250,
    ]


def test_example_2_the_second_pickup_makes_the_month_taxable_and_the_report_adjusts_the_first(
    platform, settings, tmp_path
):
    publish(platform, *seller_events(settings, "u_ex2"))
    publish(platform, settled("u_ex2", "fm_a", 8_000_000, on=date(2026, 11, 4)))
    publish(platform, settled("u_ex2", "fm_a", 4_000_000, on=date(2026, 11, 18)))
    first, second = _invoices(platform, "u_ex2")
    # The first was issued exempt; the second pushes the month to 120,000.00 > 100,000: taxable at 1%
    assert (first.vat_rate, first.vat_fen, first.sales_excl_fen) == ("免税", 0, 8_000_000)
    assert (second.vat_rate, second.sales_excl_fen, second.vat_fen) == ("0.01", 3_960_396, 39_604)
    # urban issuer: surcharges on 396.04 = 13.86 + 5.94 + 3.96 (halved)
    assert (second.city_maintenance_fen, second.education_fen, second.local_education_fen) == (
        1_386,
        594,
        396,
    )
    # The monthly report settles the month: 80,000.00 ⇒ excl 79,207.92, VAT 792.08 due for the first invoice
    out = tmp_path / "detail.csv"
    write_report(platform["invoicing"].db, ReportSpec("fm_a", "detail", "2026-11", "csv"), out)
    with open(out, encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["row_type"] == "invoice" and r["seller_id"] == "u_ex2"]
    by_number = {r["invoice_number"]: r for r in rows}
    r1, r2 = by_number[first.number], by_number[second.number]
    assert (r1["vat_fen"], r1["vat_adjustment_fen"], r1["vat_due_fen"]) == ("0", "79208", "79208")
    assert (r1["taxable_sales_excl_fen"], r1["exempt_sales_fen"]) == ("7920792", "0")
    assert r1["surcharges_adjustment_fen"] == str(2_772 + 1_188 + 792)
    assert (r2["vat_adjustment_fen"], r2["vat_due_fen"]) == ("0", "39604")
    assert r1["month_vat_status"] == r2["month_vat_status"] == "应税"


def test_example_3_an_invoice_straddling_600000_of_year_to_date_sales_splits_the_income_tax(
    platform, settings
):
    publish(platform, *seller_events(settings, "u_ex3"))
    # Given 590,000.00 of sales earlier in 2026 (exempt months: 5 × 100,000.00 + 90,000.00)
    history = [settled("u_ex3", "fm_a", 10_000_000, on=date(2026, m, 15)) for m in range(1, 6)]
    history.append(settled("u_ex3", "fm_b", 9_000_000, on=date(2026, 6, 15)))
    publish(platform, *history)
    assert sum(r.sales_excl_fen for r in _invoices(platform, "u_ex3")) == 59_000_000
    # When a 20,000.00 exempt invoice is issued in November
    publish(platform, settled("u_ex3", "fm_a", 2_000_000, on=NOV))
    last = _invoices(platform, "u_ex3")[-1]
    # Then 0.25% × 10,000 + 0.5% × 10,000 = 25.00 + 50.00 = 75.00
    assert (last.vat_rate, last.iit_fen) == ("免税", 7_500)


def test_example_4_the_rolling_cap_refuses_the_invoice_and_the_pickup_stays_settled(platform, settings):
    publish(platform, *seller_events(settings, "u_ex4"))
    # Given 4,990,000.00 over the trailing 12 months, across two issuers: 10 × 503,990.00 (excl 499,000.00 each)
    history = [
        settled("u_ex4", "fm_a" if m % 2 else "fm_b", 50_399_000, on=date(2026, m, 10)) for m in range(2, 12)
    ]
    publish(platform, *history)
    assert sum(r.sales_excl_fen for r in _invoices(platform, "u_ex4")) == 499_000_000
    # When a 20,000.00 pickup settles
    pickup = settled("u_ex4", "fm_a", 2_000_000, on=NOV)
    publish(platform, pickup)
    refused = _invoices(platform, "u_ex4")[-1]
    # Then the invoice is refused by the cap: kept as blocked with the reason, no number, nothing withheld
    assert (refused.status, refused.blocked_reason, refused.number) == ("blocked", "cap_exceeded", None)
    assert "4,990,000.00" in refused.blocked_detail and "5,000,000.00" in refused.blocked_detail
    blocked = [e for e in _published(platform, "invoice.blocked.v1") if e["pickup_id"] == pickup.pickup_id]
    assert len(blocked) == 1 and blocked[0]["reason"] == "cap_exceeded"
    assert blocked[0]["invoice_id"] == refused.id


def test_example_5_an_invoice_dated_2026_06_30_prepays_half_a_percent(platform, settings):
    publish(platform, *seller_events(settings, "u_ex5"))
    # settled at 23:30 China time on 30 June (15:30 UTC): still a June invoice
    publish(platform, settled("u_ex5", "fm_a", 1_000_000, on=date(2026, 6, 30), hour=23))
    (row,) = _invoices(platform, "u_ex5")
    assert row.invoice_date == date(2026, 6, 30)
    assert (row.vat_rate, row.iit_fen) == ("免税", 5_000)
