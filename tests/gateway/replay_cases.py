"""The requests the idempotency-after-commit suite (test_idempotency_after_commit.py) loses the reply of: for each
keyed route, a record in the state the route acts on, made through the public API as users would (a few clocks
moved on in the database where a rule waits hours or days), and a valid request of it.

`ACTIONS` holds the actions on an existing resource (cancel, accept, weigh, ship, deliver, revoke ...), `UPDATES`
every route of another method that changes something (PATCH, PUT, DELETE); the routes that create something are
the suite's own `CASES`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from tests.security import factories as f
from tests.security.flows import accountant_of, new_id_number, pending_firm
from tests.security.harness import Api, User


@dataclass
class Case:
    user: User
    path: str
    body: Any
    status: int
    method: str = "POST"
    # who sends the retry, when the request changed who the caller may be (a logout revokes the caller's tokens)
    retry_as: Callable[[], Awaitable[User]] | None = None


async def firm_owner(api: Api) -> tuple[str, User]:
    from tests.security.flows import verified_firm

    return await verified_firm(api, await api.login())


async def with_role(api: Api, role: str) -> User:
    user = await api.login()
    r = await api.call(
        "POST", f"/v1/admin/users/{user.user_id}/roles", await api.admin(), json={"roles": [role]}
    )
    assert r.status == 200, r
    return await api.refresh(user)


async def settled(api: Api) -> tuple[str, User, str, str]:
    """A new settled pickup with its reverse invoice: (pickup, its resident, invoice, issuing firm). New each time:
    each side rates a pickup once, and an invoice has one red-letter invoice."""
    for cache in (f._INVOICES, f._SETTLED):  # keyed by id(topology): never trust an entry of another one
        cache.pop(id(api.topo), None)
    invoice, _seller, fid = await f._issued_invoice(api)
    pid, resident = f._SETTLED[id(api.topo)]
    return pid, resident, invoice, fid


async def wipe_tool(api: Api) -> Any:
    from tests.wipe.support import Tool

    tool = Tool()
    r = await api.call(
        "POST", "/v1/wipe/tools", await api.admin(), json={"name": "擦除站", "public_key": tool.public_b64}
    )
    assert r.status == 201, r
    tool.id = r.body["id"]
    return tool


async def published_listing(api: Api) -> tuple[str, User]:
    seller = await api.login()
    r = await api.call("POST", "/v1/listings", seller, json=f._listing_body())
    assert r.status == 201, r
    assert (await api.call("POST", f"/v1/listings/{r.body['id']}/publish", seller)).status == 200
    return r.body["id"], seller


def pickups_table(api: Api) -> Any:
    from services.booking.store import pickups

    return api.topo.platform["booking"].db, pickups


def _trades(api: Api) -> Any:
    from services.trading.store import trades

    return api.topo.platform["trading"].db, trades


WEIGHED = {
    "lines": [{"category": "paper.cardboard", "qty": "12.5"}, {"category": "metal.copper", "qty": "1.2"}]
}


async def _requested(api: Api) -> tuple[str, User]:
    resident = await api.login()
    return await f._book(api, resident), resident


async def _arrived(api: Api) -> tuple[str, User, User, str]:
    pid, resident, collector, fid = await f._accepted(api)
    assert (await api.call("POST", f"/v1/pickups/{pid}/arrive", collector)).status == 200
    return pid, resident, collector, fid


async def _weighed(api: Api) -> tuple[str, User, User, str]:
    pid, resident, collector, fid = await _arrived(api)
    r = await api.call("POST", f"/v1/pickups/{pid}/weigh", collector, json=WEIGHED)
    assert r.status == 200, r
    return pid, resident, collector, fid


# --- accounts -------------------------------------------------------------------------------------------------


async def action_logout(api: Api) -> Case:
    user = await api.login()
    return Case(user, "/v1/auth/logout", None, 200, retry_as=lambda: api.login(user.phone))


async def action_identity(api: Api) -> Case:
    body = {"real_name": "张三", "id_number": new_id_number()}
    return Case(await api.login(), "/v1/me/identity", body, 200)


async def action_approve(api: Api) -> Case:
    fid = await pending_firm(api, await api.login())
    return Case(await api.admin(), f"/v1/admin/verifications/firm/{fid}/approve", None, 200)


async def action_reject(api: Api) -> Case:
    fid = await pending_firm(api, await api.login())
    return Case(await api.admin(), f"/v1/admin/verifications/firm/{fid}/reject", {"reason": "材料不全"}, 200)


async def action_roles(api: Api) -> Case:
    user = await api.login()
    return Case(await api.admin(), f"/v1/admin/users/{user.user_id}/roles", {"roles": ["regulator"]}, 200)


async def action_suspend(api: Api) -> Case:
    user = await api.login()
    return Case(await api.admin(), f"/v1/admin/users/{user.user_id}/suspend", {"reason": "多次爽约"}, 200)


async def action_reinstate(api: Api) -> Case:
    user, admin = await api.login(), await api.admin()
    r = await api.call("POST", f"/v1/admin/users/{user.user_id}/suspend", admin, json={"reason": "多次爽约"})
    assert r.status == 200, r
    return Case(admin, f"/v1/admin/users/{user.user_id}/reinstate", None, 200)


# --- payments -------------------------------------------------------------------------------------------------


async def action_confirm_payment(api: Api) -> Case:
    order, buyer = await f._order(api)
    body = {"payment_method": "pm_card_visa"}
    return Case(buyer, f"/v1/payments/intents/{order['payment']['id']}/confirm", body, 200)


# --- booking --------------------------------------------------------------------------------------------------


async def action_cancel_pickup(api: Api) -> Case:
    pid, resident = await _requested(api)
    return Case(resident, f"/v1/pickups/{pid}/cancel", None, 200)


async def action_reschedule(api: Api) -> Case:
    pid, resident = await _requested(api)
    return Case(resident, f"/v1/pickups/{pid}/reschedule", {"window": f._window()}, 200)


async def action_accept(api: Api) -> Case:
    """A grab goes through the group-commit writer."""
    pid, _ = await _requested(api)
    collector, _ = await f._collector(api)
    return Case(collector, f"/v1/jobs/{pid}/accept", None, 200)


async def action_arrive(api: Api) -> Case:
    pid, _, collector, _ = await f._accepted(api)
    return Case(collector, f"/v1/pickups/{pid}/arrive", None, 200)


async def action_weigh(api: Api) -> Case:
    pid, _, collector, _ = await _arrived(api)
    return Case(collector, f"/v1/pickups/{pid}/weigh", WEIGHED, 200)


async def action_no_show(api: Api) -> Case:
    pid, _, collector, _ = await _arrived(api)
    db, pickups = pickups_table(api)
    long_ago = datetime.now(UTC) - timedelta(hours=2)  # the window opened and the wait is over
    with db.engine.begin() as conn:
        conn.execute(
            update(pickups).where(pickups.c.id == pid).values(window_start=long_ago, arrived_at=long_ago)
        )
    return Case(collector, f"/v1/pickups/{pid}/no-show", None, 200)


async def action_settle(api: Api) -> Case:
    pid, resident, _, _ = await _weighed(api)
    return Case(resident, f"/v1/pickups/{pid}/settle", None, 200)


async def action_dispute_pickup(api: Api) -> Case:
    pid, resident, _, _ = await _weighed(api)
    return Case(resident, f"/v1/pickups/{pid}/dispute", {"reason": "秤不准"}, 200)


async def action_retry_payout(api: Api) -> Case:
    from services.contracts.payments import PayoutFailed
    from tests.booking.support import publish

    pid, resident, _, _ = await settled(api)
    payout = (await api.call("GET", f"/v1/pickups/{pid}", resident)).body["payout"]
    failed = PayoutFailed(
        payout_id=payout["id"],
        reference_id=pid,
        amount_fen=payout["amount_fen"],
        reason="银行卡已注销",
        failed_at=datetime.now(UTC),
        returned=True,
    )
    publish(api.topo.platform, failed)  # what payments says of a payout the bank sent back
    r = await api.call("GET", f"/v1/pickups/{pid}", resident)
    assert r.body["payout"]["status"] == "failed", r
    return Case(resident, f"/v1/pickups/{pid}/payout/retry", None, 200)


# --- invoicing ------------------------------------------------------------------------------------------------


async def action_retry_invoice(api: Api) -> Case:
    """A reverse invoice blocked for want of the seller's consent, which has come since."""
    pid, resident, collector, fid = await f._accepted(api)
    owner = f._FIRM_OWNERS[fid]
    body = {"real_name": "张三", "id_number": new_id_number()}
    assert (await api.call("POST", "/v1/me/identity", resident, json=body)).status == 200
    body = {"kind": "recycler_filing", "number": "京商备2024001", "valid_until": "2099-12-31"}
    r = await api.call("POST", f"/v1/firms/{fid}/qualifications", owner, json=body)
    assert r.status == 201, r
    r = await api.call(
        "POST", f"/v1/admin/verifications/qualification/{r.body['id']}/approve", await api.admin()
    )
    assert r.status == 200, r
    api.drain()
    assert (await api.call("POST", f"/v1/pickups/{pid}/arrive", collector)).status == 200
    assert (await api.call("POST", f"/v1/pickups/{pid}/weigh", collector, json=WEIGHED)).status == 200
    assert (await api.call("POST", f"/v1/pickups/{pid}/settle", resident)).status == 200
    api.drain()
    accountant = await accountant_of(api, fid, owner)
    r = await api.call("GET", "/v1/invoices?status=blocked", accountant)
    [blocked] = [i for i in r.body["items"] if i["seller_id"] == resident.user_id]
    assert blocked["blocked_reason"] == "consent_missing", blocked
    r = await api.call("POST", "/v1/me/consents", resident, json={"kind": "reverse_invoicing"})
    assert r.status == 201, r
    api.drain()
    return Case(accountant, f"/v1/invoices/{blocked['id']}/retry", None, 200)


# --- trading --------------------------------------------------------------------------------------------------


async def _trade(api: Api, bidders: int = 1) -> tuple[str, User, list[User]]:
    """A lot sold to the best of `bidders` firms: (trade, seller, bidders from the lowest bid to the best)."""
    from services.trading.closing import run_due

    fid, seller = await firm_owner(api)
    lot = await f._lot(api, seller, fid)
    buyers = []
    for i in range(bidders):
        _, buyer = await firm_owner(api)
        r = await api.call(
            "POST", f"/v1/lots/{lot}/bids", buyer, json={"price_fen_per_t": 250_000 + i * 10_000}
        )
        assert r.status == 201, r
        buyers.append(buyer)
    run_due(api.topo.platform["trading"], datetime.now(UTC) + timedelta(hours=2))  # the closing task, now
    r = await api.call("GET", f"/v1/lots/{lot}", seller)
    assert r.body["trade_id"], r
    return r.body["trade_id"], seller, buyers


async def _delivered(api: Api, qty_t: str) -> tuple[str, User, User]:
    trade, seller, [buyer] = await _trade(api)
    body = {"weighbridge_ticket_no": "WB-2026-0001", "delivered_qty_t": qty_t}
    assert (await api.call("POST", f"/v1/trades/{trade}/delivery", seller, json=body)).status == 200
    return trade, seller, buyer


def _collection_deadline_passed(api: Api, trade: str) -> None:
    db, trades = _trades(api)
    with db.engine.begin() as conn:  # awarded eight days ago: the buyer never came to load (7 days)
        conn.execute(
            update(trades)
            .where(trades.c.id == trade)
            .values(awarded_at=datetime.now(UTC) - timedelta(days=8))
        )


async def _offered(api: Api) -> tuple[str, User]:
    """The lot offered to the runner-up after the winner's default: (the offered trade, the runner-up)."""
    trade, seller, [runner_up, _winner] = await _trade(api, bidders=2)
    _collection_deadline_passed(api, trade)
    r = await api.call(
        "POST", f"/v1/trades/{trade}/declare-default", seller, json={"reason": "买方逾期未提货"}
    )
    assert r.status == 200, r
    r = await api.call("GET", "/v1/trades?status=offered", runner_up)
    [offered] = r.body["items"]
    return offered["id"], runner_up


async def action_delivery(api: Api) -> Case:
    trade, seller, _ = await _trade(api)
    body = {"weighbridge_ticket_no": "WB-2026-0001", "delivered_qty_t": "20.000"}
    return Case(seller, f"/v1/trades/{trade}/delivery", body, 200)


async def action_accept_delivery(api: Api) -> Case:
    trade, _, buyer = await _delivered(api, "25.000")  # outside the tolerance: the buyer answers
    return Case(buyer, f"/v1/trades/{trade}/accept-delivery", None, 200)


async def action_dispute_delivery(api: Api) -> Case:
    trade, _, buyer = await _delivered(api, "25.000")
    return Case(buyer, f"/v1/trades/{trade}/dispute-delivery", {"reason": "过磅重量不符"}, 200)


async def action_declare_default(api: Api) -> Case:
    trade, seller, _ = await _trade(api)
    _collection_deadline_passed(api, trade)
    return Case(seller, f"/v1/trades/{trade}/declare-default", {"reason": "买方逾期未提货"}, 200)


async def action_accept_offer(api: Api) -> Case:
    trade, runner_up = await _offered(api)
    return Case(runner_up, f"/v1/trades/{trade}/accept-offer", None, 200)


async def action_decline_offer(api: Api) -> Case:
    trade, runner_up = await _offered(api)
    return Case(runner_up, f"/v1/trades/{trade}/decline-offer", None, 200)


# --- wipe -----------------------------------------------------------------------------------------------------


async def _certified(api: Api) -> tuple[Any, str]:
    """A tool and a certificate it signed."""
    from tests.wipe.support import json_report

    tool = await wipe_tool(api)
    operator = await with_role(api, "erasure_operator")
    r = await api.call("POST", "/v1/wipe/reports", operator, json=tool.submission(json_report()))
    assert r.status == 201, r
    return tool, r.body["certificate_id"]


async def action_revoke_tool(api: Api) -> Case:
    """Its reply counts the certificates it revoked, which the request records (idempotency.made)."""
    tool, _ = await _certified(api)
    return Case(await api.admin(), f"/v1/wipe/tools/{tool.id}/revoke", None, 200)


async def action_revoke_certificate(api: Api) -> Case:
    _, cert = await _certified(api)
    return Case(await api.admin(), f"/v1/wipe/certificates/{cert}/revoke", {"reason": "管理员撤销"}, 200)


# --- listings -------------------------------------------------------------------------------------------------


async def _paid_order(api: Api) -> tuple[str, User, User]:
    """(order, buyer, seller), the buyer's money held."""
    listing, seller = await published_listing(api)
    buyer = await api.login()
    r = await api.call("POST", "/v1/orders", buyer, json={"listing_id": listing})
    assert r.status == 201, r
    order = r.body["id"]
    api.drain()  # payments opens the order's payment
    payment = (await api.call("GET", f"/v1/orders/{order}", buyer)).body["payment"]["id"]
    pay = {"payment_method": "pm_card_visa"}
    assert (await api.call("POST", f"/v1/payments/intents/{payment}/confirm", buyer, json=pay)).status == 200
    api.drain()
    return order, buyer, seller


SHIPPED = {"carrier": "顺丰", "tracking_no": "SF1234567890"}


async def action_publish(api: Api) -> Case:
    seller = await api.login()
    r = await api.call("POST", "/v1/listings", seller, json=f._listing_body())
    assert r.status == 201, r
    return Case(seller, f"/v1/listings/{r.body['id']}/publish", None, 200)


async def action_withdraw(api: Api) -> Case:
    listing, seller = await published_listing(api)
    return Case(seller, f"/v1/listings/{listing}/withdraw", None, 200)


async def action_ship(api: Api) -> Case:
    order, _, seller = await _paid_order(api)
    return Case(seller, f"/v1/orders/{order}/ship", SHIPPED, 200)


async def action_confirm_receipt(api: Api) -> Case:
    order, buyer, seller = await _paid_order(api)
    assert (await api.call("POST", f"/v1/orders/{order}/ship", seller, json=SHIPPED)).status == 200
    api.drain()
    return Case(buyer, f"/v1/orders/{order}/confirm-receipt", None, 200)


async def action_cancel_order(api: Api) -> Case:
    order, buyer = await f._order(api)
    return Case(buyer, f"/v1/orders/{order['id']}/cancel", None, 200)


# route (POST path) -> the case that makes a valid request of it
ACTIONS: dict[str, Callable[[Api], Awaitable[Case]]] = {
    "/v1/auth/logout": action_logout,
    "/v1/me/identity": action_identity,
    "/v1/admin/verifications/{kind}/{id}/approve": action_approve,
    "/v1/admin/verifications/{kind}/{id}/reject": action_reject,
    "/v1/admin/users/{id}/roles": action_roles,
    "/v1/admin/users/{id}/suspend": action_suspend,
    "/v1/admin/users/{id}/reinstate": action_reinstate,
    "/v1/payments/intents/{id}/confirm": action_confirm_payment,
    "/v1/pickups/{id}/cancel": action_cancel_pickup,
    "/v1/pickups/{id}/reschedule": action_reschedule,
    "/v1/jobs/{id}/accept": action_accept,
    "/v1/pickups/{id}/arrive": action_arrive,
    "/v1/pickups/{id}/weigh": action_weigh,
    "/v1/pickups/{id}/no-show": action_no_show,
    "/v1/pickups/{id}/settle": action_settle,
    "/v1/pickups/{id}/dispute": action_dispute_pickup,
    "/v1/pickups/{id}/payout/retry": action_retry_payout,
    "/v1/invoices/{id}/retry": action_retry_invoice,
    "/v1/trades/{id}/delivery": action_delivery,
    "/v1/trades/{id}/accept-delivery": action_accept_delivery,
    "/v1/trades/{id}/dispute-delivery": action_dispute_delivery,
    "/v1/trades/{id}/declare-default": action_declare_default,
    "/v1/trades/{id}/accept-offer": action_accept_offer,
    "/v1/trades/{id}/decline-offer": action_decline_offer,
    "/v1/wipe/tools/{id}/revoke": action_revoke_tool,
    "/v1/wipe/certificates/{id}/revoke": action_revoke_certificate,
    "/v1/listings/{id}/publish": action_publish,
    "/v1/listings/{id}/withdraw": action_withdraw,
    "/v1/orders/{id}/ship": action_ship,
    "/v1/orders/{id}/confirm-receipt": action_confirm_receipt,
    "/v1/orders/{id}/cancel": action_cancel_order,
}


# --- updates: every PATCH, PUT and DELETE route ---------------------------------------------------------------


async def update_listing(api: Api) -> Case:
    """A published listing (its change is announced: `listing.updated`) repriced and described anew."""
    listing, seller = await published_listing(api)
    body = {"price_fen": 3900, "description": "三本一套，附赠书签"}
    return Case(seller, f"/v1/listings/{listing}", body, 200, method="PATCH")


# route ("METHOD path") -> the case that makes a valid request of it; a PATCH or PUT is also sent twice without a
# key (the second changes nothing)
UPDATES: dict[str, Callable[[Api], Awaitable[Case]]] = {
    "PATCH /v1/listings/{id}": update_listing,
}
