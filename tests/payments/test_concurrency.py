"""Real concurrency (threads) on SQLite and PostgreSQL, for both adapters: contested money commands act once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from services.kernel.errors import Conflict, RuleViolated
from services.payments.domain import ledger as L
from services.payments.handlers import Payments
from services.payments.store import ledger_entries

from .conftest import close_case, make_case
from .support import Case, new_cmd

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest):  # noqa: ANN201
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


@pytest.fixture(params=["sandbox", "stripe"])
def conc_case(request: pytest.FixtureRequest, db_settings) -> Iterator[Case]:  # noqa: ANN001
    c = make_case(request, request.param, db_settings)
    yield c
    close_case(c)


@pytest.fixture
def sandbox_case(request: pytest.FixtureRequest, db_settings) -> Iterator[Case]:  # noqa: ANN001
    """Wallet races: payouts need Connect, which localstripe lacks (see conftest), so the sandbox."""
    c = make_case(request, "sandbox", db_settings)
    yield c
    close_case(c)


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads released together; return each result or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def count_entries(p: Payments, ref: str, kind: str) -> int:
    with p.db.session(readonly=True) as s:
        return s.execute(
            select(func.count())
            .select_from(ledger_entries)
            .where(ledger_entries.c.ref == ref, ledger_entries.c.kind == kind)
        ).scalar_one()


def test_two_captures_of_one_hold_make_one_capture(conc_case: Case):
    p = conc_case.payments
    hold = p.authorise(
        command_id=new_cmd(), payer_user_id="b", amount_fen=5000, payment_method="pm_card_visa"
    )
    results = race(2, lambda i: p.capture(command_id=new_cmd(f"cap{i}"), hold_id=hold.id))
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], Conflict) and lost[0].extra["current_state"] == "captured"
    assert count_entries(p, hold.id, "capture") == 1
    assert p.account_balance(L.escrow_account(hold.id)) == 5000
    assert p.provider.retrieve_intent(hold.provider_ref).captured_fen == 5000
    assert p.ledger_problems() == []


def test_the_same_capture_command_twice_at_once_acts_once(conc_case: Case):
    p = conc_case.payments
    hold = p.authorise(
        command_id=new_cmd(), payer_user_id="b", amount_fen=3000, payment_method="pm_card_visa"
    )
    cmd = new_cmd()
    results = race(2, lambda i: p.capture(command_id=cmd, hold_id=hold.id))
    assert all(not isinstance(r, Exception) for r in results), results
    assert results[0] == results[1]
    assert count_entries(p, hold.id, "capture") == 1


def test_concurrent_refunds_never_exceed_the_capture(conc_case: Case):
    p = conc_case.payments
    hold = p.capture(
        command_id=new_cmd(),
        hold_id=p.authorise(
            command_id=new_cmd(), payer_user_id="b", amount_fen=1000, payment_method="pm_card_visa"
        ).id,
    )
    results = race(3, lambda i: p.refund(command_id=new_cmd(f"rf{i}"), hold_id=hold.id, amount_fen=600))
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == 1, results
    assert all(
        isinstance(r, RuleViolated) and r.extra["reason"] == "over_refund"
        for r in results
        if isinstance(r, Exception)
    )
    assert p.get_hold(hold.id).refunded_fen == 600
    assert p.ledger_problems() == []


def test_concurrent_withdrawals_never_overdraw_a_wallet(sandbox_case: Case):
    p = sandbox_case.payments
    p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id="r",
        amount_fen=900,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    results = race(4, lambda i: p.withdraw(command_id=new_cmd(f"wd{i}"), user_id="r", amount_fen=500))
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1, results
    assert all(isinstance(r, RuleViolated) for r in results if isinstance(r, Exception))
    assert p.balance("r").wallets["resident"] == 400
    assert p.ledger_problems() == []


def test_the_same_payout_requested_at_once_pays_once(conc_case: Case):
    p = conc_case.payments
    pid = new_cmd("po")
    results = race(
        3,
        lambda i: p.request_payout(
            payout_id=pid,
            payee_user_id="r2",
            amount_fen=300,
            purpose="pickup",
            reference_id="pk",
            requested_by="booking",
        ),
    )
    assert all(not isinstance(r, Exception) for r in results), results
    assert p.balance("r2").wallets["resident"] == 300
    assert count_entries(p, pid, "payout_credit") == 1


def test_the_same_withdrawal_command_at_once_withdraws_once(sandbox_case: Case):
    p = sandbox_case.payments
    user = new_cmd("r")
    p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=user,
        amount_fen=800,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    cmd = new_cmd()
    results = race(3, lambda i: p.withdraw(command_id=cmd, user_id=user, amount_fen=300))
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.id for r in results}) == 1
    assert p.balance(user).wallets["resident"] == 500
