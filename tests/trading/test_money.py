"""Deposits and settlement through payments' holds, with this test playing payments: trading's requests are read
from its outbox, payments' reports are published onto the real bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from services.contracts.payments import HoldAuthorised, HoldCancelled, HoldCaptured, HoldOpened
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t
from services.trading.closing import run_due
from services.trading.store import lots

from .support import app_client, firm_auth, firm_events, lot_body, owner_of, publish, settled_intake

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def requests_of(platform, type_suffix: str) -> list[dict]:
    with platform["trading"].db.session() as s:
        rows = s.execute(
            select(outbox_t.c.payload).where(outbox_t.c.type.like(f"%{type_suffix}")).order_by(outbox_t.c.seq)
        ).scalars()
        return [Envelope.from_bytes(p).data for p in rows]


def hold_held(platform, hold_request_id: str, reference_id: str, amount: int) -> None:
    """What payments reports once the payer has confirmed: opened, then authorised."""
    publish(
        platform,
        HoldOpened(
            hold_request_id=hold_request_id,
            payment_id=hold_request_id,
            amount_fen=amount,
            reference_id=reference_id,
            opened_at=NOW,
        ),
        HoldAuthorised(
            hold_request_id=hold_request_id,
            hold_id="ho_" + hold_request_id,
            amount_fen=amount,
            reference_id=reference_id,
            authorised_at=NOW,
        ),
    )


async def test_deposits_settlement_and_the_price_feed(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    publish(
        platform,
        *firm_events("fm_seller"),
        *firm_events("fm_a"),
        *firm_events("fm_b"),
        settled_intake("fm_seller", "25000"),
    )
    seller, a, b = firm_auth(s, "fm_seller"), firm_auth(s, "fm_a"), firm_auth(s, "fm_b")
    lot_id = (
        await (await client.post("/v1/lots", json=lot_body(deposit_fen=100_000), headers=seller)).json()
    )["id"]

    # no deposit, no bid
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 260_000}, headers=a)
    assert r.status == 422 and (await r.json())["reason"] == "deposit_required"
    assert (await client.post(f"/v1/lots/{lot_id}/deposit", json={}, headers=seller)).status == 422  # own lot
    deposits = {}
    for firm, h in (("fm_a", a), ("fm_b", b)):
        r = await client.post(f"/v1/lots/{lot_id}/deposit", json={}, headers=h)
        dep = await r.json()
        assert r.status == 202 and dep["status"] == "requested" and dep["amount_fen"] == 100_000
        again = await (await client.post(f"/v1/lots/{lot_id}/deposit", json={}, headers=h)).json()
        assert again["hold_request_id"] == dep["hold_request_id"]  # asked once
        deposits[firm] = dep["hold_request_id"]
    asked = requests_of(platform, "hold.requested.v1")
    assert [(x["hold_request_id"], x["payer_user_id"], x["amount_fen"]) for x in asked] == [
        (deposits["fm_a"], owner_of("fm_a"), 100_000),
        (deposits["fm_b"], owner_of("fm_b"), 100_000),
    ]
    hold_held(platform, deposits["fm_a"], lot_id, 100_000)
    dep = await (await client.get(f"/v1/lots/{lot_id}/deposit", headers=a)).json()
    assert dep["status"] == "held"
    assert (
        await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 260_000}, headers=a)
    ).status == 201
    # fm_b never confirmed its deposit: still no bid
    r = await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 270_000}, headers=b)
    assert (await r.json())["reason"] == "deposit_required"

    # the close: fm_a wins; fm_b's deposit (never confirmed) is given back, fm_a's stays until settlement
    run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2))
    cancels = requests_of(platform, "hold.cancel_requested.v1")
    assert [x["hold_request_id"] for x in cancels] == [deposits["fm_b"]]
    trade_id = (await (await client.get(f"/v1/lots/{lot_id}", headers=a)).json())["trade_id"]

    # delivery within tolerance → the buyer's payment is asked for
    r = await client.post(
        f"/v1/trades/{trade_id}/delivery",
        json={"weighbridge_ticket_no": "W-1", "delivered_qty_t": "20.200"},
        headers=seller,
    )
    trade = await r.json()
    amount, fee = trade["amount_fen"], trade["delivery"]["fee_fen"]
    assert amount == 5_252_000 and fee == 26_260
    pay = requests_of(platform, "hold.requested.v1")[-1]
    assert pay == pay | {
        "hold_request_id": f"hr_{trade_id}",
        "payer_user_id": owner_of("fm_a"),
        "amount_fen": amount,
        "reference_id": trade_id,
        "requested_by": "trading",
    }
    hold_held(platform, f"hr_{trade_id}", trade_id, amount)
    capture = requests_of(platform, "hold.capture_requested.v1")
    assert len(capture) == 1 and capture[0] == capture[0] | {
        "hold_request_id": f"hr_{trade_id}",
        "payee_user_id": owner_of("fm_seller"),
        "payee_kind": "firm",
        "fee_fen": fee,
    }
    captured = HoldCaptured(
        hold_request_id=f"hr_{trade_id}",
        hold_id="ho_x",
        reference_id=trade_id,
        captured_fen=amount,
        fee_fen=fee,
        released_fen=amount - fee,
        payout_id="po_x",
        captured_at=NOW,
    )
    publish(platform, captured, captured.model_copy())  # a redelivery, under a new event id
    trade = await (await client.get(f"/v1/trades/{trade_id}", headers=a)).json()
    assert trade["status"] == "settled"
    assert trade["settlement"] | {"settled_at": None, "requested_at": None} == {
        "payment_id": f"hr_{trade_id}",
        "payment_status": "captured",
        "amount_fen": amount,
        "fee_fen": fee,
        "seller_receives_fen": amount - fee,
        "payout_id": "po_x",
        "settled_at": None,
        "requested_at": None,
    }
    settled = requests_of(platform, "trade.settled.v1")
    assert len(settled) == 1 and settled[0] == settled[0] | {
        "trade_id": trade_id,
        "buyer_firm_id": "fm_a",
        "delivered_t": "20.200",
        "price_fen_per_t": 260_000,
        "amount_fen": amount,
        "fee_fen": fee,
        "related_party": False,
        "category": "metal.steel",
    }
    # the winner's deposit goes back now
    assert [x["hold_request_id"] for x in requests_of(platform, "hold.cancel_requested.v1")] == [
        deposits["fm_b"],
        deposits["fm_a"],
    ]
    publish(
        platform,
        HoldCancelled(hold_request_id=deposits["fm_a"], reference_id=lot_id, reason="x", cancelled_at=NOW),
    )
    assert (await (await client.get(f"/v1/lots/{lot_id}/deposit", headers=a)).json())["status"] == "released"


async def test_no_deposit_is_asked_for_a_lot_that_has_ended(aiohttp_client, sqlite_settings):
    """Past its end time a lot takes no bid, even before the closing job has run: nor a deposit (money held for
    a bid that cannot come), 422 `lot_closed` `ended` as for a bid, and no hold is requested."""
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    publish(platform, *firm_events("fm_seller"), *firm_events("fm_a"), settled_intake("fm_seller", "30000"))
    seller, a = firm_auth(sqlite_settings, "fm_seller"), firm_auth(sqlite_settings, "fm_a")
    lot_id = (
        await (await client.post("/v1/lots", json=lot_body(deposit_fen=100_000), headers=seller)).json()
    )["id"]
    with platform["trading"].db.engine.begin() as conn:  # its end has passed; the job has not closed it yet
        conn.execute(
            update(lots).where(lots.c.id == lot_id).values(ends_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    r = await client.post(f"/v1/lots/{lot_id}/deposit", json={}, headers=a)
    out = await r.json()
    assert r.status == 422 and (out["reason"], out["current_state"]) == ("lot_closed", "ended"), out
    assert (await client.get(f"/v1/lots/{lot_id}/deposit", headers=a)).status == 404
    assert not requests_of(platform, "hold.requested.v1")
