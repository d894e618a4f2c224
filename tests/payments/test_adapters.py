"""Adapter-specific behaviour: what the sandbox mimics of Stripe's test mode, what localstripe lacks, and that
configuration alone picks the adapter."""

from __future__ import annotations

import pytest
import stripe

from services.bootstrap import Platform
from services.kernel.settings import ConfigError, Settings
from services.payments.adapters import make_provider
from services.payments.adapters.sandbox import TEST_CARD_NUMBERS, TEST_PAYMENT_METHODS, SandboxProvider
from services.payments.adapters.stripe import StripeProvider
from services.payments.domain import ledger as L
from services.payments.domain.model import HoldStatus, PayoutStatus, WithdrawalStatus
from services.payments.handlers import payments_of
from services.payments.ports import CONFIRMS_AGAIN_AFTER_DECLINE, CONNECT_PAYOUTS, InvalidRequest

from .support import (
    LOCALSTRIPE_LACKS,
    STRIPE_TEST_KEY,
    THREE_D_SECURE_CARD,
    StripeBuyerApp,
    build_case,
    new_cmd,
    payments_settings,
)

DECLINING = {pm: code for pm, code in {**TEST_PAYMENT_METHODS, **TEST_CARD_NUMBERS}.items() if code}
AUTHORISING = [pm for pm, code in {**TEST_PAYMENT_METHODS, **TEST_CARD_NUMBERS}.items() if code is None]


# --- configuration alone switches adapters --------------------------------------------------------------------


def test_configuration_alone_picks_the_adapter(sqlite_settings, localstripe, monkeypatch):
    sandbox = Platform(sqlite_settings, services=["payments"]).prepare()
    assert isinstance(payments_of(sandbox["payments"]).provider, SandboxProvider)
    sandbox.stop()

    monkeypatch.setenv("PAYMENTS", "stripe")
    monkeypatch.setenv("STRIPE_API_KEY", STRIPE_TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", localstripe.url)
    from_env = Settings(env="test", data_dir=sqlite_settings.data_dir / "env")
    assert from_env.payments == "stripe"
    stripe_platform = Platform(from_env, services=["payments"]).prepare()
    payments = payments_of(stripe_platform["payments"])
    assert isinstance(payments.provider, StripeProvider)
    hold = payments.authorise(
        command_id=new_cmd(), payer_user_id="u", amount_fen=1234, payment_method="pm_card_visa"
    )
    assert hold.provider_ref.startswith("pi_") and not hold.provider_ref.startswith("pi_sbx_")
    stripe_platform.stop()


def test_stripe_without_a_key_is_a_configuration_error(sqlite_settings):
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        make_provider(sqlite_settings.model_copy(update={"payments": "stripe", "stripe_api_key": ""}))


def test_payout_threshold_comes_from_settings(sqlite_settings, monkeypatch):
    monkeypatch.setenv("PAYMENTS_PAYOUT_THRESHOLD_FEN", "500")
    platform = Platform(sqlite_settings, services=["payments"]).prepare()
    p = payments_of(platform["payments"])
    assert p.settings.payout_threshold_fen == 500
    po = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id="r",
        amount_fen=500,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    assert po.status == PayoutStatus.PAID
    platform.stop()


# --- the sandbox behaves like Stripe's test mode ----------------------------------------------------------------


@pytest.fixture
def sandbox(sqlite_settings):
    c = build_case("sandbox", payments_settings(sqlite_settings, "sandbox"))
    yield c.payments
    c.platform.stop()


@pytest.mark.parametrize("pm", sorted(DECLINING))
def test_sandbox_declines_the_documented_test_cards(sandbox, pm):
    hold = sandbox.authorise(command_id=new_cmd(), payer_user_id="u", amount_fen=1000, payment_method=pm)
    assert hold.status == HoldStatus.DECLINED and hold.decline_code == DECLINING[pm]


@pytest.mark.parametrize("pm", AUTHORISING)
def test_sandbox_authorises_the_documented_good_cards(sandbox, pm):
    hold = sandbox.authorise(command_id=new_cmd(), payer_user_id="u", amount_fen=1000, payment_method=pm)
    assert hold.status == HoldStatus.AUTHORISED


def test_sandbox_rejects_a_bad_card_number(sandbox):
    from services.kernel.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        sandbox.authorise(
            command_id=new_cmd(), payer_user_id="u", amount_fen=1000, payment_method="4242424242424241"
        )


def test_sandbox_refunds_on_the_refund_fail_card_fail_later(sandbox):
    hold = sandbox.capture(
        command_id=new_cmd(),
        hold_id=sandbox.authorise(
            command_id=new_cmd(), payer_user_id="u", amount_fen=1000, payment_method="pm_card_refundFail"
        ).id,
    )
    refund = sandbox.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=400)
    assert refund.status == "succeeded"
    sandbox.pull_provider_events()
    assert sandbox.get_refund(refund.id).status == "failed"
    assert sandbox.account_balance(L.escrow_account(hold.id)) == 1000


def test_sandbox_honours_idempotency_keys_and_refuses_a_key_reused_with_other_parameters(sandbox):
    p: SandboxProvider = sandbox.provider
    a = p.authorise(
        amount_fen=100, currency="cny", payment_method="pm_card_visa", idempotency_key="k1", metadata={}
    )
    b = p.authorise(
        amount_fen=100, currency="cny", payment_method="pm_card_visa", idempotency_key="k1", metadata={}
    )
    assert a == b
    d1 = p.authorise(
        amount_fen=100, currency="cny", payment_method="4000000000000002", idempotency_key="k2", metadata={}
    )
    d2 = p.authorise(
        amount_fen=100, currency="cny", payment_method="4000000000000002", idempotency_key="k2", metadata={}
    )
    assert d1 == d2 and d1.status == "declined"  # a declined call replays its decline
    with pytest.raises(InvalidRequest, match="same parameters"):
        p.authorise(
            amount_fen=200, currency="cny", payment_method="pm_card_visa", idempotency_key="k1", metadata={}
        )


def test_sandbox_refuses_over_refunds_itself_too(sandbox):
    hold = sandbox.capture(
        command_id=new_cmd(),
        hold_id=sandbox.authorise(
            command_id=new_cmd(), payer_user_id="u", amount_fen=1000, payment_method="pm_card_visa"
        ).id,
    )
    with pytest.raises(InvalidRequest):
        sandbox.provider.refund(hold.provider_ref, amount_fen=1001, idempotency_key="x", metadata={})


# --- Stripe against localstripe: what it lacks, and the Stripe payout paths we can still run -------------------


@pytest.fixture
def stripe_payments(sqlite_settings, localstripe):
    c = build_case("stripe", payments_settings(sqlite_settings, "stripe", localstripe.url))
    yield c.payments
    c.platform.stop()


def test_localstripe_lacks_connect_so_the_suite_uses_the_sandbox_for_payouts(stripe_payments):
    """If this starts failing, localstripe gained Connect: drop CONNECT_PAYOUTS from LOCALSTRIPE_LACKS."""
    assert CONNECT_PAYOUTS in LOCALSTRIPE_LACKS
    with pytest.raises(InvalidRequest) as err:
        stripe_payments.provider.transfer(
            destination="acct_x", amount_fen=100, currency="cny", idempotency_key=new_cmd(), metadata={}
        )
    assert err.value.http_status == 404
    with pytest.raises(InvalidRequest):
        stripe_payments.register_payee(user_id="u", kind="resident")


def test_localstripe_ignores_idempotency_keys_and_allows_over_refunds(stripe_payments):
    """Why our command table and our ledger, not the provider, guard against double work and over-refunds."""
    p = stripe_payments
    a = p.provider.authorise(
        amount_fen=100, currency="cny", payment_method="pm_card_visa", idempotency_key="same", metadata={}
    )
    b = p.provider.authorise(
        amount_fen=100, currency="cny", payment_method="pm_card_visa", idempotency_key="same", metadata={}
    )
    assert a.provider_ref != b.provider_ref
    p.provider.capture(a.provider_ref, amount_fen=100, idempotency_key=new_cmd())
    over = p.provider.refund(a.provider_ref, amount_fen=500, idempotency_key=new_cmd(), metadata={})
    assert over.status == "succeeded"


def test_localstripe_cannot_confirm_an_intent_again_after_a_declined_charge(stripe_payments, localstripe):
    """If this starts failing, localstripe lets a declined PaymentIntent be retried: drop
    CONFIRMS_AGAIN_AFTER_DECLINE from LOCALSTRIPE_LACKS. (A failed 3-D Secure can be retried there.)"""
    assert CONFIRMS_AGAIN_AFTER_DECLINE in LOCALSTRIPE_LACKS
    p = stripe_payments
    app = StripeBuyerApp(localstripe.url)
    opened = p.provider.open_intent(amount_fen=700, currency="cny", idempotency_key=new_cmd(), metadata={})
    assert app.pay(opened.client_secret, "pm_card_chargeCustomerFail") == "requires_payment_method"
    with pytest.raises(stripe.InvalidRequestError):
        app.pay(opened.client_secret, "pm_card_visa")
    # 3-D Secure failed in the browser: the same intent takes another card
    tds = p.provider.open_intent(amount_fen=700, currency="cny", idempotency_key=new_cmd(), metadata={})
    assert app.pay(tds.client_secret, app.card(THREE_D_SECURE_CARD), authenticate=False) == (
        "requires_payment_method"
    )
    assert (
        p.provider.retrieve_intent(tds.provider_ref).decline_code == "payment_intent_authentication_failure"
    )
    assert app.pay(tds.client_secret, "pm_card_visa") == "requires_capture"
    # the browser's step checks the client secret
    other = p.provider.open_intent(amount_fen=700, currency="cny", idempotency_key=new_cmd(), metadata={})
    code, _ = app.authenticate(other.client_secret.replace("_secret_", "_secret_x"), success=True)
    assert code == 401


def test_stripe_payout_to_a_payee_without_a_connected_account_fails_and_is_reversed(stripe_payments):
    p = stripe_payments
    po = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id="r-no-acct",
        amount_fen=2000,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    assert po.status == PayoutStatus.FAILED and po.failure_reason.startswith("no_payout_account")
    assert p.balance("r-no-acct").available_fen == 0
    assert p.ledger_problems() == []


def test_stripe_transfer_refused_by_the_server_fails_the_payout_and_reverses_it(stripe_payments):
    """A real Stripe call (transfers.create with the derived idempotency key) that the server refuses."""
    p = stripe_payments
    p.register_payee(user_id="r-acct", kind="resident", provider_account_ref="acct_1TESTxyz")
    po = p.request_payout(
        payout_id=new_cmd("po"),
        payee_user_id="r-acct",
        amount_fen=2000,
        purpose="pickup",
        reference_id="pk",
        requested_by="booking",
    )
    assert po.status == PayoutStatus.FAILED
    assert p.get_withdrawal(po.withdrawal_id).status == WithdrawalStatus.FAILED
    assert p.balance("r-acct").available_fen == 0
    assert p.ledger_problems() == []


def test_the_reconciliation_cli_exits_1_on_a_difference(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from services.kernel.settings import get_settings
    from services.payments.cli import app

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ENV", "test")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["reconcile"]).exit_code == 0
        case = build_case("sandbox", payments_settings(get_settings(), "sandbox"))
        p = case.payments
        hold = p.authorise(
            command_id=new_cmd(), payer_user_id="u", amount_fen=800, payment_method="pm_card_visa"
        )
        p.provider.capture(hold.provider_ref, amount_fen=800, idempotency_key="dashboard")  # behind our back
        case.platform.stop()
        result = runner.invoke(app, ["reconcile", "--no-catch-up", "--json"])
        assert result.exit_code == 1 and "hold_status" in result.output
        assert runner.invoke(app, ["reconcile"]).exit_code == 0  # catching up applies the provider's event
        tb = runner.invoke(app, ["trial-balance"])
        assert tb.exit_code == 0 and "raw total: 0 fen" in tb.output
    finally:
        get_settings.cache_clear()
