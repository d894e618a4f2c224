"""Fixture factories of the security suite: one per kind of owned record a route declares (`owner="pickup"`).

A factory makes one record of its kind through the public API (and, where a flow would take another service
minutes, with the event that service would publish), checks that its owner can read it, and returns it with an
*intruder*: another user who holds the same roles as the owner (so the route's role policy lets them through) but
has nothing to do with this record. The BOLA probe (test_owasp.py) calls every route declaring that kind as the
intruder and expects 403 or 404.

A new kind of owned record needs one factory here, registered with `@factory("<kind>")`; routes then only
declare `owner="<kind>"` (see docs/security.md). Records are made once per topology and kind (cached).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.kernel.ids import new_id
from tests.booking.support import SHANGHAI, booking_body
from tests.security.flows import accountant_of, new_id_number, verified_firm
from tests.security.harness import Api, User


@dataclass
class Made:
    id: str  # what the route's path parameter takes
    owner: User
    intruder: User


Factory = Callable[[Api], Awaitable[Made]]
FACTORIES: dict[str, Factory] = {}
_CACHE: dict[tuple[int, str], Made] = {}
_windows = itertools.count(0)


def factory(kind: str) -> Callable[[Factory], Factory]:
    def register(fn: Factory) -> Factory:
        FACTORIES[kind] = fn
        return fn

    return register


async def make(api: Api, kind: str) -> Made:
    key = (id(api.topo), kind)
    if key not in _CACHE:
        _CACHE[key] = await FACTORIES[kind](api)
    return _CACHE[key]


async def _ok(api: Api, path: str, user: User) -> dict:
    r = await api.call("GET", path, user)
    assert r.status == 200, f"the factory's record is not readable by its owner: {path} {r}"
    return r.body


# --- accounts ---------------------------------------------------------------------------------------------


@factory("firm")
async def a_pending_firm(api: Api) -> Made:
    from tests.security.flows import pending_firm

    owner, intruder = await api.login(), await api.login()
    await pending_firm(api, intruder)  # the intruder owns a firm too: they are no less a firm owner
    fid = await pending_firm(api, owner)
    await _ok(api, f"/v1/firms/{fid}", owner)
    return Made(fid, owner, intruder)


# --- booking ----------------------------------------------------------------------------------------------


def _window() -> dict[str, str]:
    """A distinct half-hour window in the coming days (slots have a capacity)."""
    n = next(_windows)
    day = (datetime.now(SHANGHAI) + timedelta(days=2 + n // 8)).date()
    start = datetime(day.year, day.month, day.day, 9 + n % 8, 0, tzinfo=SHANGHAI)
    return {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()}


async def _book(api: Api, resident: User) -> str:
    r = await api.call("POST", "/v1/pickups", resident, json=booking_body(win=_window()))
    assert r.status == 201, r
    return r.body["id"]


@factory("pickup")
async def a_requested_pickup(api: Api) -> Made:
    owner, intruder = await api.login(), await api.login()
    await _book(api, intruder)
    pid = await _book(api, owner)
    await _ok(api, f"/v1/pickups/{pid}", owner)
    return Made(pid, owner, intruder)


async def _collector(api: Api) -> tuple[User, str]:
    """A verified collector of a verified firm (booking has heard of both); returns the user and the firm id."""
    owner = await api.login()
    fid, owner = await verified_firm(api, owner)
    _FIRM_OWNERS[fid] = owner
    applicant = await api.login()
    r = await api.call(
        "POST",
        "/v1/collectors",
        applicant,
        json={
            "real_name": "王五",
            "id_number": new_id_number(),
            "firm_id": fid,
            "area": {"lat": 39.9087, "lng": 116.4605, "radius_km": 10},
            "categories": ["paper.cardboard", "metal.copper"],
        },
    )
    assert r.status == 201, r
    r = await api.call("POST", f"/v1/admin/verifications/collector/{r.body['id']}/approve", await api.admin())
    assert r.status == 200, r
    api.drain()
    return await api.refresh(applicant), fid


async def _accepted(api: Api) -> tuple[str, User, User, str]:
    """A pickup accepted by a collector: (pickup id, resident, collector, the collector's firm)."""
    resident = await api.login()
    collector, fid = await _collector(api)
    pid = await _book(api, resident)
    api.drain()
    r = await api.call("POST", f"/v1/jobs/{pid}/accept", collector)
    assert r.status == 200, r
    return pid, resident, collector, fid


@factory("accepted_pickup")
async def a_pickup_accepted_by_a_collector(api: Api) -> Made:
    pid, _resident, collector, _ = await _accepted(api)
    intruder, _ = await _collector(api)
    await _ok(api, f"/v1/pickups/{pid}", collector)
    return Made(pid, collector, intruder)


# --- invoicing --------------------------------------------------------------------------------------------


async def _issued_invoice(api: Api) -> tuple[str, User, str]:
    """A reverse invoice issued for a settled pickup: (invoice id, the seller, the issuing firm)."""
    if id(api.topo) in _INVOICES:
        return _INVOICES[id(api.topo)]
    pid, resident, collector, fid = await _accepted(api)
    admin = await api.admin()
    r = await api.call(
        "POST", "/v1/me/identity", resident, json={"real_name": "张三", "id_number": new_id_number()}
    )
    assert r.status == 200, r
    assert (
        await api.call("POST", "/v1/me/consents", resident, json={"kind": "reverse_invoicing"})
    ).status == 201
    owner_of_firm = await _firm_owner(api, fid)
    r = await api.call(
        "POST",
        f"/v1/firms/{fid}/qualifications",
        owner_of_firm,
        json={"kind": "recycler_filing", "number": "京商备2024001", "valid_until": "2099-12-31"},
    )
    assert r.status == 201, r
    assert (
        await api.call("POST", f"/v1/admin/verifications/qualification/{r.body['id']}/approve", admin)
    ).status == 200
    api.drain()
    assert (await api.call("POST", f"/v1/pickups/{pid}/arrive", collector)).status == 200
    r = await api.call(
        "POST",
        f"/v1/pickups/{pid}/weigh",
        collector,
        json={
            "lines": [
                {"category": "paper.cardboard", "qty": "12.5"},
                {"category": "metal.copper", "qty": "1.2"},
            ]
        },
    )
    assert r.status == 200, r
    assert (await api.call("POST", f"/v1/pickups/{pid}/settle", resident)).status == 200
    api.drain()
    r = await api.call("GET", "/v1/invoices", resident)
    assert r.status == 200 and r.body["items"], r
    _INVOICES[id(api.topo)] = (r.body["items"][0]["id"], resident, fid)
    _SETTLED[id(api.topo)] = (pid, resident)
    return _INVOICES[id(api.topo)]


_INVOICES: dict[int, tuple[str, User, str]] = {}  # topology -> (invoice id, seller, issuing firm)
_SETTLED: dict[int, tuple[str, User]] = {}  # topology -> (settled pickup id, its resident)
_FIRM_OWNERS: dict[str, User] = {}  # firm id -> its owner (latest tokens)


async def _firm_owner(api: Api, fid: str) -> User:
    return _FIRM_OWNERS[fid]


@factory("invoice")
async def a_residents_invoice(api: Api) -> Made:
    inv, seller, _ = await _issued_invoice(api)
    await _ok(api, f"/v1/invoices/{inv}", seller)
    return Made(inv, seller, await api.login())


@factory("firm_invoice")
async def an_invoice_of_a_firm(api: Api) -> Made:
    inv, _seller, fid = await _issued_invoice(api)
    accountant = await accountant_of(api, fid, await _firm_owner(api, fid))
    await _ok(api, f"/v1/invoices/{inv}", accountant)
    other_owner = await api.login()
    other_fid, other_owner = await verified_firm(api, other_owner)
    return Made(inv, accountant, await accountant_of(api, other_fid, other_owner))


@factory("seller")
async def a_seller(api: Api) -> Made:
    seller, intruder = await api.login(), await api.login()
    await _ok(api, f"/v1/sellers/{seller.user_id}/cap-ledger", seller)
    return Made(seller.user_id, seller, intruder)


async def _accountants(api: Api) -> tuple[str, User, User]:
    """Two verified firms' accountants: (the first firm, its accountant, the other firm's accountant)."""
    a, b = await api.login(), await api.login()
    fa, a = await verified_firm(api, a)
    fb, b = await verified_firm(api, b)
    return fa, await accountant_of(api, fa, a), await accountant_of(api, fb, b)


@factory("firm_books")
async def a_firms_books(api: Api) -> Made:
    fid, accountant, intruder = await _accountants(api)
    await _ok(api, f"/v1/admin/invoicing/issuers/{fid}", accountant)
    return Made(fid, accountant, intruder)


@factory("export")
async def a_tax_export(api: Api) -> Made:
    fid, accountant, intruder = await _accountants(api)
    r = await api.call(
        "POST", "/v1/tax/exports", accountant, json={"period": "2026-10", "format": "csv", "firm_id": fid}
    )
    assert r.status == 202, r
    await _ok(api, f"/v1/tax/exports/{r.body['id']}", accountant)
    return Made(r.body["id"], accountant, intruder)


# --- payments ---------------------------------------------------------------------------------------------


@factory("withdrawal")
async def a_withdrawal(api: Api) -> Made:
    from services.contracts.payments import PayoutRequested
    from tests.booking.support import publish

    owner, intruder = await api.login(), await api.login()
    # what booking publishes for a settled pickup: a small payout goes into the resident's wallet
    publish(
        api.topo.platform,
        PayoutRequested(
            payout_id=new_id("po"),
            payee_user_id=owner.user_id,
            amount_fen=500,
            purpose="pickup",
            reference_id=new_id("pk"),
            requested_by="booking",
            requested_at=datetime.now(UTC),
        ),
    )
    r = await api.call("POST", "/v1/payments/withdrawals", owner, json={})
    assert r.status == 201, r
    await _ok(api, f"/v1/payments/withdrawals/{r.body['id']}", owner)
    return Made(r.body["id"], owner, intruder)


@factory("settled_pickup")
async def a_settled_pickup(api: Api) -> Made:
    await _issued_invoice(api)  # the whole flow: booked, accepted, weighed, settled, invoiced
    pid, resident = _SETTLED[id(api.topo)]
    await _ok(api, f"/v1/stats/carbon/pickups/{pid}", resident)
    return Made(pid, resident, await api.login())


# --- trading ----------------------------------------------------------------------------------------------


async def _firm(api: Api) -> tuple[str, User]:
    owner = await api.login()
    return await verified_firm(api, owner)


async def _lot(api: Api, seller: User, fid: str) -> str:
    r = await api.call(
        "POST",
        "/v1/lots",
        seller,
        json={
            "category": "metal.steel",
            "grade": "重废 HMS1",
            "qty_t": "20.000",
            "city_code": "110105",
            "reserve_price_fen_per_t": 250_000,
            "auction": "ascending",
            "ends_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "min_increment_fen_per_t": 1_000,
            "source": "purchase",
            "purchase_ref": "购销合同 2026-001",
            "firm_id": fid,
        },
    )
    assert r.status == 201, r
    return r.body["id"]


@factory("lot")
async def a_lot(api: Api) -> Made:
    fid, seller = await _firm(api)
    _, intruder = await _firm(api)
    lot = await _lot(api, seller, fid)
    await _ok(api, f"/v1/lots/{lot}/trace", seller)
    return Made(lot, seller, intruder)


@factory("trade")
async def an_awarded_trade(api: Api) -> Made:
    from services.trading.closing import run_due

    fid, seller = await _firm(api)
    _, buyer = await _firm(api)
    _, intruder = await _firm(api)
    lot = await _lot(api, seller, fid)
    r = await api.call("POST", f"/v1/lots/{lot}/bids", buyer, json={"price_fen_per_t": 250_000})
    assert r.status == 201, r
    run_due(api.topo.platform["trading"], datetime.now(UTC) + timedelta(hours=2))  # the closing task, now
    r = await _ok(api, f"/v1/lots/{lot}", seller)
    assert r["trade_id"], r
    await _ok(api, f"/v1/trades/{r['trade_id']}", seller)
    return Made(r["trade_id"], seller, intruder)


# --- listings (二手) ----------------------------------------------------------------------------------------


def _listing_body() -> dict:
    return {
        "title": "《三体》全集 刘慈欣 九成新",
        "description": "三本一套",
        "category": "books.general",
        "condition": "like_new",
        "price_fen": 4500,
        "city_code": "110105",
    }


@factory("listing")
async def a_draft_listing(api: Api) -> Made:
    seller, intruder = await api.login(), await api.login()
    r = await api.call("POST", "/v1/listings", seller, json=_listing_body())
    assert r.status == 201, r
    await _ok(api, f"/v1/listings/{r.body['id']}", seller)
    return Made(r.body["id"], seller, intruder)


async def _order(api: Api) -> tuple[dict, User]:
    seller, buyer = await api.login(), await api.login()
    r = await api.call("POST", "/v1/listings", seller, json=_listing_body())
    assert r.status == 201, r
    lid = r.body["id"]
    assert (await api.call("POST", f"/v1/listings/{lid}/publish", seller)).status == 200
    r = await api.call("POST", "/v1/orders", buyer, json={"listing_id": lid})
    assert r.status == 201, r
    api.topo.platform.drain()  # payments opens the order's payment from listings' event
    return r.body, buyer


@factory("order")
async def an_order(api: Api) -> Made:
    order, buyer = await _order(api)
    await _ok(api, f"/v1/orders/{order['id']}", buyer)
    return Made(order["id"], buyer, await api.login())


@factory("payment")
async def an_orders_payment(api: Api) -> Made:
    order, buyer = await _order(api)
    await _ok(api, f"/v1/payments/intents/{order['payment']['id']}", buyer)
    return Made(order["payment"]["id"], buyer, await api.login())
