"""Real concurrency on PostgreSQL: threads running the PickupSettled handler at once, each in its own transaction.

- one seller, many settlements at once: the rolling cap is never exceeded (the seller's lock row serialises them);
- many sellers, one issuer at once, some transactions rolled back: numbers stay unique and gap-free;
- the same pickup delivered to several consumers at once: one invoice.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
from sqlalchemy import select

from services.invoicing.domain.numbering import duplicate_sequence_numbers, missing_sequence_numbers
from services.invoicing.domain.tax import rolling_cap_window
from services.invoicing.issuing import Sale, settle_sale
from services.invoicing.store import invoices
from services.kernel.db import UnitOfWork

from .support import issuer_events, platform_for, publish, seller_events, settled

pytestmark = pytest.mark.postgres
NOV = date(2026, 11, 10)
CAP = 500_000_000


@pytest.fixture
def platform(pg_settings):
    p = platform_for(pg_settings)
    publish(p, *issuer_events("fm_a"), *issuer_events("fm_b"))
    yield p
    p.stop()


def run_concurrently(n: int, work) -> list:  # noqa: ANN001
    """`work(i)` in n threads released together; returns each result or exception."""
    barrier = threading.Barrier(n)

    def go(i: int):  # noqa: ANN202
        barrier.wait()
        try:
            return work(i)
        except Exception as exc:  # noqa: BLE001 - the caller inspects it
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def settle(rt, event, *, fail_after: bool = False):  # noqa: ANN001, ANN201
    with UnitOfWork(rt.db) as uow:
        out = settle_sale(rt, uow, Sale.from_settled(event.model_dump(mode="json")))
        if fail_after:
            raise RuntimeError("the process died before commit")
    return out


def test_concurrent_settlements_of_one_seller_never_exceed_the_cap(platform, pg_settings):
    rt = platform["invoicing"]
    publish(platform, *seller_events(pg_settings, "u_1"))
    # 4,900,000.00 over January–October (10 × 494,900.00: sales excl 490,000.00 each), across two issuers
    publish(
        platform,
        *(settled("u_1", "fm_a" if m % 2 else "fm_b", 49_490_000, on=date(2026, m, 5)) for m in range(1, 11)),
    )
    # 12 pickups of 20,000.00 settle at once in November: the first five fit exactly (exempt: 100,000.00)
    pickups = [settled("u_1", "fm_a" if i % 2 else "fm_b", 2_000_000, on=NOV) for i in range(12)]
    results = run_concurrently(12, lambda i: settle(rt, pickups[i]))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.status for r in results) == ["blocked"] * 7 + ["issued"] * 5
    assert {r.refusal.reason for r in results if r.refusal} == {"cap_exceeded"}
    with rt.db.session() as s:
        issued = s.execute(
            select(invoices).where(invoices.c.seller_id == "u_1", invoices.c.status == "issued")
        ).all()
    w_from, w_to = rolling_cap_window(NOV)
    assert (
        sum(r.sales_excl_fen for r in issued if w_from <= r.cap_date <= w_to) == CAP
    )  # reached, never above
    for firm in ("fm_a", "fm_b"):
        seqs = [r.seq for r in issued if r.issuer_firm_id == firm]
        assert missing_sequence_numbers(seqs) == [] and duplicate_sequence_numbers(seqs) == []


def test_numbers_stay_gap_free_under_concurrency_and_rollbacks(platform, pg_settings):
    rt = platform["invoicing"]
    publish(platform, *(e for k in range(24) for e in seller_events(pg_settings, f"u_{k}")))
    pickups = [settled(f"u_{k}", "fm_a", 100_000 + k, on=NOV) for k in range(24)]
    results = run_concurrently(24, lambda i: settle(rt, pickups[i], fail_after=i % 5 == 0))
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [0, 5, 10, 15, 20]
    with rt.db.session() as s:
        rows = s.execute(
            select(invoices.c.seq, invoices.c.number, invoices.c.pickup_id).where(
                invoices.c.issuer_firm_id == "fm_a"
            )
        ).all()
    assert len(rows) == 19 and sorted(r.seq for r in rows) == list(range(1, 20))
    assert len({r.number for r in rows}) == 19
    # the rolled-back pickups are redelivered: they take the next numbers, still without a gap
    results = run_concurrently(5, lambda i: settle(rt, pickups[failed[i]]))
    assert all(r.status == "issued" for r in results)
    with rt.db.session() as s:
        seqs = s.execute(select(invoices.c.seq).where(invoices.c.issuer_firm_id == "fm_a")).scalars().all()
    assert sorted(seqs) == list(range(1, 25))


def test_the_same_pickup_settled_concurrently_gets_one_invoice(platform, pg_settings):
    rt = platform["invoicing"]
    publish(platform, *seller_events(pg_settings, "u_1"))
    ev = settled("u_1", "fm_a", 500_000, on=NOV)

    def deliver(_: int):  # noqa: ANN202 - like the consumer: a failed attempt is retried
        for _attempt in range(5):
            try:
                return settle(rt, ev)
            except Exception:  # noqa: BLE001 - the unique index refused a second invoice
                continue
        raise AssertionError("never succeeded")

    results = run_concurrently(8, deliver)
    assert len({r.invoice_id for r in results}) == 1 and sum(r.created for r in results) == 1
    with rt.db.session() as s:
        assert len(s.execute(select(invoices).where(invoices.c.pickup_id == ev.pickup_id)).all()) == 1
