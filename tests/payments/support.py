"""Helpers of the payments tests: localstripe, Stripe's webhook signature, and the provider's side of each case.

"The provider's side" is what happens at the provider without us (an authorisation lapses, a refund fails days
later, a bank returns a payout, someone captures from the dashboard) and how the provider then tells us: the
sandbox queues an event we pull; Stripe signs a webhook. For the Stripe cases the event body is the object as
localstripe returns it, changed the way Stripe changes it, signed with Stripe's scheme and posted through the
adapter's signature check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stripe

from services.bootstrap import Platform
from services.kernel.ids import new_id
from services.kernel.settings import Settings
from services.payments.domain.model import Hold, Refund, Withdrawal
from services.payments.handlers import Payments, payments_of
from services.payments.ports import (
    CONFIRMS_AGAIN_AFTER_DECLINE,
    CONNECT_PAYOUTS,
    IDEMPOTENCY_KEYS,
    REFUSES_OVER_REFUND,
    AuthResult,
    OpenedIntent,
)

WEBHOOK_SECRET = "whsec_test_" + "s3cr3t" * 4
STRIPE_TEST_KEY = "sk_test_localstripe"
PUBLISHABLE_KEY = "pk_test_localstripe"
# What localstripe does not have (documented in docs/payments.md): the contract suite runs those paths on the
# sandbox instead, under the case id "stripe-no-connect-on-sandbox" (tests/payments/conftest.py), or leaves out
# the step (a second attempt after a declined charge).
LOCALSTRIPE_LACKS = frozenset(
    {CONNECT_PAYOUTS, IDEMPOTENCY_KEYS, REFUSES_OVER_REFUND, CONFIRMS_AGAIN_AFTER_DECLINE}
)
THREE_D_SECURE_CARD = "4000002500003155"  # Stripe's test card that asks for 3-D Secure
LOCALSTRIPE_START_TIMEOUT_S = 20.0


# --- localstripe ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalStripe:
    url: str
    process: subprocess.Popen
    log_path: Path


@contextmanager
def run_localstripe(workdir: Path) -> Iterator[LocalStripe]:
    """Start `localstripe --port <free port>` from this venv's bin; wait (bounded) until it answers."""
    exe = Path(sys.executable).parent / "localstripe"
    if not exe.exists():
        raise RuntimeError(f"localstripe is not installed next to {sys.executable} (pip install localstripe)")
    port = free_port()
    log_path = workdir / "localstripe.log"
    log = log_path.open("wb")
    # --from-scratch: never load the state another run left behind
    proc = subprocess.Popen(
        [str(exe), "--port", str(port), "--from-scratch"], stdout=log, stderr=subprocess.STDOUT, cwd=workdir
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + LOCALSTRIPE_START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"localstripe exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
                )
            try:
                req = urllib.request.Request(
                    url + "/v1/balance", headers={"Authorization": f"Bearer {STRIPE_TEST_KEY}"}
                )
                with urllib.request.urlopen(req, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"localstripe did not answer on {url} within {LOCALSTRIPE_START_TIMEOUT_S}s"
                )
            time.sleep(0.05)
        yield LocalStripe(url, proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


# --- the payer's client --------------------------------------------------------------------------------------


class StripeBuyerApp:
    """The buyer's app paying a PaymentIntent it only knows by its client secret, as Stripe.js's
    `confirmCardPayment(clientSecret, ...)` does, against localstripe.

    Stripe.js sends the publishable key, the client secret and the payment method in one call (`POST
    /v1/payment_intents/{id}/confirm`). localstripe takes the publishable key only on its 3-D Secure step
    (`/_authenticate`, where it checks the client secret) and refuses a payment method on `/confirm`, so this
    stand-in attaches the method and confirms through the SDK with a test key of its own, then finishes 3-D Secure
    with the publishable key and the client secret as localstripe's own Stripe.js does. The platform takes no part:
    it learns what the buyer did from a webhook or by reading the intent."""

    def __init__(self, api_base: str):
        self.api_base = api_base
        self.client = stripe.StripeClient("sk_test_buyer_app_stand_in", base_addresses={"api": api_base})

    @staticmethod
    def intent_of(client_secret: str) -> str:
        return client_secret.split("_secret_")[0]  # what Stripe.js reads from it too

    def card(self, number: str) -> str:
        pm = self.client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
            }
        )
        return pm.id

    def pay(self, client_secret: str, payment_method: str = "pm_card_visa", authenticate: bool = True) -> str:
        """The intent's status after the buyer paid: requires_capture (held), requires_payment_method (declined)."""
        pi = self.intent_of(client_secret)
        self.client.v1.payment_intents.update(pi, params={"payment_method": payment_method})
        try:
            status = self.client.v1.payment_intents.confirm(pi).status
        except stripe.CardError:
            return "requires_payment_method"
        if status == "requires_action":
            code, body = self.authenticate(client_secret, success=authenticate)
            assert code == 200, body
            status = body["status"]
        return status

    def authenticate(self, client_secret: str, success: bool) -> tuple[int, dict]:
        """3-D Secure, finished in the browser with the publishable key and the client secret."""
        req = urllib.request.Request(
            f"{self.api_base}/v1/payment_intents/{self.intent_of(client_secret)}/_authenticate"
            f"?success={'true' if success else 'false'}",
            data=json.dumps({"key": PUBLISHABLE_KEY, "client_secret": client_secret}).encode(),
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


# --- Stripe's webhook signature ------------------------------------------------------------------------------


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send: t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<payload>")."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def stripe_event(
    etype: str, obj: dict[str, Any], created: int | None = None, event_id: str | None = None
) -> dict:
    return {
        "id": event_id or "evt_" + new_id()[-24:],
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "type": etype,
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }


def encode(event: dict) -> bytes:
    return json.dumps(event, indent=2, sort_keys=True).encode()


# --- the provider's side of a case ---------------------------------------------------------------------------


class SandboxSide:
    def __init__(self, payments: Payments):
        self.payments = payments
        self.provider = payments.provider

    def expire_authorisation(self, hold: Hold) -> None:
        self.provider.expire_authorisation(hold.provider_ref)

    def fail_refund(self, refund: Refund) -> None:
        self.provider.fail_refund(refund.provider_ref)

    def capture_directly(self, hold: Hold, amount_fen: int) -> None:
        self.provider.capture(hold.provider_ref, amount_fen=amount_fen, idempotency_key=new_id("dash"))

    def return_transfer(self, withdrawal: Withdrawal) -> None:
        self.provider.reverse_transfer(withdrawal.provider_ref, "account_closed")

    def payer_confirms(self, opened: OpenedIntent, payment_method: str) -> str:
        """The payer pays with the client secret (the sandbox's stand-in for a client library)."""
        res: AuthResult = self.provider.confirm_with_client_secret(opened.client_secret, payment_method)
        return "requires_capture" if res.status == "authorised" else "requires_payment_method"

    def deliver(self) -> int:
        """Pull the sandbox's queued events and apply them (what `pull_provider_events` does), keeping the last."""
        n = 0
        while events := self.provider.pull_events(100):
            for ev in events:
                self.payments.apply_provider_event(ev)
                self.last = ev
            self.provider.ack_events([ev["id"] for ev in events])
            n += len(events)
        return n

    def redeliver_last(self) -> str:
        return self.payments.apply_provider_event(self.last)


class StripeSide:
    """Acts on localstripe directly (as Stripe's dashboard or its own timers would) and delivers the webhooks
    Stripe would send, signed, through the adapter's verification."""

    def __init__(self, payments: Payments, api_base: str):
        self.payments = payments
        self.client = stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": api_base})
        self.queue: list[dict] = []
        self.delivered: list[tuple[bytes, str]] = []
        self.app = StripeBuyerApp(api_base)

    def payer_confirms(self, opened: OpenedIntent, payment_method: str) -> str:
        return self.app.pay(opened.client_secret, payment_method)

    def expire_authorisation(self, hold: Hold) -> None:
        pi = self.client.v1.payment_intents.cancel(hold.provider_ref).to_dict()
        pi["cancellation_reason"] = "automatic"  # what Stripe sets when an authorisation lapses
        self.queue.append(stripe_event("payment_intent.canceled", pi))

    def fail_refund(self, refund: Refund) -> None:
        r = self.client.v1.refunds.retrieve(refund.provider_ref).to_dict()
        r.update(status="failed", failure_reason="expired_or_canceled_card")
        self.queue.append(stripe_event("charge.refund.updated", r))

    def capture_directly(self, hold: Hold, amount_fen: int) -> None:
        pi = self.client.v1.payment_intents.capture(
            hold.provider_ref, params={"amount_to_capture": amount_fen}
        )
        obj = pi.to_dict()
        obj.setdefault("amount_received", amount_fen)
        self.queue.append(stripe_event("payment_intent.succeeded", obj))

    def return_transfer(self, withdrawal: Withdrawal) -> None:
        raise AssertionError("localstripe has no transfers: payouts run on the sandbox")

    def deliver(self) -> int:
        n = 0
        while self.queue:
            payload = encode(self.queue.pop(0))
            header = sign(payload)
            self.payments.handle_webhook(payload, header)
            self.delivered.append((payload, header))
            n += 1
        return n

    def redeliver_last(self) -> str:
        payload, header = self.delivered[-1]
        return self.payments.handle_webhook(payload, header)["outcome"]


@dataclass
class Case:
    """One adapter under the contract suite."""

    name: str
    settings: Settings
    platform: Platform
    side: SandboxSide | StripeSide
    capabilities: frozenset[str]
    twins: dict[str, Case] = field(default_factory=dict)

    @property
    def payments(self) -> Payments:
        return payments_of(self.platform["payments"])

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


def payments_settings(base: Settings, adapter: str, localstripe_url: str | None = None) -> Settings:
    if adapter == "sandbox":
        return base.model_copy(update={"payments": "sandbox"})
    assert localstripe_url
    return base.model_copy(
        update={
            "payments": "stripe",
            "stripe_api_key": STRIPE_TEST_KEY,
            "stripe_api_base": localstripe_url,
            "stripe_webhook_secret": WEBHOOK_SECRET,
        }
    )


def build_case(name: str, settings: Settings) -> Case:
    platform = Platform(settings, services=["payments"]).prepare()
    payments: Payments = payments_of(platform["payments"])
    if settings.payments == "stripe":
        side: SandboxSide | StripeSide = StripeSide(payments, settings.stripe_api_base)
        caps = payments.provider.capabilities - LOCALSTRIPE_LACKS
    else:
        side = SandboxSide(payments)
        caps = payments.provider.capabilities
    return Case(name, settings, platform, side, frozenset(caps))


def new_cmd(prefix: str = "cmd") -> str:
    return new_id(prefix)
