"""Properties of the service (handler + database), over generated pickups:

- an issued invoice's totals are the sums of its stored lines, and withheld = VAT + surcharges + income tax;
- a full red-letter invoice nets its blue invoice to zero in every stored amount;
- however pickups arrive (in any order of their dates), the seller's reverse-invoiced sales over any 12 natural
  months never exceed the cap.

One platform per test (SQLite); each generated example works on a seller of its own.
"""

from __future__ import annotations

import itertools
from datetime import date

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.invoicing.domain.tax import rolling_cap_window
from services.invoicing.issuing import Sale, issue_red_letter, settle_sale
from services.invoicing.store import invoice_lines, invoices
from services.kernel.db import UnitOfWork

from .support import at, issuer_events, platform_for, publish, seller_events, settled

CAP = 500_000_000
AMOUNTS = (
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
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_sellers = itertools.count()


def _platform(settings_, n_sellers: int = 0):  # noqa: ANN001, ANN202
    p = platform_for(settings_)
    publish(p, *issuer_events("fm_a"), *issuer_events("fm_b", city_code="130102"))
    return p


def _seller(platform, settings_) -> str:  # noqa: ANN001
    seller = f"u_prop_{next(_sellers)}"
    publish(platform, *seller_events(settings_, seller))
    return seller


def _settle(rt, event):  # noqa: ANN001, ANN202
    with UnitOfWork(rt.db) as uow:
        return settle_sale(rt, uow, Sale.from_settled(event.model_dump(mode="json")))


def _row(rt, invoice_id: str):  # noqa: ANN001, ANN202
    with rt.db.session() as s:
        row = s.execute(select(invoices).where(invoices.c.id == invoice_id)).one()
        lines = s.execute(select(invoice_lines).where(invoice_lines.c.invoice_id == invoice_id)).all()
    return row, lines


line_amounts = st.lists(st.integers(1, 3_000_000), min_size=1, max_size=4)
day = st.dates(date(2026, 1, 1), date(2026, 12, 31))


def test_invoice_totals_are_the_sums_of_their_lines(sqlite_settings):
    platform = _platform(sqlite_settings)
    rt = platform["invoicing"]

    @PROPS
    @given(
        before=st.lists(st.integers(1, 8_000_000), max_size=3),
        amounts=line_amounts,
        on=day,
        firm=st.sampled_from(["fm_a", "fm_b"]),
    )
    def prop(before, amounts, on, firm):  # noqa: ANN001
        seller = _seller(platform, sqlite_settings)
        for b in before:
            _settle(rt, settled(seller, firm, b, on=on))
        out = _settle(rt, settled(seller, firm, amounts, on=on))
        row, lines = _row(rt, out.invoice_id)
        assert row.status == "issued"
        assert row.total_fen == sum(amounts) == sum(ln.amount_fen for ln in lines)
        for f in ("sales_excl_fen", "vat_fen", "iit_fen"):
            assert getattr(row, f) == sum(getattr(ln, f) for ln in lines), f
        assert row.surcharges_fen == row.city_maintenance_fen + row.education_fen + row.local_education_fen
        assert row.sales_excl_fen + row.vat_fen == row.total_fen
        assert row.withheld_fen == row.vat_fen + row.surcharges_fen + row.iit_fen

    prop()
    platform.stop()


def test_a_full_red_letter_nets_its_blue_invoice_to_zero(sqlite_settings):
    platform = _platform(sqlite_settings)
    rt = platform["invoicing"]

    @PROPS
    @given(before=st.integers(0, 12_000_000), amounts=line_amounts, on=day, later=st.integers(0, 40))
    def prop(before, amounts, on, later):  # noqa: ANN001
        seller = _seller(platform, sqlite_settings)
        if before:
            _settle(rt, settled(seller, "fm_a", before, on=on))
        blue = _settle(rt, settled(seller, "fm_a", amounts, on=on))
        red_on = date.fromordinal(on.toordinal() + later)
        red_id = issue_red_letter(
            rt, blue.invoice_id, reason="开票有误", lines=None, by="u_acc", now=at(red_on)
        )
        b, _ = _row(rt, blue.invoice_id)
        r, _ = _row(rt, red_id)
        # a red letter in the same month nets the blue as issued; in a later month, as its month settled —
        # either way the seller's sales, income tax and (withheld) amounts go back to zero
        for f in ("total_fen", "iit_fen"):
            assert b.__getattribute__(f) + r.__getattribute__(f) == 0, f
        if (red_on.year, red_on.month) == (on.year, on.month):
            for f in AMOUNTS:
                assert getattr(b, f) + getattr(r, f) == 0, f

    prop()
    platform.stop()


def test_the_rolling_cap_is_never_exceeded(sqlite_settings):
    platform = _platform(sqlite_settings)
    rt = platform["invoicing"]
    pickups = st.lists(
        st.tuples(st.integers(0, 17), st.integers(1, 150_000_000), st.sampled_from(["fm_a", "fm_b"])),
        min_size=1,
        max_size=14,
    )

    @PROPS
    @given(pickups=pickups)
    # a December pickup invoiced after three January ones: fine in the window ending in December, over the cap in
    # the window ending in January
    @example(
        pickups=[
            (12, 150_000_000, "fm_a"),
            (12, 150_000_000, "fm_b"),
            (12, 150_000_000, "fm_a"),
            (11, 60_000_000, "fm_b"),
        ]
    )
    def prop(pickups):  # noqa: ANN001
        seller = _seller(platform, sqlite_settings)
        for (
            month_index,
            amount,
            firm,
        ) in pickups:  # in any order: a late pickup may be invoiced after later ones
            y, m = divmod(2025 * 12 + month_index, 12)
            _settle(rt, settled(seller, firm, amount, on=date(y, m + 1, 15)))
        with rt.db.session() as s:
            rows = s.execute(
                select(invoices).where(invoices.c.seller_id == seller, invoices.c.status == "issued")
            ).all()
            blocked = (
                s.execute(
                    select(invoices.c.blocked_reason).where(
                        invoices.c.seller_id == seller, invoices.c.status == "blocked"
                    )
                )
                .scalars()
                .all()
            )
        assert set(blocked) <= {"cap_exceeded"}
        for month_index in range(0, 18 + 11):  # every window of 12 natural months that holds an invoice
            y, m = divmod(2025 * 12 + month_index, 12)
            w_from, w_to = rolling_cap_window(date(y, m + 1, 1))
            assert sum(x.sales_excl_fen for x in rows if w_from <= x.cap_date <= w_to) <= CAP

    prop()
    platform.stop()
