"""Red-letter (红字) invoices through the service: linked 1:1 to their blue invoice, full or partial, with a
reason; numbered in the issuer's sequence; adjusting the seller's month totals and the rolling cap ledger."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

from services.invoicing.domain.tax import InvoiceLine, RedLetterLine, SellerPosition, compute_invoice_taxes
from services.invoicing.domain.tax_config import default_rule_book
from services.invoicing.issuing import issue_red_letter
from services.invoicing.store import invoice_lines, invoices
from services.invoicing.views import cap_ledger_view
from services.kernel.errors import Conflict

from .support import STEEL_TAX_CODE, at, issuer_events, platform_for, publish, seller_events, settled

NOV = date(2026, 11, 10)
SUMS = (
    "total_fen",
    "sales_excl_fen",
    "vat_fen",
    "city_maintenance_fen",
    "education_fen",
    "local_education_fen",
    "surcharges_fen",
    "iit_fen",
    "withheld_fen",
)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


@pytest.fixture
def platform(settings):
    p = platform_for(settings)
    publish(p, *issuer_events("fm_a"), *seller_events(settings, "u_1"))
    yield p
    p.stop()


def one(platform, invoice_id: str):
    with platform["invoicing"].db.session() as s:
        return s.execute(select(invoices).where(invoices.c.id == invoice_id)).one()


def blue_of(platform, pickup_id: str):
    with platform["invoicing"].db.session() as s:
        return s.execute(
            select(invoices).where(invoices.c.pickup_id == pickup_id, invoices.c.kind == "blue")
        ).one()


def test_a_full_red_letter_nets_its_blue_invoice_to_zero_and_frees_the_month(platform):
    ev = settled("u_1", "fm_a", [9_000_000, 3_000_000], on=NOV)  # 120,000.00: taxable at 1%
    publish(platform, ev)
    blue = blue_of(platform, ev.pickup_id)
    red_id = issue_red_letter(
        platform["invoicing"], blue.id, reason="开票有误", lines=None, by="u_acc", now=at(date(2026, 11, 12))
    )
    red = one(platform, red_id)
    assert (red.kind, red.red_letter_of, red.red_reason, red.cap_date) == ("red", blue.id, "开票有误", NOV)
    assert red.seq == blue.seq + 1 and red.number[:10] == blue.number[:10]
    for f in SUMS:
        assert getattr(blue, f) + getattr(red, f) == 0, f
    # the month is back to 0: a later 40,000.00 pickup is exempt
    later = settled("u_1", "fm_a", 4_000_000, on=date(2026, 11, 20))
    publish(platform, later)
    assert blue_of(platform, later.pickup_id).vat_rate == "免税"


def test_a_partial_red_letter_leaves_exactly_the_taxes_of_what_is_kept(platform):
    ev = settled("u_1", "fm_a", [9_000_000, 3_000_000], on=NOV)
    publish(platform, ev)
    blue = blue_of(platform, ev.pickup_id)
    # take back 10,000.00 (and 100 kg) of the first line
    red_id = issue_red_letter(
        platform["invoicing"],
        blue.id,
        reason="销货退回",
        lines=[RedLetterLine(0, 1_000_000, Decimal("100"))],
        by="u_acc",
        now=at(date(2026, 11, 12)),
    )
    red = one(platform, red_id)
    kept = compute_invoice_taxes(
        NOV,
        [
            InvoiceLine("metal.steel", STEEL_TAX_CODE, Decimal("900"), "kg", 9000, 8_000_000),
            InvoiceLine("metal.steel", STEEL_TAX_CODE, Decimal("1000"), "kg", 3000, 3_000_000),
        ],
        SellerPosition(),
        three_flows=True,
        issuer_location_class="urban",
        rule_book=default_rule_book(),
    )
    assert kept.exempt is False  # 110,000.00 is still over the threshold: blue's status is kept anyway
    assert blue.vat_fen + red.vat_fen == kept.vat_fen
    assert blue.sales_excl_fen + red.sales_excl_fen == kept.sales_excl_fen
    assert blue.iit_fen + red.iit_fen == kept.iit_fen
    with platform["invoicing"].db.session() as s:
        lines = s.execute(select(invoice_lines).where(invoice_lines.c.invoice_id == red_id)).all()
    assert [(ln.blue_line_no, ln.amount_fen, ln.qty) for ln in lines] == [(0, -1_000_000, "-100")]


def test_red_letters_are_one_to_one_and_only_for_issued_blue_invoices(platform):
    ev = settled("u_1", "fm_a", 500_000, on=NOV)
    blocked = settled("u_nobody", "fm_a", 500_000, on=NOV)
    publish(platform, ev, blocked)
    blue = blue_of(platform, ev.pickup_id)
    rt = platform["invoicing"]
    red_id = issue_red_letter(rt, blue.id, reason="开票有误", lines=None, by="u_acc", now=at(NOV))
    with pytest.raises(Conflict) as caught:
        issue_red_letter(rt, blue.id, reason="again", lines=None, by="u_acc", now=at(NOV))
    assert caught.value.extra == {"current_state": "red_lettered", "red_letter_id": red_id}
    with pytest.raises(Conflict):
        issue_red_letter(rt, red_id, reason="red of red", lines=None, by="u_acc", now=at(NOV))
    with pytest.raises(Conflict) as caught:
        issue_red_letter(rt, blue_of(platform, blocked.pickup_id).id, reason="x", lines=None, by="u_acc")
    assert caught.value.extra["current_state"] == "blocked"


def test_a_red_letter_in_a_later_month_gives_back_the_vat_the_settlement_made_due(platform):
    # example 2: the first invoice (80,000.00) was issued exempt; the month settled taxable (792.08 due)
    first = settled("u_1", "fm_a", 8_000_000, on=date(2026, 11, 4))
    second = settled("u_1", "fm_a", 4_000_000, on=date(2026, 11, 18))
    publish(platform, first, second)
    blue = blue_of(platform, first.pickup_id)
    red_id = issue_red_letter(
        platform["invoicing"], blue.id, reason="销货退回", lines=None, by="u_acc", now=at(date(2026, 12, 3))
    )
    red = one(platform, red_id)
    assert (red.invoice_date, red.cap_date) == (date(2026, 12, 3), date(2026, 11, 4))
    assert (red.total_fen, red.sales_excl_fen, red.vat_fen, red.vat_rate) == (
        -8_000_000,
        -7_920_792,
        -79_208,
        "0.01",
    )
    assert red.iit_fen == -blue.iit_fen  # income tax is not re-settled: the prepayment is taken back as paid


def test_red_letters_reduce_the_cap_ledger_where_their_blue_invoice_counts(platform):
    publish(platform, *issuer_events("fm_b"))
    blues = [settled("u_1", "fm_a" if m % 2 else "fm_b", 50_399_000, on=date(2026, m, 10)) for m in (3, 4, 5)]
    publish(platform, *blues)
    issue_red_letter(
        platform["invoicing"],
        blue_of(platform, blues[0].pickup_id).id,
        reason="退回",
        lines=[RedLetterLine(0, 10_100_000, Decimal("0"))],
        by="u_acc",
        now=at(date(2026, 6, 2)),
    )
    with platform["invoicing"].db.session() as s:
        ledger = cap_ledger_view(s, "u_1", date(2026, 11, 30), 500_000_000, 12)
    by_month = {m["month"]: m for m in ledger["ledger"]}
    assert by_month["2026-03"]["blue_sales_excl_fen"] == 49_900_000
    assert by_month["2026-03"]["red_sales_excl_fen"] == -10_000_000  # counted in the blue invoice's month
    assert by_month["2026-06"]["sales_excl_fen"] == 0
    assert ledger["total_sales_excl_fen"] == 3 * 49_900_000 - 10_000_000
    assert len(ledger["ledger"]) == 12 and ledger["window"] == {
        "from": date(2025, 12, 1),
        "to": date(2026, 11, 30),
    }
