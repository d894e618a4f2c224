"""Orders with escrow on the Stripe adapter, end to end through the public API against localstripe: the order's
payment carries the PaymentIntent's client secret, the buyer's app pays with it (as Stripe.js would), payments
learns what the buyer did from Stripe's signed webhooks (verified, each event id once) or from its timer that
reads the waiting intents, and listings marks the order paid; capture on receipt and cancel act on the same
intent at the provider."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import stripe
from sqlalchemy import select

from services.kernel.outbox import outbox_t
from services.payments.adapters.stripe import StripeProvider
from services.payments.handlers import payments_of
from services.payments.hold_requests import hold_requests_of
from services.payments.settings import configure
from services.payments.tasks import sync_open_payments
from tests.payments.support import (
    STRIPE_TEST_KEY,
    THREE_D_SECURE_CARD,
    WEBHOOK_SECRET,
    StripeBuyerApp,
    encode,
    free_port,
    payments_settings,
    sign,
    stripe_event,
)

from .support import app_client, auth, uid
from .test_orders import _get, _published

WEBHOOK = "/v1/payments/webhooks/stripe"


async def _stripe_app(aiohttp_client, sqlite_settings, localstripe):  # noqa: ANN001, ANN202
    settings = payments_settings(sqlite_settings, "stripe", localstripe.url)
    platform, client = await app_client(aiohttp_client, settings, platform_fee_bps=100)
    stripe_api = stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": localstripe.url})
    return settings, platform, client, StripeBuyerApp(localstripe.url), stripe_api


async def _ordered(platform, client, s, seller, buyer, **listing) -> dict:  # noqa: ANN001
    lid = await _published(client, s, seller, **listing)
    r = await client.post("/v1/orders", json={"listing_id": lid}, headers=auth(s, buyer))
    assert r.status == 201, await r.text()
    oid = (await r.json())["id"]
    platform.drain()  # payments opens the PaymentIntent
    order = await _get(client, s, buyer, oid)
    secret = order["payment"]["client_secret"]
    assert secret and secret.startswith("pi_") and "_secret_" in secret
    assert order["payment"]["status"] == "requires_payment_method"
    return order


async def _signed(client, etype: str, obj: dict, event_id: str | None = None) -> dict:  # noqa: ANN001
    """Post the webhook Stripe would send for `obj`, signed with the endpoint's secret."""
    payload = encode(stripe_event(etype, obj, event_id=event_id))
    r = await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload)})
    assert r.status == 200, await r.text()
    return await r.json()


def _authorised_events(platform, hold_request_id: str) -> int:  # noqa: ANN001
    with platform["payments"].db.session(readonly=True) as s:
        rows = s.execute(select(outbox_t.c.type, outbox_t.c.payload)).all()
    return sum(
        1
        for r in rows
        if r.type.endswith("hold.authorised.v1")
        and json.loads(r.payload)["data"]["hold_request_id"] == hold_request_id
    )


async def test_the_buyer_pays_with_the_client_secret_and_webhooks_tell_payments(
    aiohttp_client, sqlite_settings, localstripe
):
    s, platform, client, app, api = await _stripe_app(aiohttp_client, sqlite_settings, localstripe)
    seller, buyer = uid("sel"), uid("buy")
    order = await _ordered(platform, client, s, seller, buyer)
    pay, secret = order["payment"], order["payment"]["client_secret"]
    pi = StripeBuyerApp.intent_of(secret)
    intent = api.v1.payment_intents.retrieve(pi)
    assert (intent.status, intent.capture_method, intent.amount) == (
        "requires_payment_method",
        "manual",
        4500,
    )
    # only the buyer sees the secret
    r = await client.get(f"/v1/orders/{order['id']}", headers=auth(s, uid("stranger")))
    assert r.status == 404

    # 3-D Secure fails in the buyer's browser (publishable key + client secret); Stripe tells us by webhook
    assert app.pay(secret, app.card(THREE_D_SECURE_CARD), authenticate=False) == "requires_payment_method"
    failed = api.v1.payment_intents.retrieve(pi).to_dict()
    out = await _signed(client, "payment_intent.payment_failed", failed)
    assert out["outcome"] == "applied"
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "pending_payment" and got["payment"]["status"] == "declined"
    assert "payment_intent_authentication_failure" in got["payment"]["decline_reason"]

    # another card on the same intent: held; the webhook makes the order paid
    assert app.pay(secret) == "requires_capture"
    held = api.v1.payment_intents.retrieve(pi).to_dict()
    event_id = "evt_" + uid()[-20:]
    assert (await _signed(client, "payment_intent.amount_capturable_updated", held, event_id))["outcome"] == (
        "applied"
    )
    # the same event again (Stripe retries deliveries) and another event about the same intent change nothing
    assert (await _signed(client, "payment_intent.amount_capturable_updated", held, event_id))["outcome"] == (
        "duplicate"
    )
    assert (await _signed(client, "payment_intent.amount_capturable_updated", held))["outcome"] == "applied"
    platform.drain()
    got = await _get(client, s, seller, order["id"])
    assert got["status"] == "paid" and got["payment"]["status"] == "held"
    assert _authorised_events(platform, pay["id"]) == 1
    r = await client.get(f"/v1/payments/intents/{pay['id']}", headers=auth(s, buyer))
    assert (await r.json())["status"] == "requires_capture"
    # a webhook whose signature does not check out is refused and changes nothing
    payload = encode(stripe_event("payment_intent.amount_capturable_updated", held))
    r = await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload, "whsec_wrong")})
    assert r.status == 400

    # ship (payments captures the same intent at the provider, into escrow), confirm receipt (released)
    assert (
        await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
    ).status == 200
    platform.drain()
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 200 and (await r.json())["status"] == "completed"
    platform.drain()
    done = await _get(client, s, buyer, order["id"])
    assert done["payment"]["status"] == "captured" and done["fee_fen"] == 45
    assert api.v1.payment_intents.retrieve(pi).status == "succeeded"


async def test_without_a_webhook_the_timer_reads_the_intent_and_cancel_closes_it(
    aiohttp_client, sqlite_settings, localstripe
):
    s, platform, client, app, api = await _stripe_app(aiohttp_client, sqlite_settings, localstripe)
    seller, buyer = uid("sel"), uid("buy")
    rt = platform["payments"]

    # localstripe sends no webhook when a manual-capture intent is authorised: the timer finds it
    order = await _ordered(platform, client, s, seller, buyer)
    assert app.pay(order["payment"]["client_secret"]) == "requires_capture"
    platform.drain()
    assert (await _get(client, s, buyer, order["id"]))["status"] == "pending_payment"
    assert sync_open_payments(rt) == 1
    assert sync_open_payments(rt) == 0  # nothing left to learn
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "paid" and got["payment"]["status"] == "held"
    assert _authorised_events(platform, order["payment"]["id"]) == 1
    # the buyer cancels before shipping: the hold is released at the provider
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth(s, buyer))
    assert r.status == 200
    platform.drain()
    assert (await _get(client, s, buyer, order["id"]))["payment"]["status"] == "cancelled"
    pi = StripeBuyerApp.intent_of(order["payment"]["client_secret"])
    assert api.v1.payment_intents.retrieve(pi).status == "canceled"

    # cancelled before paying: the intent is closed, so the buyer's app can no longer pay it
    order = await _ordered(platform, client, s, seller, buyer, title="二手自行车 捷安特")
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth(s, buyer))
    assert r.status == 200
    platform.drain()
    pi = StripeBuyerApp.intent_of(order["payment"]["client_secret"])
    assert api.v1.payment_intents.retrieve(pi).status == "canceled"
    try:
        app.pay(order["payment"]["client_secret"])
        raise AssertionError("a closed intent was paid")
    except stripe.InvalidRequestError:
        pass
    assert hold_requests_of(rt).sync_waiting() == 0
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "cancelled" and got["payment"]["status"] == "cancelled"


async def test_localstripes_own_signed_webhook_reports_a_declined_card(
    aiohttp_client, sqlite_settings, localstripe
):
    s, platform, client, app, _ = await _stripe_app(aiohttp_client, sqlite_settings, localstripe)
    hook_id = uid("hook")

    def configure(events: list[str]) -> None:
        req = urllib.request.Request(
            f"{localstripe.url}/_config/webhooks/{hook_id}",
            method="POST",
            data=json.dumps(
                {"url": str(client.make_url(WEBHOOK)), "secret": WEBHOOK_SECRET, "events": events}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5).close()

    buyer = uid("buy")
    order = await _ordered(platform, client, s, uid("sel"), buyer)
    configure(["payment_intent.payment_failed"])
    try:
        assert (
            app.pay(order["payment"]["client_secret"], "pm_card_chargeCustomerFail")
            == "requires_payment_method"
        )
        deadline = time.monotonic() + 15  # localstripe posts it about a second later
        got = await _get(client, s, buyer, order["id"])
        while got["payment"]["status"] != "declined" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            platform.drain()
            got = await _get(client, s, buyer, order["id"])
    finally:
        configure([])  # stop sending to this test's server
    assert got["payment"]["status"] == "declined" and got["status"] == "pending_payment"
    assert got["payment"]["decline_reason"]


async def test_polling_the_payment_reads_the_intent_from_stripe_at_most_once_per_interval(
    aiohttp_client, sqlite_settings, localstripe, monkeypatch
):
    """The buyer's app pays with the client secret and polls `GET /v1/payments/intents/{id}`: no webhook has come
    (localstripe sends none for an authorisation) and the timer has not run, yet the poll sees the hold. However
    many clients poll, Stripe is read at most once per `intent_refresh_s` per payment."""
    s, platform, client, app, _ = await _stripe_app(aiohttp_client, sqlite_settings, localstripe)
    rt = platform["payments"]
    configure(rt, intent_refresh_s=5)
    requests = hold_requests_of(rt)
    clock = [1000.0]
    requests.clock = lambda: clock[0]
    provider = payments_of(rt).provider
    reads: list[str] = []

    def counted(ref: str):  # noqa: ANN202 - the real read, counted
        reads.append(ref)
        return StripeProvider.retrieve_intent(provider, ref)

    monkeypatch.setattr(provider, "retrieve_intent", counted)
    seller, buyer = uid("sel"), uid("buy")
    order = await _ordered(platform, client, s, seller, buyer)
    url = f"/v1/payments/intents/{order['payment']['id']}"

    async def poll(user: str = buyer) -> str:
        r = await client.get(url, headers=auth(s, user))
        assert r.status == 200, await r.text()
        return (await r.json())["status"]

    assert await poll() == "requires_payment_method"
    assert len(reads) == 1
    assert app.pay(order["payment"]["client_secret"]) == "requires_capture"
    # within the interval: answered from our table, Stripe is not asked again
    clock[0] += 4.9
    assert [await poll() for _ in range(3)] == ["requires_payment_method"] * 3
    assert len(reads) == 1
    # a stranger's poll reads nothing (404 before any provider call)
    assert (await client.get(url, headers=auth(s, uid("stranger")))).status == 404
    clock[0] += 0.2
    assert await poll() == "requires_capture"
    assert len(reads) == 2
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "paid" and got["payment"]["status"] == "held"
    assert _authorised_events(platform, order["payment"]["id"]) == 1
    # held: nothing left to learn from polling, Stripe is not asked again, and the timer finds nothing either
    clock[0] += 60
    assert await poll() == "requires_capture" and len(reads) == 2
    assert sync_open_payments(rt) == 0


async def test_a_poll_while_stripe_is_unreachable_answers_what_we_know(
    aiohttp_client, sqlite_settings, localstripe
):
    s, platform, client, app, _ = await _stripe_app(aiohttp_client, sqlite_settings, localstripe)
    rt = platform["payments"]
    configure(rt, intent_refresh_s=0)
    buyer = uid("buy")
    order = await _ordered(platform, client, s, uid("sel"), buyer)
    url = f"/v1/payments/intents/{order['payment']['id']}"
    payments = payments_of(rt)
    reachable = payments.provider
    payments.provider = StripeProvider(
        STRIPE_TEST_KEY, api_base=f"http://127.0.0.1:{free_port()}", max_network_retries=0, timeout_s=2
    )
    try:
        r = await client.get(url, headers=auth(s, buyer))
        assert r.status == 200 and (await r.json())["status"] == "requires_payment_method"
    finally:
        payments.provider = reachable
    assert app.pay(order["payment"]["client_secret"]) == "requires_capture"
    r = await client.get(url, headers=auth(s, buyer))
    assert (await r.json())["status"] == "requires_capture"


async def test_shipping_captures_the_intent_at_stripe_so_its_window_no_longer_matters(
    aiohttp_client, sqlite_settings, localstripe
):
    """Shipping captures the PaymentIntent at once (before the buyer confirms): after that Stripe cannot let the
    authorisation lapse, and the confirmation releases the escrow to the seller. An order still unshipped when
    Stripe cancels its authorisation (the webhook of a lapse) is cancelled before the seller ships. A refund after
    shipping is a refund of the captured intent at Stripe."""
    s, platform, client, app, api = await _stripe_app(aiohttp_client, sqlite_settings, localstripe)
    rt = platform["payments"]
    seller, buyer = uid("sel"), uid("buy")
    orders = [
        await _ordered(platform, client, s, seller, buyer, title=title)
        for title in ("《三体》全集 刘慈欣", "二手自行车 捷安特", "九成新 台灯")
    ]
    for order in orders:
        assert app.pay(order["payment"]["client_secret"]) == "requires_capture"
    assert sync_open_payments(rt) == 3
    platform.drain()
    shipped, lapses, refunded = orders
    pis = {o["id"]: StripeBuyerApp.intent_of(o["payment"]["client_secret"]) for o in orders}

    for order in (shipped, refunded):
        assert (
            await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
        ).status == 200
    platform.drain()
    for order in (shipped, refunded):
        assert (await _get(client, s, buyer, order["id"]))["payment"]["status"] == "escrowed"
        assert api.v1.payment_intents.retrieve(pis[order["id"]]).status == "succeeded"
    try:  # a captured intent can no longer be cancelled at Stripe, whatever its clock says
        api.v1.payment_intents.cancel(pis[shipped["id"]])
        raise AssertionError("a captured intent was cancelled")
    except stripe.InvalidRequestError:
        pass

    # the unshipped order's authorisation lapses: Stripe cancels it and says so by webhook
    lapsed = api.v1.payment_intents.cancel(pis[lapses["id"]]).to_dict()
    lapsed["cancellation_reason"] = "automatic"
    assert (await _signed(client, "payment_intent.canceled", lapsed))["outcome"] == "applied"
    platform.drain()
    got = await _get(client, s, buyer, lapses["id"])
    assert (got["status"], got["cancel_reason"], got["payment"]["status"]) == (
        "cancelled",
        "authorisation_lapsed",
        "cancelled",
    )
    assert (
        await client.post(f"/v1/orders/{lapses['id']}/ship", json={}, headers=auth(s, seller))
    ).status == 409

    r = await client.post(f"/v1/orders/{shipped['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 200
    r = await client.post(f"/v1/orders/{refunded['id']}/cancel", headers=auth(s, seller))
    assert r.status == 200
    platform.drain()
    done = await _get(client, s, buyer, shipped["id"])
    assert (done["status"], done["payment"]["status"], done["fee_fen"]) == ("completed", "captured", 45)
    got = await _get(client, s, buyer, refunded["id"])
    assert (got["status"], got["payment"]["status"]) == ("cancelled", "refunded")
    refunds = api.v1.refunds.list(params={"payment_intent": pis[refunded["id"]]}).data
    assert [r.amount for r in refunds] == [4500]
    assert payments_of(rt).ledger_problems() == []
