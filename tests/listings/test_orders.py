"""Orders with escrow (担保交易) through the public API, with the real payments service (sandbox provider) answering
over the bus: reserve + hold, pay, ship (captured into escrow), confirm receipt → release less the fee; declines,
cancel, expiry, auto-confirm, late payment, reviews and reputation (more on escrow in test_escrow.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.contracts.wipe import device_key
from services.listings.timers import run_due
from services.payments.handlers import payments_of

from .support import app_client, auth, book_body, certify, imei, phone_body, revoke, uid


async def _published(client, settings, seller, **over) -> str:  # noqa: ANN001
    h = auth(settings, seller)
    r = await client.post("/v1/listings", json=book_body(**over), headers=h)
    assert r.status == 201, await r.text()
    lid = (await r.json())["id"]
    assert (await client.post(f"/v1/listings/{lid}/publish", headers=h)).status == 200
    return lid


async def _order(platform, client, settings, buyer, lid) -> dict:  # noqa: ANN001
    r = await client.post("/v1/orders", json={"listing_id": lid}, headers=auth(settings, buyer))
    assert r.status == 201, await r.text()
    order = await r.json()
    platform.drain()  # payments opens the payment
    return order


async def _pay(client, settings, buyer, order, method="pm_card_visa") -> dict:  # noqa: ANN001
    r = await client.post(
        f"/v1/payments/intents/{order['payment']['id']}/confirm",
        json={"payment_method": method},
        headers=auth(settings, buyer),
    )
    assert r.status == 200, await r.text()
    return await r.json()


async def _get(client, settings, user, oid) -> dict:  # noqa: ANN001
    r = await client.get(f"/v1/orders/{oid}", headers=auth(settings, user))
    assert r.status == 200, await r.text()
    return await r.json()


async def _hits(client, q) -> int:  # noqa: ANN001
    return (await (await client.get("/v1/listings/search", params={"q": q})).json())["total"]


async def test_buy_pay_ship_receive_review_and_the_seller_is_paid(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, platform_fee_bps=100)
    seller, buyer = uid("sel"), uid("buy")
    lid = await _published(client, s, seller)
    platform.drain()
    assert await _hits(client, "三体") == 1

    # the seller cannot buy their own listing
    r = await client.post("/v1/orders", json={"listing_id": lid}, headers=auth(s, seller))
    assert r.status == 422 and (await r.json())["reason"] == "own_listing"

    order = await _order(platform, client, s, buyer, lid)
    assert order["status"] == "pending_payment" and order["amount_fen"] == 4500
    assert order["payment"]["id"] and order["payment"]["status"] == "requested"
    got = await _get(client, s, buyer, order["id"])
    assert got["payment"]["status"] == "requires_payment_method"
    # reserved: off the market, and nobody else can order it
    assert await _hits(client, "三体") == 0
    r = await client.post("/v1/orders", json={"listing_id": lid}, headers=auth(s, uid("other")))
    assert r.status == 409 and (await r.json())["current_state"] == "reserved"
    # only the payer pays
    r = await client.post(
        f"/v1/payments/intents/{order['payment']['id']}/confirm",
        json={"payment_method": "pm_card_visa"},
        headers=auth(s, uid("stranger")),
    )
    assert r.status == 403

    # a declined card leaves the order waiting, with the reason
    declined = await _pay(client, s, buyer, order, "pm_card_chargeCustomerFail")
    assert declined["status"] == "requires_payment_method" and declined["decline_code"]
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "pending_payment" and got["payment"]["status"] == "declined"
    assert got["payment"]["decline_reason"]
    # shipping before payment is a state conflict
    r = await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
    assert r.status == 409 and (await r.json())["current_state"] == "pending_payment"

    held = await _pay(client, s, buyer, order)
    assert held["status"] == "requires_capture"
    assert (await _pay(client, s, buyer, order))["hold_id"] == held["hold_id"]  # confirming again holds once
    platform.drain()
    got = await _get(client, s, seller, order["id"])
    assert got["status"] == "paid" and got["payment"]["status"] == "held"

    r = await client.post(
        f"/v1/orders/{order['id']}/ship",
        json={"carrier": "顺丰", "tracking_no": "SF1234567890"},
        headers=auth(s, buyer),
    )
    assert r.status == 403  # the buyer does not ship
    r = await client.post(
        f"/v1/orders/{order['id']}/ship",
        json={"carrier": "顺丰", "tracking_no": "SF1234567890"},
        headers=auth(s, seller),
    )
    assert r.status == 200 and (await r.json())["status"] == "shipped"
    platform.drain()  # payments captures the money into escrow: only then can the order complete
    # no review before completion
    r = await client.post(f"/v1/orders/{order['id']}/review", json={"rating": 5}, headers=auth(s, buyer))
    assert r.status == 409
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, seller))
    assert r.status == 403
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 200 and (await r.json())["status"] == "completed"
    platform.drain()
    done = await _get(client, s, buyer, order["id"])
    assert done["fee_fen"] == 45 and done["payment"]["status"] == "captured"
    # payments captured the hold and paid the seller 4500 − 45
    payments = payments_of(platform["payments"])
    hold = payments.get_hold(held["hold_id"])
    assert hold.captured_fen == 4500 and hold.released_fen == 4500
    payout = next(p for p in _payouts(payments, seller))
    assert payout.amount_fen == 4455 and payout.reference_id == order["id"]
    assert payments.ledger_problems() == []
    listing = await (await client.get(f"/v1/listings/{lid}")).json()
    assert listing["status"] == "sold"

    # reviews: once per side; strangers cannot
    r = await client.post(
        f"/v1/orders/{order['id']}/review",
        json={"rating": 5, "comment": "书很新，发货快"},
        headers=auth(s, buyer),
    )
    assert r.status == 201 and (await r.json())["subject_id"] == seller
    r = await client.post(f"/v1/orders/{order['id']}/review", json={"rating": 1}, headers=auth(s, buyer))
    assert r.status == 409
    r = await client.post(f"/v1/orders/{order['id']}/review", json={"rating": 4}, headers=auth(s, seller))
    assert r.status == 201
    r = await client.post(f"/v1/orders/{order['id']}/review", json={"rating": 4}, headers=auth(s, uid()))
    assert r.status == 404
    r = await client.post(f"/v1/orders/{order['id']}/review", json={"rating": 6}, headers=auth(s, seller))
    assert r.status == 400
    rep = await (await client.get(f"/v1/users/{seller}/reputation")).json()
    assert rep == {"user_id": seller, "score": 5.0, "reviews": 1, "completed_orders": 1}
    rep = await (await client.get(f"/v1/users/{buyer}/reputation")).json()
    assert rep["score"] == 4.0 and rep["completed_orders"] == 1


def _payouts(payments, payee):  # noqa: ANN001, ANN202
    from sqlalchemy import select

    from services.payments.store import payouts

    with payments.db.session(readonly=True) as s:
        ids = [
            r.payout_id
            for r in s.execute(select(payouts.c.payout_id).where(payouts.c.payee_user_id == payee))
        ]
    return [payments.get_payout(i) for i in ids]


async def test_cancel_after_paying_releases_the_hold_and_relists(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    seller, buyer = uid("sel"), uid("buy")
    lid = await _published(client, s, seller)
    order = await _order(platform, client, s, buyer, lid)
    held = await _pay(client, s, buyer, order)
    platform.drain()
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth(s, uid()))
    assert r.status == 404
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth(s, buyer))
    assert r.status == 200 and (await r.json())["status"] == "cancelled"
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["payment"]["status"] == "cancelled" and got["cancel_reason"] == "cancelled_by_buyer"
    assert str(payments_of(platform["payments"]).get_hold(held["hold_id"]).status) == "cancelled"
    assert await _hits(client, "三体") == 1  # back on sale
    # a new buyer can order it now; the cancelled order cannot be shipped
    assert (await _order(platform, client, s, uid("buy2"), lid))["status"] == "pending_payment"
    r = await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
    assert r.status == 409 and (await r.json())["current_state"] == "cancelled"


async def test_unpaid_orders_expire_and_a_late_payment_is_given_back(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, payment_minutes=30)
    rt = platform["listings"]
    seller, buyer = uid("sel"), uid("buy")
    lid = await _published(client, s, seller)

    # 1. nobody pays: the order expires, the listing is back on sale, payments closes the payment
    order = await _order(platform, client, s, buyer, lid)
    assert run_due(rt, datetime.now(UTC) + timedelta(minutes=29))["expired"] == 0
    assert run_due(rt, datetime.now(UTC) + timedelta(minutes=31))["expired"] == 1
    assert run_due(rt, datetime.now(UTC) + timedelta(minutes=31))["expired"] == 0  # once
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "expired" and got["payment"]["status"] == "cancelled"
    assert await _hits(client, "三体") == 1
    r = await client.post(
        f"/v1/payments/intents/{order['payment']['id']}/confirm",
        json={"payment_method": "pm_card_visa"},
        headers=auth(s, buyer),
    )
    assert r.status == 409  # too late: nothing is taken

    # 2. the buyer pays while the order expires: the hold is released, the order stays expired
    order = await _order(platform, client, s, buyer, lid)
    held = await _pay(client, s, buyer, order)  # HoldAuthorised still in payments' outbox
    assert run_due(rt, datetime.now(UTC) + timedelta(minutes=31))["expired"] == 1
    platform.drain()
    got = await _get(client, s, buyer, order["id"])
    assert got["status"] == "expired" and got["payment"]["status"] == "cancelled"
    assert str(payments_of(platform["payments"]).get_hold(held["hold_id"]).status) == "cancelled"


async def test_shipped_orders_are_confirmed_automatically(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, auto_confirm_days=7, platform_fee_bps=0)
    rt = platform["listings"]
    seller, buyer = uid("sel"), uid("buy")
    lid = await _published(client, s, seller)
    order = await _order(platform, client, s, buyer, lid)
    await _pay(client, s, buyer, order)
    platform.drain()
    assert (
        await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
    ).status == 200
    platform.drain()  # in escrow
    assert run_due(rt, datetime.now(UTC) + timedelta(days=6))["auto_confirmed"] == 0
    assert run_due(rt, datetime.now(UTC) + timedelta(days=7, minutes=1))["auto_confirmed"] == 1
    platform.drain()
    got = await _get(client, s, seller, order["id"])
    assert got["status"] == "completed" and got["auto_confirmed"] and got["payment"]["status"] == "captured"
    assert got["fee_fen"] == 0
    # the buyer's confirmation after that is a state conflict, not a second capture
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 409 and (await r.json())["current_state"] == "completed"


async def test_a_second_authorisation_report_for_a_paid_order_gives_nothing_back(
    aiohttp_client, sqlite_settings
):
    """Only an order that ended (expired, cancelled) gives a late authorisation back: a repeated report about a
    paid order (another event id, e.g. re-published by an operator) must not release the buyer's escrow."""
    from services.contracts.payments import HoldAuthorised

    from .support import publish

    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    seller, buyer = uid("sel"), uid("buy")
    order = await _order(platform, client, s, buyer, await _published(client, s, seller))
    held = await _pay(client, s, buyer, order)
    platform.drain()
    publish(
        platform,
        HoldAuthorised(
            hold_request_id=order["payment"]["id"],
            hold_id=held["hold_id"],
            amount_fen=order["amount_fen"],
            reference_id=order["id"],
            authorised_at=datetime.now(UTC),
        ),
    )
    got = await _get(client, s, buyer, order["id"])
    assert (got["status"], got["payment"]["status"]) == ("paid", "held")
    assert str(payments_of(platform["payments"]).get_hold(held["hold_id"]).status) == "authorised"


async def test_an_admin_sees_every_order_but_ships_confirms_and_reviews_none(aiohttp_client, sqlite_settings):
    """Found on the embedded run: an admin could read the order, yet its ship, confirm-receipt and review answered
    404 (as to a stranger, who may not learn that it exists); 403 `wrong_party` says what is wrong."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    seller, buyer, admin, stranger = uid("sel"), uid("buy"), uid("adm"), uid("str")
    lid = await _published(client, s, seller)
    order = await _order(platform, client, s, buyer, lid)
    await _pay(client, s, buyer, order)
    platform.drain()
    r = await client.get(f"/v1/orders/{order['id']}", headers=auth(s, admin, "admin"))
    assert r.status == 200 and (await r.json())["status"] == "paid"  # an admin reads it
    oid = order["id"]

    async def refused(action: str, **kw) -> None:  # noqa: ANN003
        r = await client.post(f"/v1/orders/{oid}/{action}", headers=auth(s, admin, "admin"), **kw)
        assert r.status == 403 and (await r.json())["reason"] == "wrong_party", (action, await r.text())
        r = await client.post(f"/v1/orders/{oid}/{action}", headers=auth(s, stranger), **kw)
        assert r.status == 404, (action, await r.text())

    await refused("ship", json={})
    r = await client.post(f"/v1/orders/{oid}/ship", json={}, headers=auth(s, seller))
    assert r.status == 200
    platform.drain()
    await refused("confirm-receipt")
    assert (await client.post(f"/v1/orders/{oid}/confirm-receipt", headers=auth(s, buyer))).status == 200
    await refused("review", json={"rating": 1})
    rep = await (await client.get(f"/v1/users/{seller}/reputation")).json()
    assert rep["reviews"] == 0 and rep["completed_orders"] == 1


async def test_a_revoked_certificate_cancels_the_order_of_a_phone_not_yet_shipped(
    aiohttp_client, sqlite_settings
):
    """Found on the embedded run: a phone reported stolen (blocklisted: its certificate revoked) while an order
    held it was still paid for, shipped and its seller paid. Now an order not yet shipped is cancelled
    (`certificate_revoked`, the buyer's money given back) and the listing goes to draft; a shipped one runs on."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    seller, buyer = uid("sel"), uid("buy")
    phones = {}
    for name, body in (
        ("unpaid", "86891503000001"),
        ("paid", "86891503000002"),
        ("shipped", "86891503000003"),
    ):
        value = imei(body)
        cid = certify(platform, imei_value=value)
        r = await client.post("/v1/listings", json=phone_body(value), headers=auth(s, seller))
        lid = (await r.json())["id"]
        assert (await client.post(f"/v1/listings/{lid}/publish", headers=auth(s, seller))).status == 200
        order = await _order(platform, client, s, buyer, lid)
        phones[name] = (value, cid, lid, order)
    for name in ("paid", "shipped"):
        await _pay(client, s, buyer, phones[name][3])
    platform.drain()
    oid = phones["shipped"][3]["id"]
    assert (await client.post(f"/v1/orders/{oid}/ship", json={}, headers=auth(s, seller))).status == 200
    platform.drain()
    assert (await _get(client, s, buyer, oid))["payment"]["status"] == "escrowed"

    for value, cid, _, _ in phones.values():
        revoke(platform, cid, [device_key("imei", value)], reason="device_blocklisted")
        revoke(
            platform, cid, [device_key("imei", value)], reason="device_blocklisted"
        )  # redelivered: no change
    for name in ("unpaid", "paid"):
        _, _, lid, order = phones[name]
        got = await _get(client, s, buyer, order["id"])
        assert got["status"] == "cancelled" and got["cancel_reason"] == "certificate_revoked", (name, got)
        assert got["payment"]["status"] == "cancelled", (name, got["payment"])
        listing = await (await client.get(f"/v1/listings/{lid}", headers=auth(s, seller))).json()
        assert listing["status"] == "draft" and listing["unpublished_reason"] == "certificate_revoked"
        r = await client.post(f"/v1/listings/{lid}/publish", headers=auth(s, seller))
        assert r.status == 422 and (await r.json())["reason"] == "wipe_certificate_required"
        r = await client.post(f"/v1/orders/{order['id']}/ship", json={}, headers=auth(s, seller))
        assert r.status == 409
    payments = payments_of(platform["payments"])
    assert payments.ledger_problems() == []
    # shipped: the item has left; the order runs on and completes
    _, _, lid, order = phones["shipped"]
    assert (await _get(client, s, buyer, order["id"]))["status"] == "shipped"
    r = await client.post(f"/v1/orders/{order['id']}/confirm-receipt", headers=auth(s, buyer))
    assert r.status == 200
    platform.drain()
    assert (await (await client.get(f"/v1/listings/{lid}")).json())["status"] == "sold"
