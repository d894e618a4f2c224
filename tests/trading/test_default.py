"""Buyer default on the API, with this test playing payments (trading's requests read from its outbox, payments'
reports published onto the real bus): the seller declares a winner that never came to load; its deposit is captured
for the seller less the fee; the next-best bidder is offered the lot and accepts; it does not pay in time and the
deadline job declares it in default; nobody is left, the lot goes back to the seller, whose intake is free again; the
trace shows every round. Times before the API's "now" are set through the handlers' `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.contracts.payments import HoldCaptured
from services.kernel.auth import Principal, issue_token
from services.trading import handlers
from services.trading.closing import run_due
from services.trading.defaults import run_deadlines
from services.trading.deposits import request_deposit
from services.trading.domain.commands import ListLot, PlaceBid
from services.trading.settings import configure

from .support import (
    app_client,
    firm_auth,
    firm_events,
    firm_principal,
    lot_body,
    owner_of,
    publish,
    settled_intake,
)
from .test_money import hold_held, requests_of


async def test_default_forfeits_the_deposit_offers_the_runner_up_and_returns_the_lot(
    aiohttp_client, sqlite_settings
):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    rt = platform["trading"]
    publish(
        platform,
        *firm_events("fm_seller"),
        *firm_events("fm_a"),
        *firm_events("fm_b"),
        settled_intake("fm_seller", "25000"),
    )
    seller, a, b = firm_auth(s, "fm_seller"), firm_auth(s, "fm_a"), firm_auth(s, "fm_b")
    t0 = datetime.now(UTC) - timedelta(hours=3)
    lot = handlers.list_lot(
        rt,
        firm_principal("fm_seller"),
        ListLot(**lot_body(deposit_fen=100_000, ends_at=(t0 + timedelta(hours=1)).isoformat())),
        now=t0,
    )["id"]
    deposit = {}
    for firm in ("fm_a", "fm_b"):
        deposit[firm] = request_deposit(rt, firm_principal(firm), lot, None, now=t0)["hold_request_id"]
        hold_held(platform, deposit[firm], lot, 100_000)
    for firm, price in (("fm_a", 260_000), ("fm_b", 270_000)):
        handlers.place_bid(
            rt, firm_principal(firm), lot, PlaceBid(price_fen_per_t=price), now=t0 + timedelta(minutes=5)
        )
    assert run_due(rt, t0 + timedelta(hours=1)) == {"awarded": 1, "unsold": 0}  # awarded two hours ago
    platform.drain()
    first = (await (await client.get(f"/v1/lots/{lot}", headers=b)).json())["trade_id"]

    # not before the collection deadline (7 days by default), and only the seller (or an admin)
    r = await client.post(
        f"/v1/trades/{first}/declare-default", json={"reason": "买方逾期未提货"}, headers=seller
    )
    problem = await r.json()
    assert r.status == 422 and problem["reason"] == "deadline_not_passed", problem
    assert datetime.fromisoformat(problem["deadline_at"]) == t0 + timedelta(hours=1, days=7)
    r = await client.post(f"/v1/trades/{first}/declare-default", json={"reason": "x"}, headers=seller)
    assert (
        r.status == 400 and r.content_type == "application/problem+json"
    )  # a reason of 2 characters at least
    assert (
        await client.post(f"/v1/trades/{first}/declare-default", json={"reason": "不付款"}, headers=b)
    ).status == 403

    configure(rt, collect_deadline_s=3600)
    r = await client.post(
        f"/v1/trades/{first}/declare-default", json={"reason": "买方逾期未提货"}, headers=seller
    )
    view = await r.json()
    assert r.status == 200, view
    assert view["status"] == "defaulted"
    assert {k: view["default"][k] for k in ("reason", "note", "deposit_forfeited_fen")} == {
        "reason": "declared_by_seller",
        "note": "买方逾期未提货",
        "deposit_forfeited_fen": 100_000,
    }
    again = await client.post(f"/v1/trades/{first}/declare-default", json={"reason": "再次"}, headers=seller)
    assert again.status == 200 and (await again.json())["default"]["note"] == "买方逾期未提货"  # once
    platform.drain()

    # the deposit is captured for the seller less the fee (0.5 %); the winner's only
    captures = [
        c
        for c in requests_of(platform, "hold.capture_requested.v1")
        if c["hold_request_id"] == deposit["fm_b"]
    ]
    assert [(c["payee_user_id"], c["payee_kind"], c["fee_fen"]) for c in captures] == [
        (owner_of("fm_seller"), "firm", 500)
    ]
    publish(
        platform,
        HoldCaptured(
            hold_request_id=deposit["fm_b"],
            hold_id="ho_dep_b",
            reference_id=lot,
            captured_fen=100_000,
            fee_fen=500,
            released_fen=99_500,
            payout_id="po_dep_b",
            captured_at=datetime.now(UTC),
        ),
    )
    dep = await (await client.get(f"/v1/lots/{lot}/deposit", headers=b)).json()
    assert (dep["status"], dep["forfeit_fee_fen"]) == ("forfeited", 500)

    # the runner-up is offered the lot at its own bid
    [defaulted] = requests_of(platform, "trade.defaulted.v1")
    assert (defaulted["trade_id"], defaulted["reason"], defaulted["deposit_forfeited_fen"]) == (
        first,
        "declared_by_seller",
        100_000,
    )
    [offered] = requests_of(platform, "trade.offered.v1")
    second = offered["trade_id"]
    assert (offered["buyer_firm_id"], offered["price_fen_per_t"], offered["round"]) == ("fm_a", 260_000, 2)
    assert (await (await client.get(f"/v1/lots/{lot}", headers=a)).json())["trade_id"] == second
    view = await (await client.get(f"/v1/trades/{second}", headers=a)).json()
    assert (view["status"], view["awarded_at"], view["round"]) == ("offered", None, 2)
    assert (await client.post(f"/v1/trades/{second}/accept-offer", headers=b)).status == 403
    # fm_a's accountant (who owns a firm of its own) reads the offer but does not answer it: the owner does
    bookkeeper = Principal(
        "u_bookkeeper",
        frozenset({"firm", "accountant"}),
        frozenset({"fm_own", "fm_a"}),
        frozenset({("fm_own", "owner"), ("fm_a", "accountant")}),
    )
    member = {"Authorization": "Bearer " + issue_token(sqlite_settings, bookkeeper)}
    assert (await client.get(f"/v1/trades/{second}", headers=member)).status == 200
    for answer in ("accept-offer", "decline-offer"):
        assert (await client.post(f"/v1/trades/{second}/{answer}", headers=member)).status == 403
    r = await client.post(f"/v1/trades/{second}/accept-offer", headers=a)
    assert r.status == 200 and (await r.json())["status"] == "awarded"
    assert (
        await client.post(f"/v1/trades/{second}/accept-offer", headers=a)
    ).status == 200  # the same answer
    assert (await client.post(f"/v1/trades/{second}/decline-offer", headers=a)).status == 409
    assert [x["trade_id"] for x in requests_of(platform, "trade.awarded.v1")] == [first, second]

    # delivered within the tolerance: the payment is requested ...
    r = await client.post(
        f"/v1/trades/{second}/delivery",
        json={"weighbridge_ticket_no": "WB-2", "delivered_qty_t": "20.100"},
        headers=seller,
    )
    assert r.status == 200 and (await r.json())["settlement"]["payment_status"] == "requested"
    assert run_deadlines(rt) == {"defaulted": 0, "lapsed": 0}  # ... and the buyer has 72 hours
    # ... which pass: the deadline job declares the default (twice run: once done)
    later = datetime.now(UTC) + timedelta(hours=72, seconds=1)
    assert run_deadlines(rt, later) == {"defaulted": 1, "lapsed": 0}
    assert run_deadlines(rt, later) == {"defaulted": 0, "lapsed": 0}
    platform.drain()
    view = await (await client.get(f"/v1/trades/{second}", headers=seller)).json()
    assert (view["status"], view["default"]["reason"], view["default"]["deposit_forfeited_fen"]) == (
        "defaulted",
        "payment_overdue",
        0,  # its deposit went back at the close: a second-chance buyer risks none
    )
    assert view["settlement"]["payment_status"] == "cancelled"
    cancels = [c["hold_request_id"] for c in requests_of(platform, "hold.cancel_requested.v1")]
    assert cancels.count(f"hr_{second}") == 1
    # nobody is left: the lot is back with the seller
    assert [x["lot_id"] for x in requests_of(platform, "lot.returned.v1")] == [lot]
    assert (await (await client.get(f"/v1/lots/{lot}", headers=seller)).json())["status"] == "returned"

    tr = await (await client.get(f"/v1/lots/{lot}/trace", headers=a)).json()
    assert [
        (x["round"], x["buyer_firm_id"], x["status"], (x["default"] or {}).get("reason"))
        for x in tr["rounds"]
    ] == [
        (1, "fm_b", "defaulted", "declared_by_seller"),
        (2, "fm_a", "defaulted", "payment_overdue"),
    ]
    assert [x["released"] for x in tr["intake"]] == [True]
    assert tr["reconciliation"]["covered"] and tr["reconciliation"]["delivered_qty_t"] is None

    # its intake is free again: the seller lists the steel anew
    r = await client.post("/v1/lots", json=lot_body(qty_t="25.000"), headers=seller)
    assert r.status == 201, await r.json()
    platform.stop()


async def test_a_forfeit_the_provider_let_go_first_releases_the_deposit_and_forfeits_nothing(
    aiohttp_client, sqlite_settings
):
    """With the real payments service: the winner's deposit authorisation lapses at the provider before the seller
    declares the default. Payments cannot capture it: it reports the hold cancelled and refuses the capture; the
    deposit is released, the trade forfeited nothing, and no consumer parks anything."""
    from services.payments.handlers import payments_of
    from services.payments.hold_requests import hold_requests_of

    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, services=["payments", "trading"])
    rt = platform["trading"]
    publish(platform, *firm_events("fm_seller"), *firm_events("fm_b"), settled_intake("fm_seller", "25000"))
    t0 = datetime.now(UTC) - timedelta(hours=3)
    lot = handlers.list_lot(
        rt,
        firm_principal("fm_seller"),
        ListLot(**lot_body(deposit_fen=100_000, ends_at=(t0 + timedelta(hours=1)).isoformat())),
        now=t0,
    )["id"]
    hr = request_deposit(rt, firm_principal("fm_b"), lot, None, now=t0)["hold_request_id"]
    platform.drain()
    requests = hold_requests_of(platform["payments"])
    assert requests.confirm(hr, owner_of("fm_b"), "pm_card_visa")["status"] == "requires_capture"
    platform.drain()
    handlers.place_bid(
        rt, firm_principal("fm_b"), lot, PlaceBid(price_fen_per_t=270_000), now=t0 + timedelta(minutes=5)
    )
    assert run_due(rt, t0 + timedelta(hours=1)) == {"awarded": 1, "unsold": 0}
    platform.drain()
    b = firm_auth(s, "fm_b")
    trade = (await (await client.get(f"/v1/lots/{lot}", headers=b)).json())["trade_id"]

    payments = payments_of(platform["payments"])
    hold = payments.get_hold(requests.get(hr, "", admin=True)["hold_id"])
    payments.provider.expire_authorisation(hold.provider_ref)
    payments.pull_provider_events()
    configure(rt, collect_deadline_s=3600)
    r = await client.post(
        f"/v1/trades/{trade}/declare-default",
        json={"reason": "买方逾期未提货"},
        headers=firm_auth(s, "fm_seller"),
    )
    assert r.status == 200 and (await r.json())["default"]["deposit_forfeited_fen"] == 100_000
    platform.drain()

    assert sum(r.dead_lettered for x in platform.runtimes.values() for r in x.runners) == 0
    assert requests.get(hr, "", admin=True)["status"] == "cancelled"
    assert (await (await client.get(f"/v1/lots/{lot}/deposit", headers=b)).json())["status"] == "released"
    view = await (await client.get(f"/v1/trades/{trade}", headers=b)).json()
    assert (view["status"], view["default"]["deposit_forfeited_fen"]) == ("defaulted", 0)
    assert payments.ledger_problems() == []
