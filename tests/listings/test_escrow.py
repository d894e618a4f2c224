"""Escrow that cannot lapse, through the public API with the real payments service (sandbox provider) answering
over the bus: a paid order must ship by its `ship_by` or it is cancelled and the hold released; shipping captures
the buyer's money into the platform's escrow (the provider's authorisation window no longer matters); the buyer's
confirmation or the auto-confirm releases it to the seller less the fee, and nothing completes an order whose
money is not in escrow; a refund after shipping comes out of the escrow; an authorisation let go between the ship
and the capture asks the buyer to pay again (or the seller or an admin cancels); repeated requests and reports act
once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from services.contracts.payments import HOLD_VALID_DAYS
from services.kernel.bus.port import Record
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t
from services.listings.settings import ListingsSettings
from services.listings.store import orders
from services.listings.timers import run_due
from services.payments.domain import ledger as L
from services.payments.handlers import payments_of

from .support import app_client, auth, uid
from .test_orders import _get, _hits, _order, _pay, _payouts, _published

DAY = timedelta(days=1)


async def _paid(platform, client, s, **listing) -> tuple[str, str, dict, dict]:  # noqa: ANN001
    seller, buyer = uid("sel"), uid("buy")
    order = await _order(platform, client, s, buyer, await _published(client, s, seller, **listing))
    held = await _pay(client, s, buyer, order)
    platform.drain()
    return seller, buyer, order, held


async def _ship(client, s, seller, order) -> int:  # noqa: ANN001
    r = await client.post(
        f"/v1/orders/{order['id']}/ship",
        json={"carrier": "顺丰", "tracking_no": "SF1"},
        headers=auth(s, seller),
    )
    return r.status


def _reports(platform, hr: str) -> list[str]:  # noqa: ANN001
    """What payments reported about a hold request, in order (opened, authorised, escrowed, ...)."""
    with platform["payments"].db.session(readonly=True) as sess:
        rows = sess.execute(
            select(outbox_t.c.type)
            .where(outbox_t.c.topic == "payments.hold", outbox_t.c.key == hr)
            .order_by(outbox_t.c.seq)
        ).all()
    return [r.type.removeprefix("cn.recycle.payments.hold.").removesuffix(".v1") for r in rows]


def _requests(platform, hr: str) -> list[Envelope]:  # noqa: ANN001
    """Listings' requests about a hold request, as it sent them."""
    with platform["listings"].db.session(readonly=True) as sess:
        rows = sess.execute(
            select(outbox_t.c.payload)
            .where(outbox_t.c.topic == "payments.hold", outbox_t.c.key == hr)
            .order_by(outbox_t.c.seq)
        ).all()
    return [Envelope.from_bytes(r.payload) for r in rows]


def _send_again(platform, envelopes: list[Envelope], *, new_ids: bool) -> None:  # noqa: ANN001
    """Deliver listings' requests again: the same records (the consumers' inbox answers) or the same requests in new
    envelopes (as a requester that re-sent them would: payments' own state answers)."""
    envs = [e.model_copy(update={"id": "ev_" + uid()}) if new_ids else e for e in envelopes]
    platform.bus.publish(
        [
            Record(topic="payments.hold", key=e.subject, value=e.to_bytes(), headers={"ce_type": e.type})
            for e in envs
        ]
    )
    platform.drain()


def _order_events(platform, order_id: str, what: str) -> list[dict]:  # noqa: ANN001
    with platform["listings"].db.session(readonly=True) as sess:
        rows = sess.execute(
            select(outbox_t.c.type, outbox_t.c.payload).where(
                outbox_t.c.topic == "listings.order", outbox_t.c.key == order_id
            )
        ).all()
    return [json.loads(r.payload)["data"] for r in rows if r.type.endswith(f"order.{what}.v1")]


async def test_a_paid_order_not_shipped_in_time_is_cancelled_and_the_hold_released(
    aiohttp_client, sqlite_settings
):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, ship_days=3)
    rt = platform["listings"]
    payments = payments_of(platform["payments"])
    seller, buyer, order, held = await _paid(platform, client, s)
    got = await _get(client, s, seller, order["id"])
    ship_by = datetime.fromisoformat(got["ship_by"])
    # three days from the authorisation, well inside the provider's window
    assert timedelta(days=3) - timedelta(minutes=1) < ship_by - datetime.now(UTC) <= timedelta(days=3)

    assert run_due(rt, ship_by - timedelta(minutes=1))["not_shipped"] == 0
    assert run_due(rt, ship_by)["not_shipped"] == 1
    assert run_due(rt, ship_by + DAY)["not_shipped"] == 0  # once
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert (got["status"], got["cancel_reason"], got["payment"]["status"]) == (
        "cancelled",
        "not_shipped",
        "cancelled",
    )
    hold = payments.get_hold(held["hold_id"])
    assert (str(hold.status), hold.captured_fen) == ("cancelled", 0)
    assert payments.account_balance(L.hold_account(hold.id)) == 0  # the buyer's card is free again
    assert [e["reason"] for e in _order_events(platform, order["id"], "cancelled")] == ["not_shipped"]
    assert await _hits(client, "三体") == 1  # back on sale
    assert await _ship(client, s, seller, order) == 409
    assert payments.ledger_problems() == []


async def test_a_seller_who_ships_after_the_deadline_finds_the_order_cancelled(
    aiohttp_client, sqlite_settings
):
    """The deadline passed and the timer has not come by yet: shipping cancels the order as the timer would and
    answers 409 with the reason, so nothing ships on an authorisation about to lapse."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    seller, buyer, order, held = await _paid(platform, client, s)
    with platform["listings"].db.session() as sess, sess.begin():
        sess.execute(
            update(orders)
            .where(orders.c.id == order["id"])
            .values(ship_by=datetime.now(UTC) - timedelta(seconds=1))
        )
    r = await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
    body = await r.json()
    assert r.status == 409 and (body["current_state"], body["reason"]) == ("cancelled", "not_shipped")
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert (got["status"], got["cancel_reason"], got["payment"]["status"]) == (
        "cancelled",
        "not_shipped",
        "cancelled",
    )
    assert str(payments_of(platform["payments"]).get_hold(held["hold_id"]).status) == "cancelled"
    assert run_due(platform["listings"], datetime.now(UTC) + DAY)["not_shipped"] == 0


async def test_shipping_captures_into_escrow_and_the_confirmation_pays_the_seller_less_the_fee(
    aiohttp_client, sqlite_settings
):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, platform_fee_bps=100)
    payments = payments_of(platform["payments"])
    seller, buyer, order, held = await _paid(platform, client, s)
    hr = order["payment"]["id"]
    escrow = L.escrow_account(held["hold_id"])

    assert await _ship(client, s, seller, order) == 200
    # the escrow capture is on its way: nothing to release yet, so no completion (the buyer tries again)
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    body = await r.json()
    assert r.status == 409 and (body["reason"], body["payment_status"]) == ("payment_not_in_escrow", "held")
    platform.drain()
    # captured at shipping: the money is in the platform's escrow, owed to nobody yet
    got = await _get(client, s, seller, order["id"])
    assert (got["status"], got["payment"]["status"]) == ("shipped", "escrowed")
    hold = payments.get_hold(held["hold_id"])
    assert (str(hold.status), hold.captured_fen, hold.released_fen) == ("captured", 4500, 0)
    assert payments.account_balance(escrow) == 4500
    assert payments.account_balance(L.hold_account(hold.id)) == 0
    assert payments.provider.retrieve_intent(hold.provider_ref).status == "captured"
    assert _payouts(payments, seller) == []
    r = await client.get(f"/v1/payments/intents/{hr}", headers=auth(s, buyer))
    assert (await r.json())["status"] == "escrowed"
    assert _reports(platform, hr) == ["opened", "authorised", "escrowed"]

    # the escrow request again, as the same record and as a new one: captured once
    _send_again(platform, _requests(platform, hr), new_ids=False)
    _send_again(platform, _requests(platform, hr), new_ids=True)
    assert _reports(platform, hr) == ["opened", "authorised", "escrowed"]

    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 200 and (await r.json())["status"] == "completed"
    platform.drain()
    done = await _get(client, s, buyer, order["id"])
    assert (done["payment"]["status"], done["fee_fen"]) == ("captured", 45)
    hold = payments.get_hold(held["hold_id"])
    assert (hold.captured_fen, hold.released_fen, hold.refunded_fen) == (4500, 4500, 0)
    assert payments.account_balance(escrow) == 0
    [payout] = _payouts(payments, seller)
    assert (payout.amount_fen, payout.reference_id) == (4455, order["id"])
    assert _reports(platform, hr) == ["opened", "authorised", "escrowed", "captured"]

    # every request of the order again (escrow, release), both ways: nothing moves twice
    fees = payments.account_balance(L.PLATFORM_FEES)
    _send_again(platform, _requests(platform, hr), new_ids=False)
    _send_again(platform, _requests(platform, hr), new_ids=True)
    assert _reports(platform, hr) == ["opened", "authorised", "escrowed", "captured"]
    assert [p.amount_fen for p in _payouts(payments, seller)] == [4455]
    assert payments.account_balance(L.PLATFORM_FEES) == fees
    assert payments.get_hold(held["hold_id"]).released_fen == 4500
    assert payments.ledger_problems() == []


async def test_a_shipped_order_is_auto_confirmed_and_the_seller_paid(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, auto_confirm_days=10, platform_fee_bps=100)
    payments = payments_of(platform["payments"])
    seller, _, order, held = await _paid(platform, client, s)
    assert await _ship(client, s, seller, order) == 200
    platform.drain()
    rt = platform["listings"]
    assert run_due(rt, datetime.now(UTC) + 9 * DAY)["auto_confirmed"] == 0
    assert run_due(rt, datetime.now(UTC) + 10 * DAY + timedelta(minutes=1))["auto_confirmed"] == 1
    assert run_due(rt, datetime.now(UTC) + 11 * DAY)["auto_confirmed"] == 0
    platform.drain()
    got = await _get(client, s, seller, order["id"])
    assert (got["status"], got["auto_confirmed"], got["payment"]["status"]) == ("completed", True, "captured")
    assert [p.amount_fen for p in _payouts(payments, seller)] == [4455]
    assert payments.get_hold(held["hold_id"]).released_fen == 4500
    assert payments.ledger_problems() == []


async def test_the_providers_window_passes_after_shipping_and_the_seller_is_still_paid(
    aiohttp_client, sqlite_settings
):
    """Slow shipping plus the auto-confirm window exceed the provider's 7 days. The shipped order's money was
    captured into escrow, so nothing lapses; an order left paid and unshipped (its timer never ran) lapses, and
    payments' report cancels it before the seller can ship."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, auto_confirm_days=10, platform_fee_bps=100)
    payments = payments_of(platform["payments"])
    seller, _, shipped, shipped_hold = await _paid(platform, client, s)
    other_seller, other_buyer, unshipped, unshipped_hold = await _paid(
        platform, client, s, title="二手自行车 捷安特"
    )
    assert await _ship(client, s, seller, shipped) == 200
    platform.drain()

    # the provider's clock passes its window: only the uncaptured authorisation lapses
    lapsed = payments.provider.lapse_authorisations(time.time() + (HOLD_VALID_DAYS + 1) * 86400)
    assert lapsed == [payments.get_hold(unshipped_hold["hold_id"]).provider_ref]
    payments.pull_provider_events()
    platform.drain()
    got = await _get(client, s, other_buyer, unshipped["id"])
    assert (got["status"], got["cancel_reason"], got["payment"]["status"]) == (
        "cancelled",
        "authorisation_lapsed",
        "cancelled",
    )
    assert await _ship(client, s, other_seller, unshipped) == 409
    assert await _hits(client, "自行车") == 1  # back on sale
    got = await _get(client, s, seller, shipped["id"])
    assert (got["status"], got["payment"]["status"]) == ("shipped", "escrowed")

    assert (
        run_due(platform["listings"], datetime.now(UTC) + 10 * DAY + timedelta(minutes=1))["auto_confirmed"]
        == 1
    )
    platform.drain()
    got = await _get(client, s, seller, shipped["id"])
    assert (got["status"], got["payment"]["status"]) == ("completed", "captured")
    assert [p.amount_fen for p in _payouts(payments, seller)] == [4455]
    hold = payments.get_hold(shipped_hold["hold_id"])
    assert (hold.captured_fen, hold.released_fen) == (4500, 4500)
    assert payments.ledger_problems() == []


async def test_a_refund_after_shipping_comes_out_of_the_escrow(aiohttp_client, sqlite_settings):
    """After shipping the buyer can no longer cancel; the seller (taking the item back) or an admin (a dispute
    decided for the buyer) can, and the escrow is refunded in full."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    payments = payments_of(platform["payments"])
    for who in ("seller", "admin"):
        seller, buyer, order, held = await _paid(platform, client, s, title=f"三体 {who}")
        lid = order["listing_id"]
        assert await _ship(client, s, seller, order) == 200
        platform.drain()
        r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth(s, buyer))
        assert r.status == 409 and (await r.json())["current_state"] == "shipped"
        actor = auth(s, seller) if who == "seller" else auth(s, uid("adm"), "admin")
        r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=actor)
        assert r.status == 200 and (await r.json())["status"] == "cancelled"
        platform.drain()
        got = await _get(client, s, buyer, order["id"])
        assert (got["cancel_reason"], got["payment"]["status"]) == (f"cancelled_by_{who}", "refunded")
        hold = payments.get_hold(held["hold_id"])
        assert (hold.captured_fen, hold.refunded_fen, hold.released_fen) == (4500, 4500, 0)
        assert payments.account_balance(L.escrow_account(hold.id)) == 0
        assert _payouts(payments, seller) == []
        assert _reports(platform, order["payment"]["id"])[-2:] == ["escrowed", "refunded"]
        # the item is with the buyer or on its way back: the listing waits as a draft for its seller
        assert (await (await client.get(f"/v1/listings/{lid}", headers=auth(s, seller))).json())[
            "status"
        ] == "draft"
        r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
        assert r.status == 409
        # the refund request again: refunded once
        _send_again(platform, _requests(platform, order["payment"]["id"]), new_ids=True)
        assert payments.get_hold(held["hold_id"]).refunded_fen == 4500
        assert _reports(platform, order["payment"]["id"]).count("refunded") == 1
    assert payments.ledger_problems() == []


def _drop_before_the_escrow_capture(platform, held: dict, *, heard_first: bool) -> None:  # noqa: ANN001
    """The provider drops the buyer's authorisation (an issuer's doing, days inside its window) while the escrow
    request is still in listings' outbox. `heard_first`: payments hears of it from the provider's event before the
    request arrives; else the capture fails at the provider and payments finds it then."""
    payments = payments_of(platform["payments"])
    payments.provider.expire_authorisation(payments.get_hold(held["hold_id"]).provider_ref)
    if heard_first:
        payments.pull_provider_events()
    platform.drain()
    payments.pull_provider_events()  # the event after the failed capture: booked already, changes nothing
    platform.drain()


async def _admin_attention(client, s) -> list[str]:  # noqa: ANN001
    r = await client.get(
        "/v1/admin/orders", params={"payment_failed": "true"}, headers=auth(s, uid("adm"), "admin")
    )
    assert r.status == 200, await r.text()
    return [o["id"] for o in (await r.json())["items"]]


@pytest.mark.parametrize("heard_first", [True, False], ids=["event-first", "capture-first"])
async def test_a_hold_dropped_between_shipping_and_the_escrow_capture_asks_the_buyer_to_pay_again(
    aiohttp_client, sqlite_settings, heard_first
):
    """The race the ship deadline cannot close: the authorisation is let go in the moment between the seller's ship
    and payments' escrow capture, so nothing reaches escrow and the goods are on their way. The order must not
    complete (the seller would never be paid): it stays shipped, says why, the buyer's confirmation is refused and
    the auto-confirm passes it by, admins find it, and the buyer is asked to pay again; once that payment is in
    escrow the order completes as any other and the seller is paid once."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, auto_confirm_days=10, platform_fee_bps=100)
    payments = payments_of(platform["payments"])
    seller, buyer, order, held = await _paid(platform, client, s)
    first = order["payment"]["id"]
    assert await _ship(client, s, seller, order) == 200  # HoldEscrowRequested still in listings' outbox
    _drop_before_the_escrow_capture(platform, held, heard_first=heard_first)

    assert sum(r.dead_lettered for rt in platform.runtimes.values() for r in rt.runners) == 0
    assert _reports(platform, first)[-2:] == ["cancelled", "capture_refused"]
    hold = payments.get_hold(held["hold_id"])
    assert (str(hold.status), hold.captured_fen) == ("cancelled", 0)
    got = await _get(client, s, buyer, order["id"])
    again = got["payment"]
    assert got["status"] == "shipped"
    assert (again["status"], again["attempt"], again["failure_reason"]) == (
        "requires_payment_method",
        2,
        "authorisation_lapsed",
    )
    assert again["id"] != first and again["failed_at"] is not None
    assert await _admin_attention(client, s) == [order["id"]]

    # not completed by the buyer (409 saying why) nor by the timer, whenever it runs
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    body = await r.json()
    assert r.status == 409, body
    assert (body["current_state"], body["reason"], body["payment_failure_reason"]) == (
        "shipped",
        "payment_not_in_escrow",
        "authorisation_lapsed",
    )
    assert run_due(platform["listings"], datetime.now(UTC) + 30 * DAY)["auto_confirmed"] == 0
    # the old payment's reports and listings' requests about it again: they no longer move the order
    _send_again(platform, _requests(platform, first), new_ids=True)
    with platform["payments"].db.session(readonly=True) as sess:
        old_reports = [
            Envelope.from_bytes(r.payload)
            for r in sess.execute(
                select(outbox_t.c.payload).where(outbox_t.c.topic == "payments.hold", outbox_t.c.key == first)
            )
        ]
    _send_again(platform, old_reports, new_ids=True)
    assert (await _get(client, s, buyer, order["id"]))["payment"] == again
    assert _payouts(payments, seller) == []

    # the buyer pays again (a decline first): captured into escrow at once
    await _pay(client, s, buyer, got, "pm_card_chargeCustomerFail")
    platform.drain()
    declined = (await _get(client, s, buyer, order["id"]))["payment"]
    assert (declined["status"], declined["failure_reason"]) == ("declined", "authorisation_lapsed")
    assert (await _pay(client, s, buyer, got))["status"] == "requires_capture"
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert (got["status"], got["payment"]["status"], got["payment"]["failure_reason"]) == (
        "shipped",
        "escrowed",
        None,
    )
    assert (got["payment"]["id"], got["payment"]["attempt"]) == (again["id"], 2)
    assert _reports(platform, again["id"]) == ["opened", "declined", "authorised", "escrowed"]
    assert await _admin_attention(client, s) == []
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 200 and (await r.json())["status"] == "completed"
    platform.drain()
    assert (await _get(client, s, seller, order["id"]))["payment"]["status"] == "captured"
    [payout] = _payouts(payments, seller)
    assert (payout.amount_fen, payout.reference_id) == (4455, order["id"])
    assert payments.get_hold(held["hold_id"]).captured_fen == 0  # the first hold: nothing ever taken
    assert payments.ledger_problems() == []


async def test_an_order_whose_buyer_must_pay_again_may_be_cancelled_by_the_seller_or_an_admin(
    aiohttp_client, sqlite_settings
):
    """The buyer has the goods and does not pay again: the seller (taking the item back) or an admin (deciding for
    either side) cancels the order; the payment the buyer was asked for is closed, nothing was taken, nobody is
    paid, and the listing waits as a draft. The buyer cannot cancel it: they have the goods."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    payments = payments_of(platform["payments"])
    for who in ("seller", "admin"):
        seller, buyer, order, held = await _paid(platform, client, s, title=f"三体 {who}")
        assert await _ship(client, s, seller, order) == 200
        _drop_before_the_escrow_capture(platform, held, heard_first=True)
        again = (await _get(client, s, buyer, order["id"]))["payment"]
        assert (again["attempt"], again["status"]) == (2, "requires_payment_method")

        r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth(s, buyer))
        assert r.status == 409 and (await r.json())["current_state"] == "shipped"
        actor = auth(s, seller) if who == "seller" else auth(s, uid("adm"), "admin")
        r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=actor)
        assert r.status == 200 and (await r.json())["status"] == "cancelled"
        platform.drain()
        got = await _get(client, s, buyer, order["id"])
        assert (got["cancel_reason"], got["payment"]["status"], got["payment"]["failure_reason"]) == (
            f"cancelled_by_{who}",
            "cancelled",
            "authorisation_lapsed",
        )
        assert _reports(platform, again["id"]) == ["opened", "cancelled"]
        r = await client.post(
            f"/v1/payments/intents/{again['id']}/confirm",
            json={"payment_method": "pm_card_visa"},
            headers=auth(s, buyer),
        )
        assert r.status == 409  # closed: the buyer can no longer pay it
        assert payments.get_hold(held["hold_id"]).captured_fen == 0
        assert _payouts(payments, seller) == []
        lid = order["listing_id"]
        listing = await (await client.get(f"/v1/listings/{lid}", headers=auth(s, seller))).json()
        assert listing["status"] == "draft"
        assert order["id"] not in await _admin_attention(client, s)
    assert payments.ledger_problems() == []


async def test_only_admins_list_every_order(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    seller, buyer, order, _ = await _paid(platform, client, s)
    r = await client.get("/v1/admin/orders", headers=auth(s, buyer))
    assert r.status == 403
    r = await client.get("/v1/admin/orders", params={"status": "paid"}, headers=auth(s, uid("adm"), "admin"))
    assert r.status == 200 and [o["id"] for o in (await r.json())["items"]] == [order["id"]]
    r = await client.get("/v1/admin/orders", params={"status": "sold"}, headers=auth(s, uid("adm"), "admin"))
    assert r.status == 400 and "status" in await r.text()


def test_the_ship_deadline_must_be_inside_the_providers_window(monkeypatch):
    assert ListingsSettings().ship_days == 3
    assert ListingsSettings(ship_days=6.5).ship_days == 6.5
    with pytest.raises(ValidationError, match="LISTINGS_SHIP_DAYS must be below 7 days"):
        ListingsSettings(ship_days=HOLD_VALID_DAYS)
    monkeypatch.setenv("LISTINGS_SHIP_DAYS", "10")
    with pytest.raises(ValidationError, match="ship_days"):
        ListingsSettings()
