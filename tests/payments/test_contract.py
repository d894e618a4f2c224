"""The payments port's contract, run against every adapter (`case`: sandbox, stripe via localstripe).

Each test states a behaviour the rest of the platform relies on; both adapters must show it through the same
port. Payout tests take `payouts_case` (see conftest: localstripe has no Connect, so the Stripe case's payouts
run on the sandbox, by capability flag).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from services.kernel.db import UnitOfWork
from services.kernel.errors import Conflict, RuleViolated, ValidationFailed
from services.kernel.outbox import outbox_t
from services.payments.domain import ledger as L
from services.payments.domain.model import HoldStatus, PayoutStatus, RefundStatus, WithdrawalStatus
from services.payments.handlers import Payments
from services.payments.ports import (
    CONFIRMS_AGAIN_AFTER_DECLINE,
    CONNECT_PAYOUTS,
    IDEMPOTENCY_KEYS,
    InvalidRequest,
    OpenedIntent,
)
from services.payments.reconcile import reconcile
from services.payments.store import ledger_entries

from .support import Case, new_cmd


def authorise(p: Payments, amount: int = 5000, pm: str = "pm_card_visa", cmd: str | None = None):
    return p.authorise(
        command_id=cmd or new_cmd(),
        payer_user_id="buyer-1",
        amount_fen=amount,
        payment_method=pm,
        reference_id=new_cmd("order"),
    )


def entries(p: Payments, ref: str) -> list[str]:
    with p.db.session(readonly=True) as s:
        return [
            r.kind
            for r in s.execute(
                select(ledger_entries.c.kind)
                .where(ledger_entries.c.ref == ref)
                .order_by(ledger_entries.c.created_at)
            ).all()
        ]


def events(p: Payments, etype_suffix: str = "") -> list[dict]:
    with p.db.session(readonly=True) as s:
        rows = s.execute(select(outbox_t.c.type, outbox_t.c.payload).order_by(outbox_t.c.seq)).all()
    return [json.loads(r.payload)["data"] | {"_type": r.type} for r in rows if r.type.endswith(etype_suffix)]


def assert_ledger_sound(p: Payments) -> None:
    assert p.ledger_problems() == []
    assert sum(p.trial_balance().values()) == 0


# --- authorise ------------------------------------------------------------------------------------------------


def test_authorise_puts_the_amount_on_hold(case: Case):
    p = case.payments
    hold = authorise(p, 5000)
    assert hold.status == HoldStatus.AUTHORISED and hold.amount_fen == 5000 and hold.provider_ref
    assert p.account_balance(L.hold_account(hold.id)) == 5000
    assert case.payments.provider.retrieve_intent(hold.provider_ref).status == "authorised"
    assert_ledger_sound(p)


@pytest.mark.parametrize("pm", ["pm_card_chargeCustomerFail"])
def test_a_declined_card_is_a_declined_hold_with_no_money_on_the_ledger(case: Case, pm: str):
    hold = authorise(case.payments, 5000, pm)
    assert hold.status == HoldStatus.DECLINED and hold.decline_code
    assert entries(case.payments, hold.id) == []
    with pytest.raises(Conflict):
        case.payments.capture(command_id=new_cmd(), hold_id=hold.id)


def test_an_unknown_payment_method_is_a_bad_request_naming_the_field(case: Case):
    with pytest.raises(ValidationFailed) as err:
        authorise(case.payments, 5000, "pm_does_not_exist")
    assert err.value.errors[0]["field"] == "payment_method"


def test_the_same_authorise_command_makes_one_hold(case: Case):
    cmd = new_cmd()
    a = authorise(case.payments, 700, cmd=cmd)
    b = authorise(case.payments, 700, cmd=cmd)
    assert a.id == b.id and a.provider_ref == b.provider_ref
    assert entries(case.payments, a.id) == ["authorise"]
    with pytest.raises(RuleViolated):  # the same command id for another amount
        authorise(case.payments, 800, cmd=cmd)


def test_amounts_are_positive_whole_fen(case: Case):
    for bad in (0, -1, 10**9):
        with pytest.raises(ValidationFailed):
            authorise(case.payments, bad)


# --- intents opened for their payer to confirm (hold requests: escrow of orders, deposits) --------------------


def open_intent(p: Payments, amount: int = 5000) -> OpenedIntent:
    return p.provider.open_intent(
        amount_fen=amount, currency=p.currency, idempotency_key=new_cmd("open"), metadata={"ref": "order-1"}
    )


def test_an_opened_intent_waits_for_its_payer_whose_client_confirms_it_with_the_client_secret(case: Case):
    p = case.payments
    opened = open_intent(p, 5000)
    assert opened.client_secret.startswith(opened.provider_ref + "_secret_")
    waiting = p.provider.retrieve_intent(opened.provider_ref)
    assert (waiting.status, waiting.authorised_fen, waiting.captured_fen) == ("open", 5000, 0)
    assert waiting.decline_code is None

    assert case.side.payer_confirms(opened, "pm_card_visa") == "requires_capture"
    held = p.provider.retrieve_intent(opened.provider_ref)
    assert held.status == "authorised" and held.authorised_fen == 5000 and held.payment_method
    # the platform records what it read, once; then the hold is like any other
    with UnitOfWork(p.db) as uow:
        hold = p.record_authorised_in(
            uow,
            command_id="hr:req-1:intent",
            payer_user_id="buyer-1",
            amount_fen=5000,
            provider_ref=held.provider_ref,
            payment_method=held.payment_method,
        )
    with UnitOfWork(p.db) as uow:
        again = p.record_authorised_in(
            uow,
            command_id="hr:req-1:intent",
            payer_user_id="buyer-1",
            amount_fen=5000,
            provider_ref=held.provider_ref,
            payment_method=held.payment_method,
        )
    assert again.id == hold.id and entries(p, hold.id) == ["authorise"]
    captured = p.capture(command_id=new_cmd(), hold_id=hold.id, amount_fen=4000)
    assert captured.captured_fen == 4000
    assert p.provider.retrieve_intent(opened.provider_ref).status == "captured"
    assert_ledger_sound(p)
    assert reconcile(p).ok


def test_a_declined_attempt_is_told_once_and_leaves_the_intent_open_for_another_method(case: Case):
    p = case.payments
    opened = open_intent(p, 3000)
    assert case.side.payer_confirms(opened, "pm_card_chargeCustomerFail") == "requires_payment_method"
    declined = p.provider.retrieve_intent(opened.provider_ref)
    assert declined.status == "declined" and declined.decline_code and declined.attempt_ref
    assert p.provider.retrieve_intent(opened.provider_ref).attempt_ref == declined.attempt_ref  # one attempt
    if not case.has(CONFIRMS_AGAIN_AFTER_DECLINE):
        return  # localstripe: a PaymentIntent whose charge was declined cannot be confirmed again
    assert case.side.payer_confirms(opened, "pm_card_visa") == "requires_capture"
    held = p.provider.retrieve_intent(opened.provider_ref)
    assert (
        held.status == "authorised" and held.decline_code is None and held.attempt_ref != declined.attempt_ref
    )


def test_confirm_intent_pays_on_the_payers_behalf_once(case: Case):
    p = case.payments
    opened = open_intent(p, 2500)
    res = p.provider.confirm_intent(
        opened.provider_ref, payment_method="pm_card_visa", idempotency_key=new_cmd("confirm")
    )
    assert res.status == "authorised" and res.provider_ref == opened.provider_ref
    assert p.provider.retrieve_intent(opened.provider_ref).status == "authorised"
    with pytest.raises(InvalidRequest):  # no longer waiting for a payment method
        p.provider.confirm_intent(
            opened.provider_ref, payment_method="pm_card_visa", idempotency_key=new_cmd("confirm")
        )


def test_confirm_intent_declines_and_an_unknown_method_names_the_field(case: Case):
    p = case.payments
    opened = open_intent(p, 2500)
    with pytest.raises(InvalidRequest) as err:
        p.provider.confirm_intent(
            opened.provider_ref, payment_method="pm_no_such_method", idempotency_key=new_cmd("confirm")
        )
    assert err.value.param == "payment_method"
    res = p.provider.confirm_intent(
        opened.provider_ref, payment_method="pm_card_chargeCustomerFail", idempotency_key=new_cmd("confirm")
    )
    assert res.status == "declined" and res.decline_code
    assert p.provider.retrieve_intent(opened.provider_ref).status == "declined"


def test_a_waiting_intent_is_closed_and_can_no_longer_be_paid(case: Case):
    p = case.payments
    opened = open_intent(p, 1800)
    assert p.provider.cancel(opened.provider_ref, idempotency_key=new_cmd("close")).status == "cancelled"
    with pytest.raises(InvalidRequest):
        p.provider.confirm_intent(
            opened.provider_ref, payment_method="pm_card_visa", idempotency_key=new_cmd("confirm")
        )
    assert p.provider.retrieve_intent(opened.provider_ref).status == "cancelled"


# --- capture ---------------------------------------------------------------------------------------------------


def test_capture_moves_the_hold_into_escrow_once(case: Case):
    p = case.payments
    hold = authorise(p, 5000)
    cmd = new_cmd()
    captured = p.capture(command_id=cmd, hold_id=hold.id)
    assert captured.status == HoldStatus.CAPTURED and captured.captured_fen == 5000
    assert p.capture(command_id=cmd, hold_id=hold.id) == captured  # the same command again: same answer
    with pytest.raises(Conflict) as err:  # another capture of the same hold
        p.capture(command_id=new_cmd(), hold_id=hold.id)
    assert err.value.extra["current_state"] == "captured"
    assert entries(p, hold.id) == ["authorise", "capture"]
    assert p.account_balance(L.escrow_account(hold.id)) == 5000
    assert p.account_balance(L.hold_account(hold.id)) == 0
    assert p.provider.retrieve_intent(hold.provider_ref).captured_fen == 5000
    assert_ledger_sound(p)


def test_partial_capture_releases_the_rest_and_reconciles(case: Case):
    p = case.payments
    hold = authorise(p, 5000)
    h = p.capture(command_id=new_cmd(), hold_id=hold.id, amount_fen=3000)
    assert (h.captured_fen, h.refundable_fen) == (3000, 3000)
    assert p.account_balance(L.hold_account(hold.id)) == 0  # the 2000 not captured went back to the card
    assert p.provider.retrieve_intent(hold.provider_ref).captured_fen == 3000
    assert reconcile(p).ok


def test_never_capture_more_than_authorised(case: Case):
    p = case.payments
    hold = authorise(p, 5000)
    with pytest.raises(RuleViolated) as err:
        p.capture(command_id=new_cmd(), hold_id=hold.id, amount_fen=5001)
    assert err.value.extra["reason"] == "over_capture"
    assert p.get_hold(hold.id).status == HoldStatus.AUTHORISED
    assert p.provider.retrieve_intent(hold.provider_ref).status == "authorised"


# --- cancel ----------------------------------------------------------------------------------------------------


def test_cancel_releases_the_hold(case: Case):
    p = case.payments
    hold = authorise(p, 5000)
    h = p.cancel(command_id=new_cmd(), hold_id=hold.id)
    assert h.status == HoldStatus.CANCELLED
    assert p.account_balance(L.hold_account(hold.id)) == 0
    assert p.provider.retrieve_intent(hold.provider_ref).status == "cancelled"
    with pytest.raises(Conflict):
        p.capture(command_id=new_cmd(), hold_id=hold.id)
    with pytest.raises(Conflict):
        p.refund(command_id=new_cmd(), hold_id=hold.id)
    captured = p.capture(command_id=new_cmd(), hold_id=authorise(p, 100).id)
    with pytest.raises(Conflict) as err:
        p.cancel(command_id=new_cmd(), hold_id=captured.id)
    assert "refund" in err.value.detail
    assert_ledger_sound(p)


# --- refunds ---------------------------------------------------------------------------------------------------


def test_partial_then_full_refund_and_never_more_than_captured(case: Case):
    p = case.payments
    hold = p.capture(command_id=new_cmd(), hold_id=authorise(p, 5000).id, amount_fen=4000)
    cmd = new_cmd()
    r1 = p.refund(command_id=cmd, hold_id=hold.id, amount_fen=1500, reason="one item missing")
    assert r1.status == RefundStatus.SUCCEEDED and r1.amount_fen == 1500
    assert p.refund(command_id=cmd, hold_id=hold.id, amount_fen=1500) == r1  # idempotent per command
    with pytest.raises(RuleViolated) as err:  # our ledger refuses it, whatever the provider would say
        p.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=2501)
    assert err.value.extra["reason"] == "over_refund"
    r2 = p.refund(command_id=new_cmd(), hold_id=hold.id)  # the rest
    assert r2.amount_fen == 2500
    h = p.get_hold(hold.id)
    assert (h.captured_fen, h.refunded_fen, h.refundable_fen) == (4000, 4000, 0)
    with pytest.raises(RuleViolated):
        p.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=1)
    assert p.account_balance(L.escrow_account(hold.id)) == 0
    assert p.provider.retrieve_intent(hold.provider_ref).refunded_fen == 4000
    report = reconcile(p)
    assert report.ok, report.to_dict()


def test_a_refund_that_fails_after_it_succeeded_is_reversed(case: Case):
    p = case.payments
    hold = p.capture(command_id=new_cmd(), hold_id=authorise(p, 3000).id)
    refund = p.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=1000)
    assert p.account_balance(L.escrow_account(hold.id)) == 2000
    case.side.fail_refund(refund)
    case.side.deliver()
    assert p.get_refund(refund.id).status == RefundStatus.FAILED
    assert p.account_balance(L.escrow_account(hold.id)) == 3000  # the money is back in escrow
    assert p.get_hold(hold.id).refundable_fen == 3000
    assert entries(p, refund.id) == ["refund", "refund_reversal"]
    assert_ledger_sound(p)


# --- what the provider does on its own ---------------------------------------------------------------------------


def test_a_lapsed_authorisation_cancels_the_hold_once(case: Case):
    p = case.payments
    hold = authorise(p, 2500)
    case.side.expire_authorisation(hold)
    assert case.side.deliver() >= 1
    h = p.get_hold(hold.id)
    assert h.status == HoldStatus.CANCELLED and "automatic" in (h.status_reason or "")
    assert p.account_balance(L.hold_account(hold.id)) == 0
    assert case.side.redeliver_last() == "duplicate"  # delivered twice: applied once
    assert entries(p, hold.id) == ["authorise", "hold_release"]
    assert_ledger_sound(p)


def test_reconciliation_finds_a_capture_made_at_the_provider_and_the_event_books_it(case: Case):
    p = case.payments
    hold = authorise(p, 4000)
    case.side.capture_directly(hold, 4000)
    report = reconcile(p, catch_up=False)
    assert [(d.kind, d.object_id, d.ours, d.provider) for d in report.discrepancies] == [
        ("hold_status", hold.id, "authorised", "captured")
    ]
    case.side.deliver()
    assert p.get_hold(hold.id).status == HoldStatus.CAPTURED
    assert p.get_hold(hold.id).captured_fen == 4000
    assert reconcile(p).ok


# --- payouts (Connect on Stripe; the sandbox where the provider lacks it) ------------------------------------------


def test_payouts_run_on_an_adapter_with_connect_payouts(payouts_case: Case):
    assert payouts_case.has(CONNECT_PAYOUTS)
    assert payouts_case.payments.provider.name in ("sandbox", "stripe")


def test_resident_payouts_below_the_threshold_accumulate_then_pay_out(payouts_case: Case):
    p = payouts_case.payments
    assert p.settings.payout_threshold_fen == 1000
    user = new_cmd("resident")
    small = [
        p.request_payout(
            payout_id=new_cmd("po"),
            payee_user_id=user,
            amount_fen=300,
            purpose="pickup",
            reference_id=new_cmd("pk"),
            requested_by="booking",
        )
        for _ in range(3)
    ]
    assert [x.status for x in small] == [PayoutStatus.CREDITED] * 3
    assert all(x.provider_ref == f"balance:{x.payout_id}" for x in small)
    assert p.balance(user).wallets["resident"] == 900
    paid = events(p, "payout.paid.v1")
    assert {e["payout_id"]: e["destination"] for e in paid} == {x.payout_id: "balance" for x in small}

    big = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=user,
        amount_fen=300,
        purpose="pickup",
        reference_id="pk-4",
        requested_by="booking",
    )
    assert big.status == PayoutStatus.PAID and big.provider_ref.startswith("tr_")
    wd = p.get_withdrawal(big.withdrawal_id)
    assert wd.amount_fen == 1200 and wd.status == WithdrawalStatus.PAID  # the whole wallet went out
    assert p.balance(user).available_fen == 0
    assert p.provider.retrieve_transfer(wd.provider_ref).amount_fen == 1200
    last = events(p, "payout.paid.v1")[-1]
    assert (last["payout_id"], last["destination"], last["provider_ref"]) == (
        big.payout_id,
        "provider",
        wd.provider_ref,
    )
    assert_ledger_sound(p)
    assert reconcile(p).ok


def test_one_payout_per_payout_id_ever(payouts_case: Case):
    p = payouts_case.payments
    user, pid = new_cmd("resident"), new_cmd("po")
    a = p.request_payout(
        payout_id=pid,
        payee_user_id=user,
        amount_fen=200,
        purpose="pickup",
        reference_id="x",
        requested_by="booking",
    )
    b = p.request_payout(
        payout_id=pid,
        payee_user_id=user,
        amount_fen=900,
        purpose="pickup",
        reference_id="x",
        requested_by="booking",
    )
    assert a == b and p.balance(user).wallets["resident"] == 200
    assert entries(p, pid) == ["payout_credit"]


def test_firms_and_sellers_are_paid_at_once(payouts_case: Case):
    p = payouts_case.payments
    firm = new_cmd("firm")
    po = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=firm,
        payee_kind="firm",
        amount_fen=100,
        purpose="trade",
        reference_id="t-1",
        requested_by="trading",
    )
    assert po.status == PayoutStatus.PAID
    assert p.balance(firm).available_fen == 0


def test_withdrawal_below_the_threshold(payouts_case: Case):
    p = payouts_case.payments
    user = new_cmd("resident")
    with pytest.raises(RuleViolated) as err:
        p.withdraw(command_id=new_cmd(), user_id=user)
    assert err.value.extra["reason"] == "nothing_to_withdraw"
    p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=user,
        amount_fen=450,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    with pytest.raises(RuleViolated) as err:
        p.withdraw(command_id=new_cmd(), user_id=user, amount_fen=451)
    assert err.value.extra["reason"] == "insufficient_balance"
    cmd = new_cmd()
    wd = p.withdraw(command_id=cmd, user_id=user, amount_fen=200)
    assert wd.status == WithdrawalStatus.PAID and wd.amount_fen == 200
    assert p.withdraw(command_id=cmd, user_id=user, amount_fen=200) == wd  # the same command: one withdrawal
    rest = p.withdraw(command_id=new_cmd(), user_id=user)
    assert rest.amount_fen == 250
    assert p.balance(user).available_fen == 0
    assert_ledger_sound(p)


def test_a_failed_payout_is_reversed_and_reported(payouts_case: Case):
    p = payouts_case.payments
    user = new_cmd("resident")
    p.register_payee(
        user_id=user, kind="resident", bank_account="000111111116"
    )  # test account: no such account
    early = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=user,
        amount_fen=300,
        purpose="pickup",
        reference_id="pk-1",
        requested_by="booking",
    )
    failing = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=user,
        amount_fen=900,
        purpose="pickup",
        reference_id="pk-2",
        requested_by="booking",
    )
    assert early.status == PayoutStatus.CREDITED
    assert failing.status == PayoutStatus.FAILED and "no_account" in failing.failure_reason
    assert p.get_withdrawal(failing.withdrawal_id).status == WithdrawalStatus.FAILED
    # the failed payout's credit is reversed; the one credited before stays in the wallet
    assert p.balance(user).wallets["resident"] == 300
    assert p.account_balance(L.funding_account("booking")) >= 300
    assert entries(p, failing.payout_id) == ["payout_credit", "payout_reversal"]
    failed = [e for e in events(p, "payout.failed.v1") if e["payout_id"] == failing.payout_id]
    assert len(failed) == 1 and failed[0]["returned"] is False
    assert_ledger_sound(p)


def test_a_returned_payout_is_reversed_and_reported(payouts_case: Case):
    p = payouts_case.payments
    user = new_cmd("resident")
    po = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id=user,
        amount_fen=1500,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    assert po.status == PayoutStatus.PAID
    payouts_case.side.return_transfer(p.get_withdrawal(po.withdrawal_id))
    payouts_case.side.deliver()
    payouts_case.side.deliver()  # delivered again: nothing more happens
    assert p.get_payout(po.payout_id).status == PayoutStatus.RETURNED
    assert p.get_withdrawal(po.withdrawal_id).status == WithdrawalStatus.RETURNED
    assert p.balance(user).available_fen == 0
    failed = [e for e in events(p, "payout.failed.v1") if e["payout_id"] == po.payout_id]
    assert len(failed) == 1 and failed[0]["returned"] is True
    assert_ledger_sound(p)
    assert reconcile(p).ok


def test_release_pays_the_seller_from_escrow_less_the_fee(payouts_case: Case):
    p = payouts_case.payments  # escrow and Connect payouts in one adapter
    hold = p.capture(command_id=new_cmd(), hold_id=authorise(p, 10000).id)
    p.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=2000)
    seller = new_cmd("seller")
    po = p.release(command_id=new_cmd(), hold_id=hold.id, payee_user_id=seller, fee_fen=400)
    assert po.status == PayoutStatus.PAID and po.amount_fen == 7600
    assert p.account_balance(L.PLATFORM_FEES) >= 400
    assert p.account_balance(L.escrow_account(hold.id)) == 0
    h = p.get_hold(hold.id)
    assert (h.captured_fen, h.refunded_fen, h.released_fen) == (10000, 2000, 8000)
    with pytest.raises(RuleViolated):  # nothing left to refund once released
        p.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=1)
    assert_ledger_sound(p)


def test_idempotency_keys_are_derived_from_command_ids(case: Case):
    """The same command sent twice to the provider gets the first answer (where the provider honours keys; our
    own command table makes it hold everywhere)."""
    p = case.payments
    hold = authorise(p, 900)
    if case.has(IDEMPOTENCY_KEYS):
        from services.payments.domain.rules import provider_idempotency_key

        key = provider_idempotency_key("capture", "replayed-cmd")
        first = p.provider.capture(hold.provider_ref, amount_fen=900, idempotency_key=key)
        again = p.provider.capture(hold.provider_ref, amount_fen=900, idempotency_key=key)
        assert first == again
    cmd = new_cmd()
    p2 = authorise(p, 900)
    p.capture(command_id=cmd, hold_id=p2.id)
    p.capture(command_id=cmd, hold_id=p2.id)
    assert entries(p, p2.id) == ["authorise", "capture"]
