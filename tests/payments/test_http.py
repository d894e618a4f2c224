"""Payments through the public API (the gateway): balance, withdrawals, the Stripe webhook endpoint, and the
payout request/answer over events."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.contracts.payments import PayoutRequested
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.events import Envelope
from services.payments.domain import ledger as L
from services.payments.domain.model import HoldStatus, RefundStatus
from services.payments.handlers import Payments, payments_of
from services.payments.store import ledger_entries, provider_events

from .support import STRIPE_TEST_KEY, WEBHOOK_SECRET, encode, new_cmd, payments_settings, sign, stripe_event

WEBHOOK = "/v1/payments/webhooks/stripe"


async def _client(aiohttp_client, settings):  # noqa: ANN001, ANN202
    platform = Platform(settings, services=["payments"]).prepare()
    app = create_app_over(platform)
    client = await aiohttp_client(app)
    return platform, payments_of(platform["payments"]), client


def auth(settings, user_id: str, *roles: str) -> dict[str, str]:  # noqa: ANN001
    token = issue_token(settings, Principal(user_id, frozenset(roles or ("resident",))))
    return {"Authorization": f"Bearer {token}"}


def count(p: Payments, table, **where) -> int:  # noqa: ANN001
    with p.db.session(readonly=True) as s:
        q = select(func.count()).select_from(table)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        return s.execute(q).scalar_one()


# --- balance and withdrawals (sandbox, the embedded default) ------------------------------------------------------


async def test_balance_and_withdrawal_through_the_api(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, p, client = await _client(aiohttp_client, settings)
    r = await client.get("/v1/payments/balance")
    assert r.status == 401 and r.content_type == "application/problem+json"

    for i in range(2):
        p.request_payout(
            payout_id=f"po-{i}",
            payee_user_id="res-1",
            amount_fen=350,
            purpose="pickup",
            reference_id=f"pk-{i}",
            requested_by="booking",
        )
    me = auth(settings, "res-1")
    body = await (await client.get("/v1/payments/balance", headers=me)).json()
    assert body["available_fen"] == 700 and body["payout_threshold_fen"] == 1000 and body["currency"] == "CNY"
    assert {w["wallet"]: w["balance_fen"] for w in body["wallets"]}["resident"] == 700

    r = await client.post("/v1/payments/withdrawals", json={"amount_fen": 10_000}, headers=me)
    problem = await r.json()
    assert r.status == 422 and problem["reason"] == "insufficient_balance"

    key = {"Idempotency-Key": new_cmd("key")}
    r1 = await client.post("/v1/payments/withdrawals", json={}, headers=me | key)
    w = await r1.json()
    assert r1.status == 201 and w["amount_fen"] == 700 and w["status"] == "paid" and w["provider_ref"]
    r2 = await client.post("/v1/payments/withdrawals", json={}, headers=me | key)
    assert (await r2.json())["id"] == w["id"]  # the same key: the same withdrawal, not a second one
    assert (await (await client.get("/v1/payments/balance", headers=me)).json())["available_fen"] == 0

    listing = await (await client.get("/v1/payments/withdrawals?limit=10", headers=me)).json()
    assert [x["id"] for x in listing["items"]] == [w["id"]] and listing["next_cursor"] is None
    assert (await client.get(f"/v1/payments/withdrawals/{w['id']}", headers=me)).status == 200
    other = await client.get(f"/v1/payments/withdrawals/{w['id']}", headers=auth(settings, "someone-else"))
    assert other.status == 403
    r = await client.post("/v1/payments/withdrawals", json={"wallet": "piggy"}, headers=me)
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "wallet"
    r = await client.post("/v1/payments/withdrawals", json={}, headers=me)
    assert r.status == 422 and (await r.json())["reason"] == "nothing_to_withdraw"

    admin = auth(settings, "admin-1", "admin")
    assert (await client.post("/v1/admin/payments/reconcile", headers=me)).status == 403
    report = await (await client.post("/v1/admin/payments/reconcile", headers=admin)).json()
    assert report["ok"] is True and report["checked"]["withdrawals"] == 1
    tb = await (await client.get("/v1/admin/payments/trial-balance", headers=admin)).json()
    assert tb["total_fen"] == 0 and tb["accounts"][L.funding_account("booking")] == 700
    doc = await (await client.get("/openapi.json")).json()
    assert {"/v1/payments/balance", "/v1/payments/withdrawals", WEBHOOK} <= set(doc["paths"])


async def test_payout_requested_over_events_is_answered_once(aiohttp_client, sqlite_settings):
    platform, p, client = await _client(aiohttp_client, sqlite_settings)
    now = datetime.now(UTC)

    def publish(pid: str, amount: int) -> None:
        ev = PayoutRequested(
            payout_id=pid,
            payee_user_id="res-9",
            amount_fen=amount,
            purpose="pickup",
            reference_id=f"pickup-{pid}",
            requested_by="booking",
            requested_at=now,
        )
        env = Envelope.wrap(ev)
        platform.bus.publish([Record(topic=ev.topic, key=ev.key, value=env.to_bytes())])

    publish("P1", 400)
    publish("P1", 400)  # the requester retried: a new event, the same payout id
    publish("P2", 800)  # the wallet reaches 1200 ≥ 1000: paid out through the provider
    publish("P3", 0)  # can never be paid: answered with payout.failed, not retried forever
    await asyncio.get_running_loop().run_in_executor(None, platform.drain)

    def answers() -> dict[str, tuple]:
        """payout -> (outcome, destination, its event ids as published, oldest first)"""
        out: dict[str, tuple] = {}
        for part in range(platform.bus.partitions("payments.payout")):
            for rec in platform.bus.read("payments.payout", part, 0, 1000):
                env = Envelope.from_bytes(rec.value)
                if env.type.endswith(("payout.paid.v1", "payout.failed.v1")):
                    pid = env.data["payout_id"]
                    ids = out[pid][2] if pid in out else ()
                    out[pid] = (env.type.rsplit(".", 2)[-2], env.data.get("destination"), (*ids, env.id))
        return out

    first = answers()
    assert {k: v[:2] for k, v in first.items()} == {
        "P1": ("paid", "balance"),
        "P2": ("paid", "provider"),
        "P3": ("failed", None),
    }
    assert all(len(v[2]) == 1 for v in first.values()), first
    assert p.get_payout("P2").status == "paid" and p.balance("res-9").available_fen == 0
    assert count(p, ledger_entries, ref="P1", kind="payout_credit") == 1

    # Asked again later (the requester never heard): nothing is paid twice; each outcome is announced again,
    # the same event (its id), which the requester's inbox takes for the first if that one did arrive.
    publish("P1", 400)
    publish("P2", 800)
    publish("P3", 0)
    await asyncio.get_running_loop().run_in_executor(None, platform.drain)
    again = answers()
    assert {k: v[2] for k, v in again.items()} == {k: v[2] * 2 for k, v in first.items()}
    assert {k: v[:2] for k, v in again.items()} == {k: v[:2] for k, v in first.items()}
    assert count(p, ledger_entries, ref="P1", kind="payout_credit") == 1
    assert count(p, ledger_entries, ref="P2", kind="payout_credit") == 1
    assert p.balance("res-9").available_fen == 0 and p.get_payout("P2").status == "paid"


async def test_sandbox_has_no_webhooks(aiohttp_client, sqlite_settings):
    _, _, client = await _client(aiohttp_client, sqlite_settings)
    payload = encode(stripe_event("payment_intent.canceled", {"id": "pi_x", "object": "payment_intent"}))
    r = await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload)})
    assert r.status == 400 and r.content_type == "application/problem+json"
    # every 400 names what was wrong (found by schemathesis: this one named nothing)
    assert [e["field"] for e in (await r.json())["errors"]] == ["Stripe-Signature"]


# --- the Stripe webhook endpoint (Stripe adapter against localstripe) ---------------------------------------------


@pytest.fixture
async def stripe_app(aiohttp_client, sqlite_settings, localstripe):  # noqa: ANN001
    settings = payments_settings(sqlite_settings, "stripe", localstripe.url)
    platform, p, client = await _client(aiohttp_client, settings)
    return p, client, localstripe


def _authorised(p: Payments, amount: int = 2000):  # noqa: ANN202
    return p.authorise(
        command_id=new_cmd(), payer_user_id="buyer", amount_fen=amount, payment_method="pm_card_visa"
    )


def _cancelled_pi_event(ls, hold, created: int | None = None) -> dict:  # noqa: ANN001
    """Cancel the PaymentIntent at the provider (its authorisation lapsed) and build the event Stripe sends."""
    import stripe

    client = stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": ls.url})
    pi = client.v1.payment_intents.cancel(hold.provider_ref).to_dict()
    pi["cancellation_reason"] = "automatic"
    return stripe_event("payment_intent.canceled", pi, created=created)


async def test_a_valid_signed_webhook_is_applied(stripe_app):
    p, client, ls = stripe_app
    hold = _authorised(p)
    payload = encode(_cancelled_pi_event(ls, hold))
    r = await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload)})
    assert r.status == 200, await r.text()
    assert (await r.json())["outcome"] == "applied"
    assert p.get_hold(hold.id).status == HoldStatus.CANCELLED


@pytest.mark.parametrize("how", ["tampered", "wrong_secret", "missing", "garbage", "stale"])
async def test_a_webhook_with_a_bad_signature_is_refused_and_not_recorded(stripe_app, how):
    p, client, ls = stripe_app
    hold = _authorised(p)
    event = _cancelled_pi_event(ls, hold)
    payload = encode(event)
    headers = {"Stripe-Signature": sign(payload)}
    if how == "tampered":
        payload = payload.replace(b'"automatic"', b'"fraudulent"')
    elif how == "wrong_secret":
        headers = {"Stripe-Signature": sign(payload, secret="whsec_not_ours")}
    elif how == "missing":
        headers = {}
    elif how == "garbage":
        headers = {"Stripe-Signature": "t=abc,v1=zzz"}
    elif how == "stale":  # a valid signature from an hour ago: a replay outside the 5-minute tolerance
        headers = {"Stripe-Signature": sign(payload, timestamp=int(time.time()) - 3600)}
    r = await client.post(WEBHOOK, data=payload, headers=headers)
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert [e["field"] for e in (await r.json())["errors"]] == ["Stripe-Signature"]
    assert count(p, provider_events, id=event["id"]) == 0
    assert p.get_hold(hold.id).status == HoldStatus.AUTHORISED


async def test_a_replayed_webhook_is_applied_once(stripe_app):
    p, client, ls = stripe_app
    hold = _authorised(p)
    payload = encode(_cancelled_pi_event(ls, hold))
    headers = {"Stripe-Signature": sign(payload)}
    outcomes = []
    for _ in range(3):
        r = await client.post(WEBHOOK, data=payload, headers=headers)
        outcomes.append((r.status, (await r.json())["outcome"]))
    assert outcomes == [(200, "applied"), (200, "duplicate"), (200, "duplicate")]
    assert count(p, ledger_entries, ref=hold.id, kind="hold_release") == 1


@pytest.mark.parametrize("order", ["in_order", "failure_first"])
async def test_a_refund_failure_is_kept_whatever_the_order(stripe_app, order):
    """refund succeeded (t0) then failed (t0+60): delivered in either order, the refund ends failed, once."""
    import stripe

    p, client, ls = stripe_app
    hold = p.capture(command_id=new_cmd(), hold_id=_authorised(p, 3000).id)
    refund = p.refund(command_id=new_cmd(), hold_id=hold.id, amount_fen=1200)
    obj = (
        stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": ls.url})
        .v1.refunds.retrieve(refund.provider_ref)
        .to_dict()
    )
    t0 = int(time.time()) - 120
    succeeded = stripe_event("refund.created", obj | {"status": "succeeded"}, created=t0)
    failed = stripe_event(
        "charge.refund.updated",
        obj | {"status": "failed", "failure_reason": "lost_or_stolen_card"},
        created=t0 + 60,
    )
    batch = [succeeded, failed] if order == "in_order" else [failed, succeeded]
    for ev in batch:
        payload = encode(ev)
        r = await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload)})
        assert r.status == 200
    assert p.get_refund(refund.id).status == RefundStatus.FAILED
    assert p.get_refund(refund.id).failure_reason == "lost_or_stolen_card"
    assert p.account_balance(L.escrow_account(hold.id)) == 3000
    assert count(p, ledger_entries, ref=refund.id, kind="refund_reversal") == 1
    assert p.ledger_problems() == []


async def test_a_late_authorisation_event_does_not_reopen_a_cancelled_hold(stripe_app):
    p, client, ls = stripe_app
    hold = _authorised(p)
    cancelled = _cancelled_pi_event(ls, hold, created=int(time.time()))
    earlier = stripe_event(
        "payment_intent.amount_capturable_updated",
        cancelled["data"]["object"] | {"status": "requires_capture", "amount_capturable": 2000},
        created=int(time.time()) - 30,
    )
    for ev in (cancelled, earlier):
        payload = encode(ev)
        assert (
            await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload)})
        ).status == 200
    assert p.get_hold(hold.id).status == HoldStatus.CANCELLED
    assert p.account_balance(L.hold_account(hold.id)) == 0


async def test_an_event_we_do_not_use_is_recorded_and_ignored(stripe_app):
    p, client, _ = stripe_app
    ev = stripe_event("customer.created", {"id": "cus_123", "object": "customer"})
    payload = encode(ev)
    r = await client.post(WEBHOOK, data=payload, headers={"Stripe-Signature": sign(payload)})
    assert r.status == 200 and count(p, provider_events, id=ev["id"]) == 1


async def test_localstripe_delivers_a_signed_webhook_that_we_verify(stripe_app):
    """localstripe signs its own webhooks with Stripe's scheme: a capture made at the provider reaches us."""
    import stripe

    p, client, ls = stripe_app
    hook_id = new_cmd("hook")
    url = str(client.make_url(WEBHOOK))

    def configure(events: list[str]) -> None:
        req = urllib.request.Request(
            f"{ls.url}/_config/webhooks/{hook_id}",
            method="POST",
            data=json.dumps({"url": url, "secret": WEBHOOK_SECRET, "events": events}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5).close()

    configure(["payment_intent.succeeded"])
    try:
        hold = _authorised(p, 1500)
        stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": ls.url}).v1.payment_intents.capture(
            hold.provider_ref
        )
        deadline = time.monotonic() + 15
        while p.get_hold(hold.id).status != HoldStatus.CAPTURED and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        h = p.get_hold(hold.id)
        assert h.status == HoldStatus.CAPTURED and h.captured_fen == 1500
        assert h.status_reason == "captured at the provider"
    finally:
        configure([])  # stop sending to this test's server
