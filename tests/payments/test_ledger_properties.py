"""Property tests of the ledger invariant.

1. The pure ledger: any entry the constructors accept balances to zero; a reversal undoes it exactly.
2. The payments port under random sequences of operations (authorise, capture, cancel, refund, release, payouts,
   withdrawals) interleaved with what the provider does on its own (an authorisation lapses, a refund fails
   later, a payout comes back): after every step every entry balances, the ledger sums to zero, no wallet,
   escrow or hold is negative, no hold captured more than it authorised nor refunded more than it captured,
   and each hold agrees with a simple model of what should have happened — including which commands must be
   refused (over-capture, over-refund, acting on a hold in the wrong state).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from services.kernel.errors import Conflict, RuleViolated
from services.kernel.settings import Settings
from services.payments.domain import ledger as L
from services.payments.domain.model import HoldStatus, PayoutStatus, RefundStatus
from services.payments.handlers import Payments
from services.payments.reconcile import reconcile

from .support import build_case, payments_settings

# --- 1. the pure ledger ------------------------------------------------------------------------------------------

accounts = st.sampled_from(
    [
        L.PROVIDER_CASH,
        L.CARD_AUTHORISATIONS,
        L.PAYOUTS_IN_TRANSIT,
        L.PLATFORM_FEES,
        L.escrow_account("h1"),
        L.hold_account("h1"),
        L.wallet_account("resident", "u1"),
        L.funding_account("booking"),
    ]
)
amounts = st.integers(min_value=1, max_value=10**9)


@st.composite
def entries(draw) -> L.Entry:  # noqa: ANN001
    """A random balanced entry: debits and credits on random accounts, summing to zero."""
    debits = draw(st.lists(st.tuples(accounts, amounts), min_size=1, max_size=4))
    total = sum(a for _, a in debits)
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), max_size=3, unique=True))) if total > 1 else []
    parts = [b - a for a, b in itertools.pairwise([0, *cuts, total])]
    credits = [(draw(accounts), -p) for p in parts]
    return L.entry("test", "ref", *debits, *credits)


@given(st.lists(entries(), max_size=30))
def test_entries_balance_and_reversals_undo_them(es):
    balances: dict[str, int] = {}
    for e in es:
        assert sum(ln.amount_fen for ln in e.lines) == 0
        for ln in e.lines + L.reversal(e).lines:
            balances[ln.account] = balances.get(ln.account, 0) + ln.amount_fen
    assert all(v == 0 for v in balances.values())


@given(st.lists(st.tuples(accounts, st.integers(-(10**6), 10**6).filter(bool)), min_size=1, max_size=6))
def test_an_unbalanced_entry_is_refused(lines):
    assume(sum(a for _, a in lines) != 0)
    with pytest.raises(L.UnbalancedEntry):
        L.entry("test", "ref", *lines)


@given(amounts, st.integers(min_value=-(10**6), max_value=0))
def test_a_transfer_moves_a_positive_amount(amount, bad):
    e = L.transfer("t", "r", L.PROVIDER_CASH, L.escrow_account("h"), amount)
    assert [ln.amount_fen for ln in e.lines] == [amount, -amount]
    with pytest.raises(L.UnbalancedEntry):
        L.transfer("t", "r", L.PROVIDER_CASH, L.escrow_account("h"), bad)


# --- 2. the port under random operations ---------------------------------------------------------------------------

_STATE: dict[str, object] = {}


def _payments() -> Payments:
    """One sandbox-backed port on SQLite for the whole module (each run uses fresh ids)."""
    if "payments" not in _STATE:
        d = Path(tempfile.mkdtemp(prefix="payments-props-"))
        case = build_case("sandbox", payments_settings(Settings(env="test", data_dir=d), "sandbox"))
        _STATE["case"] = case
        _STATE["payments"] = case.payments
    return _STATE["payments"]  # type: ignore[return-value]


_run = itertools.count()


class PaymentsMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    refunds = Bundle("refunds")
    withdrawals = Bundle("withdrawals")

    def __init__(self) -> None:
        super().__init__()
        self.p = _payments()
        self.run_id = next(_run)
        self.cmd = itertools.count()
        # model of each hold: authorised, captured, refunded (succeeded), released, status, payment method
        self.model: dict[str, dict] = {}
        # model of each refund: its hold, amount, and whether the provider has failed it (as far as we know)
        self.model_refunds: dict[str, dict] = {}
        self.users = [f"r{self.run_id}-{i}" for i in range(3)]

    def c(self) -> str:
        return f"run{self.run_id}-cmd{next(self.cmd)}"

    # --- holds -----------------------------------------------------------------------------------------------
    @rule(
        target=holds,
        amount=st.integers(1, 20_000),
        pm=st.sampled_from(
            [
                "pm_card_visa",
                "pm_card_visa",
                "pm_card_refundFail",
                "pm_card_chargeCustomerFail",
                "4000000000009995",
            ]
        ),
    )
    def authorise(self, amount, pm):  # noqa: ANN001, ANN201
        h = self.p.authorise(command_id=self.c(), payer_user_id="buyer", amount_fen=amount, payment_method=pm)
        declined = pm in ("pm_card_chargeCustomerFail", "4000000000009995")
        assert h.status == (HoldStatus.DECLINED if declined else HoldStatus.AUTHORISED)
        self.model[h.id] = dict(authorised=amount, captured=0, refunded=0, released=0, status=h.status, pm=pm)
        return h.id

    @rule(hold=holds, amount=st.one_of(st.none(), st.integers(1, 25_000)))
    def capture(self, hold, amount):  # noqa: ANN001, ANN201
        m = self.model[hold]
        want = m["authorised"] if amount is None else amount
        try:
            h = self.p.capture(command_id=self.c(), hold_id=hold, amount_fen=amount)
        except Conflict:
            assert m["status"] != HoldStatus.AUTHORISED
            return
        except RuleViolated as exc:
            assert exc.extra["reason"] == "over_capture" and want > m["authorised"]
            return
        assert m["status"] == HoldStatus.AUTHORISED and want <= m["authorised"]
        m.update(status=HoldStatus.CAPTURED, captured=want)
        assert h.captured_fen == want

    @rule(hold=holds)
    def cancel(self, hold):  # noqa: ANN001, ANN201
        m = self.model[hold]
        try:
            self.p.cancel(command_id=self.c(), hold_id=hold)
        except Conflict:
            assert m["status"] != HoldStatus.AUTHORISED
            return
        assert m["status"] == HoldStatus.AUTHORISED
        m["status"] = HoldStatus.CANCELLED

    @rule(target=refunds, hold=holds, amount=st.one_of(st.none(), st.integers(1, 25_000)))
    def refund(self, hold, amount):  # noqa: ANN001, ANN201
        m = self.model[hold]
        left = m["captured"] - m["refunded"] - m["released"]
        try:
            r = self.p.refund(command_id=self.c(), hold_id=hold, amount_fen=amount)
        except Conflict:
            assert m["status"] != HoldStatus.CAPTURED
            return None
        except RuleViolated as exc:
            assert exc.extra["reason"] == "over_refund"
            assert (amount if amount is not None else left) > left or left == 0
            return None
        want = left if amount is None else amount
        assert m["status"] == HoldStatus.CAPTURED and 0 < want <= left and r.amount_fen == want
        # the provider accepts every refund at first; on pm_card_refundFail it fails it later (an event)
        assert r.status == RefundStatus.SUCCEEDED
        m["refunded"] += want
        self.model_refunds[r.id] = dict(hold=hold, amount=want, failed=False)
        return r.id

    @rule(hold=holds, fee=st.integers(0, 500))
    def release(self, hold, fee):  # noqa: ANN001, ANN201
        m = self.model[hold]
        left = m["captured"] - m["refunded"] - m["released"]
        from services.kernel.errors import ValidationFailed

        try:
            po = self.p.release(command_id=self.c(), hold_id=hold, payee_user_id=self.users[0], fee_fen=fee)
        except Conflict:
            assert m["status"] != HoldStatus.CAPTURED
            return
        except RuleViolated:
            assert left == 0
            return
        except ValidationFailed:
            assert fee >= left
            return
        assert po.amount_fen == left - fee and po.status == PayoutStatus.PAID
        m["released"] += left

    # --- the provider on its own -------------------------------------------------------------------------------
    @rule(hold=holds)
    def authorisation_lapses(self, hold):  # noqa: ANN001, ANN201
        m = self.model[hold]
        if m["status"] != HoldStatus.AUTHORISED:
            return
        self.p.provider.expire_authorisation(self.p.get_hold(hold).provider_ref)
        self.pull_provider_events()
        m["status"] = HoldStatus.CANCELLED

    @rule(refund=consumes(refunds))
    def refund_fails_later(self, refund):  # noqa: ANN001, ANN201
        if refund is None or self.model_refunds[refund]["failed"]:
            return
        self.p.provider.fail_refund(self.p.get_refund(refund).provider_ref)
        self._refund_failed(refund)
        self.pull_provider_events()

    @rule()
    def deliver_pending_events(self):  # noqa: ANN201
        self.pull_provider_events()

    def pull_provider_events(self) -> None:
        """Every rule that lets the provider's events in goes through here: whichever it is, the refunds made on
        pm_card_refundFail fail with it (their failure waits in the provider's queue until pulled)."""
        self.p.pull_provider_events()
        for rid, r in self.model_refunds.items():
            if not r["failed"] and self.model[r["hold"]]["pm"] == "pm_card_refundFail":
                self._refund_failed(rid)

    def _refund_failed(self, refund: str) -> None:
        # not booked as refunded: the money is back in the escrow (refundable again); not retried
        r = self.model_refunds[refund]
        r["failed"] = True
        self.model[r["hold"]]["refunded"] -= r["amount"]

    # --- payouts -------------------------------------------------------------------------------------------------
    @rule(
        target=withdrawals,
        user=st.integers(0, 2),
        amount=st.integers(1, 900),
        kind=st.sampled_from(["resident", "resident", "firm"]),
    )
    def request_payout(self, user, amount, kind):  # noqa: ANN001, ANN201
        po = self.p.request_payout(
            payout_id=self.c(),
            payee_user_id=self.users[user],
            amount_fen=amount,
            purpose="pickup",
            reference_id="pk",
            requested_by="booking",
            payee_kind=kind,
        )
        assert po.status in (PayoutStatus.CREDITED, PayoutStatus.PAID)
        return po.withdrawal_id

    @rule(target=withdrawals, user=st.integers(0, 2), amount=st.one_of(st.none(), st.integers(1, 1500)))
    def withdraw(self, user, amount):  # noqa: ANN001, ANN201
        before = self.p.balance(self.users[user]).wallets["resident"]
        try:
            wd = self.p.withdraw(command_id=self.c(), user_id=self.users[user], amount_fen=amount)
        except RuleViolated:
            assert before == 0 or (amount or 0) > before
            return None
        assert wd.amount_fen == (before if amount is None else amount)
        return wd.id

    @rule(wd=consumes(withdrawals))
    def payout_comes_back(self, wd):  # noqa: ANN001, ANN201
        if wd is None:
            return
        w = self.p.get_withdrawal(wd)
        if w.status != "paid":
            return
        self.p.provider.reverse_transfer(w.provider_ref)
        self.pull_provider_events()
        assert self.p.get_withdrawal(wd).status == "returned"

    # --- invariants ------------------------------------------------------------------------------------------------
    @invariant()
    def ledger_balances_and_nothing_is_negative(self):  # noqa: ANN201
        assert self.p.ledger_problems() == []

    @invariant()
    def holds_agree_with_the_model(self):  # noqa: ANN201
        for hold_id, m in self.model.items():
            h = self.p.get_hold(hold_id)
            assert h.status == m["status"]
            assert h.captured_fen == m["captured"] <= h.amount_fen
            assert h.refunded_fen == m["refunded"] <= h.captured_fen
            assert h.refundable_fen == m["captured"] - m["refunded"] - m["released"] >= 0

    @invariant()
    def refunds_agree_with_the_model(self):  # noqa: ANN201
        for refund_id, r in self.model_refunds.items():
            got = self.p.get_refund(refund_id)
            assert got.status == (RefundStatus.FAILED if r["failed"] else RefundStatus.SUCCEEDED)
            assert (got.failure_reason is not None) == r["failed"]

    @invariant()
    def wallets_are_never_negative(self):  # noqa: ANN201
        for u in self.users:
            b = self.p.balance(u)
            assert all(v >= 0 for v in b.wallets.values()) and b.in_transit_fen == 0


TestPaymentsMachine = PaymentsMachine.TestCase
TestPaymentsMachine.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _check(m: PaymentsMachine) -> None:
    m.ledger_balances_and_nothing_is_negative()
    m.holds_agree_with_the_model()
    m.refunds_agree_with_the_model()
    m.wallets_are_never_negative()


@pytest.mark.parametrize("deliver", ["deliver_pending_events", "authorisation_lapses", "payout_comes_back"])
def test_a_refund_the_provider_fails_is_not_booked_whichever_step_delivers_the_failure(deliver):
    """Seen once at random: a refund on pm_card_refundFail whose failure came in with another step's pull (here
    each step that pulls the provider's events) left the model expecting it refunded. The ledger was right."""
    m = PaymentsMachine()
    hold = m.authorise(amount=100, pm="pm_card_refundFail")
    m.capture(hold=hold, amount=None)
    refund = m.refund(hold=hold, amount=30)
    assert m.p.get_hold(hold).refunded_fen == 30  # booked: the provider accepted it
    _check(m)
    if deliver == "authorisation_lapses":
        m.authorisation_lapses(hold=m.authorise(amount=50, pm="pm_card_visa"))
    elif deliver == "payout_comes_back":
        m.payout_comes_back(wd=m.request_payout(user=0, amount=900, kind="firm"))
    else:
        m.deliver_pending_events()
    _check(m)
    h, r = m.p.get_hold(hold), m.p.get_refund(refund)
    assert (h.refunded_fen, h.refundable_fen) == (0, 100)  # reversed: the money is back in the escrow
    assert r.status == RefundStatus.FAILED and r.failure_reason == "expired_or_canceled_card"
    # not retried: the same command answers with the failed refund; a new command is a new refund
    again = m.p.refund(command_id=f"run{m.run_id}-cmd2", hold_id=hold, amount_fen=30)
    assert again == r and m.p.get_hold(hold).refunded_fen == 0


def test_after_all_the_random_runs_the_ledger_reconciles_with_the_provider():
    p = _payments()
    report = reconcile(p)
    assert report.ok, report.to_dict()
    assert sum(p.trial_balance().values()) == 0
