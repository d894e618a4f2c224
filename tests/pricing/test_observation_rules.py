"""Which inputs count, at which tier, on which day (domain/observations.py, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.pricing.domain.observations import (
    ObservationDraft,
    SettledLine,
    drafts_from_settled_pickup,
    firm_report_is_self_dealing,
    tier_for_firm_report,
    trading_day,
)


def test_only_a_documented_trade_is_a_verified_deal() -> None:
    assert tier_for_firm_report("trade", "invoice:N1") == "verified_deal"
    assert tier_for_firm_report("trade", None) == "quote"
    assert tier_for_firm_report("quote", None) == "quote"
    assert tier_for_firm_report("quote", "invoice:N1") == "quote"  # a bid is never a deal


def test_self_dealing_of_firm_reports() -> None:
    assert firm_report_is_self_dealing("fm_a", "fm_a", frozenset({"fm_a"}))
    assert firm_report_is_self_dealing("fm_a", "fm_b", frozenset({"fm_a", "fm_b"}))
    assert not firm_report_is_self_dealing("fm_a", "fm_c", frozenset({"fm_a", "fm_b"}))
    assert not firm_report_is_self_dealing("fm_a", None, frozenset({"fm_a"}))


def test_the_trading_day_is_the_shanghai_calendar_day() -> None:
    assert trading_day(datetime(2026, 11, 19, 16, 0, tzinfo=UTC), "Asia/Shanghai").isoformat() == "2026-11-20"
    assert (
        trading_day(datetime(2026, 11, 19, 15, 59, tzinfo=UTC), "Asia/Shanghai").isoformat() == "2026-11-19"
    )
    east8 = timezone(timedelta(hours=8))
    assert (
        trading_day(datetime(2026, 11, 20, 0, 0, tzinfo=east8), "Asia/Shanghai").isoformat() == "2026-11-20"
    )


def test_a_settled_pickup_gives_one_transaction_per_paying_indexed_line() -> None:
    when = datetime(2026, 11, 20, 3, tzinfo=UTC)
    drafts = drafts_from_settled_pickup(
        pickup_id="pk_1",
        event_id="ev_1",
        firm_id="fm_a",
        resident_id="us_r",
        collector_user_id="us_c",
        city_code="110105",
        settled_at=when,
        lines=[
            SettledLine("metal.steel", Decimal("12.5"), 200),
            SettledLine("glass.mixed", Decimal(30), 0),
            SettledLine("electronics.phone", Decimal(1), 900),
            SettledLine("metal.copper", Decimal(0), 4500),
            SettledLine("paper.cardboard", Decimal("3.250"), 140),
        ],
        indexed=frozenset({"metal.steel", "metal.copper", "paper.cardboard", "glass.mixed"}),
        pays=frozenset({"metal.steel", "metal.copper", "paper.cardboard", "electronics.phone"}),
    )
    assert [(d.category, d.qty_milli, d.tier, d.kind, d.counterparty, d.related_party) for d in drafts] == [
        ("metal.steel", 12500, "transaction", "trade", "firm:fm_a", False),
        ("paper.cardboard", 3250, "transaction", "trade", "firm:fm_a", False),
    ]
    assert len({d.source_key for d in drafts}) == 2 and all(d.source_event_id == "ev_1" for d in drafts)
    own = drafts_from_settled_pickup(
        pickup_id="pk_2",
        event_id=None,
        firm_id="fm_a",
        resident_id="us_same",
        collector_user_id="us_same",
        city_code="110105",
        settled_at=when,
        lines=[SettledLine("metal.steel", Decimal(1), 200)],
        indexed=frozenset({"metal.steel"}),
        pays=frozenset({"metal.steel"}),
    )
    assert own[0].related_party


def test_a_draft_needs_an_offset_and_at_most_three_places() -> None:
    base = dict(
        category="metal.steel",
        city_code="110105",
        unit_price_fen=1,
        kind="trade",
        tier="quote",
        counterparty="firm:a",
        related_party=False,
        source="t",
        source_ref="t",
        source_key="k",
    )
    with pytest.raises(ValueError, match="offset"):
        ObservationDraft(qty=Decimal(1), observed_at=datetime(2026, 1, 2), **base)
    with pytest.raises(ValueError, match="3 decimal places"):
        ObservationDraft(qty=Decimal("1.0005"), observed_at=datetime(2026, 1, 2, tzinfo=UTC), **base)
