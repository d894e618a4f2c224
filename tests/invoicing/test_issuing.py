"""Issuing through the service: exactly one invoice per settled pickup, the gates (blocked paths and their
reasons), retries, evidence, immutability, and the date-effective service rules (withholding, location class)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from services.contracts.booking import SettledLine
from services.contracts.payments import PayoutPaid, PayoutRequested
from services.invoicing.domain.numbering import missing_sequence_numbers
from services.invoicing.issuing import retry_blocked
from services.invoicing.settings import configure
from services.invoicing.store import attempts, evidence, invoice_lines, invoices
from services.invoicing.suspension import record_tax_status
from services.kernel.errors import Conflict, RuleViolated
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t

from .support import at, issuer_events, platform_for, publish, seller_events, settled

NOV = date(2026, 11, 10)
SERVICE_RULES = """
schema_version = 1
[[issuer_qualification]]
effective_from = 2024-04-29
kinds = ["recycler_filing", "hazardous_waste", "elv"]
source = "test"
[[withholding]]
effective_from = 2024-04-29
effective_to = 2026-10-31
enabled = true
source = "test"
[[withholding]]
effective_from = 2026-11-01
enabled = false
source = "test: a deployment where the firm no longer withholds"
[[filing_deadline]]
effective_from = 2024-04-29
day_of_next_month = 15
source = "test"
[[location_class]]
effective_from = 2021-09-01
default = "urban"
by_city = { "130000" = "county_town", "130100" = "other" }
source = "test"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


@pytest.fixture
def platform(settings):
    p = platform_for(settings)
    publish(p, *issuer_events("fm_a"), *seller_events(settings, "u_1"))
    yield p
    p.stop()


def rows(platform, **where) -> list:
    c = invoices.c
    with platform["invoicing"].db.session() as s:
        return s.execute(
            select(invoices).where(*(getattr(c, k) == v for k, v in where.items())).order_by(c.created_at)
        ).all()


def events(platform, suffix: str) -> list[dict]:
    with platform["invoicing"].db.session() as s:
        payloads = s.execute(select(outbox_t.c.payload).order_by(outbox_t.c.seq)).scalars().all()
    return [e.data for e in map(lambda p: Envelope.from_bytes(bytes(p)), payloads) if e.type.endswith(suffix)]


# ---------------------------------------------------------------------------------------------- exactly once


def test_a_duplicated_delivery_issues_one_invoice(platform):
    env = Envelope.wrap(settled("u_1", "fm_a", 500_000, on=NOV))
    publish(platform, env)
    publish(platform, env)  # the same event id again (at-least-once delivery)
    assert len(rows(platform, pickup_id=env.subject)) == 1
    assert len([e for e in events(platform, "invoice.issued.v1") if e["pickup_id"] == env.subject]) == 1


def test_a_republished_copy_with_a_new_event_id_issues_one_invoice(platform):
    ev = settled("u_1", "fm_a", 500_000, on=NOV)
    publish(platform, ev)
    publish(platform, Envelope.wrap(ev))  # a new envelope (new id) of the same fact: the inbox cannot tell
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert row.status == "issued" and row.number.endswith("0000000001")
    assert len([e for e in events(platform, "invoice.issued.v1") if e["pickup_id"] == ev.pickup_id]) == 1


def test_reordered_deliveries_issue_one_invoice_each_with_gap_free_numbers(platform):
    early = settled("u_1", "fm_a", 300_000, on=date(2026, 11, 2))
    late = settled("u_1", "fm_a", 400_000, on=date(2026, 11, 9))
    publish(platform, late, early, late, early)  # out of order, each twice
    issued = rows(platform, status="issued")
    assert sorted(r.pickup_id for r in issued) == sorted([early.pickup_id, late.pickup_id])
    assert missing_sequence_numbers(r.seq for r in issued) == [] and {r.seq for r in issued} == {1, 2}
    assert {r.invoice_date for r in issued} == {date(2026, 11, 2), date(2026, 11, 9)}


def test_a_pickup_settled_before_the_seller_verified_is_blocked_then_issued_on_retry(platform, settings):
    ev = settled("u_late", "fm_a", 800_000, on=NOV)
    publish(platform, ev)  # the settlement overtakes the accounts events
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert (row.status, row.blocked_reason) == ("blocked", "seller_unverified")
    publish(platform, *seller_events(settings, "u_late"))
    out = retry_blocked(platform["invoicing"], row.id, "u_accountant", now=at(date(2026, 11, 25)))
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert out.status == row.status == "issued" and row.retried and row.invoice_date == date(2026, 11, 25)
    assert row.id == out.invoice_id and row.number is not None
    issued = [e for e in events(platform, "invoice.issued.v1") if e["pickup_id"] == ev.pickup_id]
    assert len(issued) == 1 and issued[0]["retried"] is True and issued[0]["invoice_id"] == row.id
    with platform["invoicing"].db.session() as s:
        history = s.execute(
            select(attempts.c.outcome, attempts.c.reason)
            .where(attempts.c.invoice_id == row.id)
            .order_by(attempts.c.id)
        ).all()
    assert [tuple(h) for h in history] == [("blocked", "seller_unverified"), ("issued", None)]


def test_a_retry_that_still_fails_keeps_the_invoice_blocked_with_the_new_reason(platform, settings):
    ev = settled("u_nc", "fm_a", 800_000, on=NOV)
    publish(platform, *seller_events(settings, "u_nc", consent=False), ev)
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert row.blocked_reason == "consent_missing"
    with pytest.raises(RuleViolated) as caught:
        retry_blocked(platform["invoicing"], row.id, "u_admin", now=at(date(2026, 11, 25)))
    assert caught.value.extra["reason"] == "consent_missing"
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert row.status == "blocked"
    assert len(events(platform, "invoice.blocked.v1")) == 1  # the saga heard it once
    publish(platform, *seller_events(settings, "u_nc", verified=False))  # the consent arrives
    assert (
        retry_blocked(platform["invoicing"], row.id, "u_admin", now=at(date(2026, 11, 26))).status == "issued"
    )
    with pytest.raises(Conflict):
        retry_blocked(platform["invoicing"], row.id, "u_admin")


# ---------------------------------------------------------------------------------------------- gates


@pytest.mark.parametrize(
    "case, reason",
    [
        ("unverified_firm", "issuer_unverified"),
        ("no_qualification", "issuer_not_qualified"),
        ("expired", "qualification_expired"),
        ("unverified_seller", "seller_unverified"),
        ("no_consent", "consent_missing"),
        ("nothing_bought", "nothing_to_invoice"),
    ],
)
def test_blocked_paths_keep_the_invoice_blocked_with_the_reason(platform, settings, case, reason):
    seller, firm, amounts, extra = "u_1", "fm_a", [500_000], None
    if case == "unverified_firm":
        firm = "fm_unknown"
    elif case == "no_qualification":
        firm = "fm_noq"
        publish(platform, *issuer_events(firm, qualified=False))
    elif case == "expired":
        firm = "fm_exp"
        publish(platform, *issuer_events(firm, valid_until=date(2026, 11, 9)))
    elif case == "unverified_seller":
        seller = "u_unverified"
    elif case == "no_consent":
        seller = "u_noconsent"
        publish(platform, *seller_events(settings, seller, consent=False))
    elif case == "nothing_bought":
        amounts = []
        extra = [
            SettledLine(
                category="hazardous.battery",
                tax_code="1080110010000000000",
                unit="kg",
                qty="2.000",
                unit_price_fen=0,
                amount_fen=0,
            )
        ]
    ev = settled(seller, firm, amounts, on=NOV, extra_lines=extra)
    publish(platform, ev)
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert (row.status, row.blocked_reason, row.number, row.withheld_fen) == ("blocked", reason, None, None)
    (blocked,) = [e for e in events(platform, "invoice.blocked.v1") if e["pickup_id"] == ev.pickup_id]
    assert blocked["reason"] == reason and blocked["detail"] == row.blocked_detail
    assert not [e for e in events(platform, "invoice.issued.v1") if e["pickup_id"] == ev.pickup_id]


def test_a_qualification_valid_on_the_invoice_date_is_enough(platform):
    publish(platform, *issuer_events("fm_edge", valid_until=NOV))
    ev = settled("u_1", "fm_edge", 500_000, on=NOV)
    publish(platform, ev)
    assert rows(platform, pickup_id=ev.pickup_id)[0].status == "issued"


def test_an_issuer_with_unpaid_tax_is_suspended_after_the_filing_deadline_until_paid(platform):
    rt = platform["invoicing"]
    record_tax_status(rt, firm_id="fm_a", period="2026-10", status="unpaid", by="u_admin", amount_fen=12_345)
    before = settled("u_1", "fm_a", 100_000, on=date(2026, 11, 15))  # the deadline day: not yet suspended
    during = settled("u_1", "fm_a", 100_000, on=date(2026, 11, 16))
    publish(platform, before, during)
    assert rows(platform, pickup_id=before.pickup_id)[0].status == "issued"
    suspended = rows(platform, pickup_id=during.pickup_id)[0]
    assert (suspended.status, suspended.blocked_reason) == ("blocked", "issuer_suspended")
    assert "2026-10" in suspended.blocked_detail and "2026-11-15" in suspended.blocked_detail
    record_tax_status(rt, firm_id="fm_a", period="2026-10", status="paid", by="u_admin")
    after = settled("u_1", "fm_a", 100_000, on=date(2026, 11, 20))
    publish(platform, after)
    assert rows(platform, pickup_id=after.pickup_id)[0].status == "issued"


def test_only_the_lines_bought_are_invoiced(platform):
    battery = SettledLine(
        category="hazardous.battery",
        tax_code="1080110010000000000",
        unit="kg",
        qty="2.000",
        unit_price_fen=0,
        amount_fen=0,
    )
    ev = settled("u_1", "fm_a", [300_000, 200_000], on=NOV, extra_lines=[battery])
    publish(platform, ev)
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    with platform["invoicing"].db.session() as s:
        lines = s.execute(select(invoice_lines).where(invoice_lines.c.invoice_id == row.id)).all()
    assert row.total_fen == 500_000 and [ln.amount_fen for ln in lines] == [300_000, 200_000]
    assert sum(ln.iit_fen for ln in lines) == row.iit_fen and lines[0].category_name == "废钢"


# ---------------------------------------------------------------------------------------------- evidence


def test_evidence_is_kept_with_the_invoice_and_the_payout_record_is_attached_when_it_arrives(platform):
    ev = settled("u_1", "fm_a", 500_000, on=NOV)
    publish(platform, ev)
    now = datetime(2026, 11, 10, 3, tzinfo=UTC)
    publish(
        platform,
        PayoutRequested(
            payout_id="po_" + ev.pickup_id,
            payee_user_id="u_1",
            amount_fen=498_750,
            purpose="pickup",
            reference_id=ev.pickup_id,
            requested_by="booking",
            requested_at=now,
        ),
        PayoutPaid(
            payout_id="po_" + ev.pickup_id,
            reference_id=ev.pickup_id,
            amount_fen=498_750,
            provider_ref="sbx_1",
            paid_at=now,
        ),
        PayoutPaid(payout_id="po_other", reference_id="order_1", amount_fen=1, provider_ref="x", paid_at=now),
    )
    with platform["invoicing"].db.session() as s:
        got = {
            e.kind: json.loads(e.payload)
            for e in s.execute(select(evidence).where(evidence.c.pickup_id == ev.pickup_id)).all()
        }
        unrelated = s.execute(select(evidence).where(evidence.c.pickup_id == "order_1")).all()
    assert set(got) == {
        "weighing",
        "consent",
        "qualification",
        "three_flows",
        "payout_requested",
        "payout_paid",
    }
    assert got["weighing"]["lines"][0]["qty"] == "1000.000" and got["consent"]["consent_id"] == "cs_u_1"
    assert (
        got["payout_requested"]["payee_is_seller"] is True and got["payout_paid"]["provider_ref"] == "sbx_1"
    )
    assert got["three_flows"]["holds"] is True and not unrelated


def test_issued_invoices_lines_and_evidence_cannot_be_changed_in_the_database(platform):
    ev = settled("u_1", "fm_a", 500_000, on=NOV)
    publish(platform, ev)
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    db = platform["invoicing"].db
    for stmt in (
        update(invoices).where(invoices.c.id == row.id).values(total_fen=1),
        invoices.delete().where(invoices.c.id == row.id),
        update(invoice_lines).where(invoice_lines.c.invoice_id == row.id).values(amount_fen=1),
        evidence.delete().where(evidence.c.pickup_id == ev.pickup_id),
        update(attempts).values(reason="x"),
    ):
        with pytest.raises(DBAPIError, match="immutable"), db.session() as s, s.begin():
            s.execute(stmt)
    assert rows(platform, pickup_id=ev.pickup_id)[0].total_fen == 500_000
    with db.session() as s, s.begin():  # a blocked invoice may change (its reason; once, to issued)
        s.execute(text("UPDATE invoices SET blocked_detail = 'x' WHERE status = 'blocked'"))


# ---------------------------------------------------------------------------------------------- service rules


def test_withholding_and_location_class_follow_the_date_effective_service_rules(platform, settings, tmp_path):
    path = tmp_path / "service_rules.toml"
    path.write_text(SERVICE_RULES, encoding="utf-8")
    configure(platform["invoicing"], service_rules_file=str(path))
    publish(
        platform, *issuer_events("fm_sjz", city_code="130102"), *issuer_events("fm_hb", city_code="130200")
    )
    oct_ev = settled("u_1", "fm_sjz", 12_000_000, on=date(2026, 10, 20))
    nov_ev = settled("u_1", "fm_hb", 12_000_000, on=date(2026, 11, 20))
    publish(platform, oct_ev, nov_ev)
    (october,) = rows(platform, pickup_id=oct_ev.pickup_id)
    (november,) = rows(platform, pickup_id=nov_ev.pickup_id)
    # 130102 (石家庄 district) → prefecture 130100 = "other": 118,812 × 1% × ½ = 594
    assert (october.location_class, october.vat_fen, october.city_maintenance_fen) == ("other", 118_812, 594)
    assert (
        october.withholding
        and october.withheld_fen == october.vat_fen + october.surcharges_fen + october.iit_fen
    )
    # 130200 → province 130000 = "county_town": × 5% × ½ = 2,970; withholding off from 2026-11-01
    assert (november.location_class, november.city_maintenance_fen) == ("county_town", 2_970)
    assert (november.withholding, november.withheld_fen) == (False, 0) and november.iit_fen > 0
    nov_event = [e for e in events(platform, "invoice.issued.v1") if e["pickup_id"] == nov_ev.pickup_id][0]
    assert nov_event["withheld_fen"] == 0


def test_an_unknown_city_gets_the_default_class(platform):
    publish(platform, *issuer_events("fm_x", city_code="999999"))
    ev = settled("u_1", "fm_x", 12_000_000, on=NOV)
    publish(platform, ev)
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert (row.location_class, row.city_maintenance_fen) == ("urban", 4_158)


def test_a_pickup_dated_before_the_regime_is_blocked_not_dead_lettered(platform):
    ev = settled("u_1", "fm_a", 500_000, on=date(2024, 4, 28))
    publish(platform, ev)
    (row,) = rows(platform, pickup_id=ev.pickup_id)
    assert (row.status, row.blocked_reason) == ("blocked", "no_tax_rules_in_force")
