"""The whole pickup on the public API: book → accept → arrive → weigh → settle → invoice → payout → paid."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.booking.store import pickups
from services.contracts.invoicing import InvoiceBlocked, InvoiceIssued
from services.contracts.payments import PayoutFailed, PayoutPaid
from services.kernel.bus.port import EventBus
from services.kernel.events import Envelope

from .support import CITY, app_client, auth, booking_body, publish, uid, verify_collector


def payout_requests(bus: EventBus, pickup_id: str) -> list[dict]:
    out = []
    for p in range(bus.partitions("payments.payout")):
        for r in bus.read("payments.payout", p, 0, 10_000):
            env = Envelope.from_bytes(r.value)
            if (
                env.type == "cn.recycle.payments.payout.requested.v1"
                and env.data["reference_id"] == pickup_id
            ):
                out.append(env.data)
    return out


def settled_events(bus: EventBus, pickup_id: str) -> list[dict]:
    out = []
    for p in range(bus.partitions("booking.pickup")):
        for r in bus.read("booking.pickup", p, 0, 10_000):
            env = Envelope.from_bytes(r.value)
            if env.type == "cn.recycle.booking.pickup.settled.v1" and env.subject == pickup_id:
                out.append(env.data)
    return out


async def _to_weighed(platform, client, settings, resident, collector):  # noqa: ANN001, ANN202
    r = await client.post("/v1/pickups", json=booking_body(), headers=auth(settings, resident, "resident"))
    assert r.status == 201, await r.text()
    booked = await r.json()
    pid = booked["id"]
    assert booked["status"] == "requested"
    # the quote: national reference prices until the index has data (黄纸板 1.40/kg, 废铜 45.00/kg)
    lines = {ln["category"]: ln for ln in booked["quote"]["lines"]}
    assert (
        lines["paper.cardboard"]["unit_price_fen"] == 140 and lines["paper.cardboard"]["amount_fen"] == 1750
    )
    assert lines["metal.copper"]["est_qty"] == "1.200" and lines["metal.copper"]["amount_fen"] == 5400
    assert booked["quote"]["total_fen"] == 7150
    assert booked["address"]["text"].startswith("朝阳区")

    c_auth = auth(settings, collector, "collector")
    jobs = await (await client.get("/v1/jobs", headers=c_auth)).json()
    job = next(j for j in jobs["items"] if j["id"] == pid)
    assert job["district"] == "北京市 朝阳区" and "address" not in job and "lat" not in job
    r = await client.post(f"/v1/jobs/{pid}/accept", headers=c_auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["status"] == "accepted" and body["collector_id"] == "cl_" + collector
    assert body["address"]["text"].startswith("朝阳区")  # revealed to the collector who accepted
    r = await client.post(f"/v1/pickups/{pid}/arrive", headers=c_auth)
    assert r.status == 200 and (await r.json())["status"] == "arrived"
    r = await client.post(
        f"/v1/pickups/{pid}/weigh",
        headers=c_auth,
        json={
            "lines": [
                {"category": "paper.cardboard", "qty": "15.000"},
                {"category": "metal.copper", "qty": "1.1"},
            ],
            "scale_reading": "电子秤 #A12: 15.000 kg / 1.100 kg",
            "reason": "纸板比预估多",
        },
    )
    assert r.status == 200, await r.text()
    w = await r.json()
    assert w["status"] == "weighed"
    wl = {ln["category"]: ln for ln in w["lines"]}
    assert wl["paper.cardboard"]["amount_fen"] == 2100 and wl["metal.copper"]["amount_fen"] == 4950
    assert wl["metal.copper"]["est_qty"] == "1.200"  # the estimate stays beside the result
    assert w["total_fen"] == 7050 and w["quote"]["total_fen"] == 7150 and w["weigh_reason"] == "纸板比预估多"
    return pid


async def test_full_flow_with_invoice_and_payout(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings, invoicing_enabled=True)
    platform.drain()  # reference prices reach booking's copy
    resident, collector = uid("res"), uid("col")
    verify_collector(platform, collector)
    pid = await _to_weighed(platform, client, settings, resident, collector)
    r_auth = auth(settings, resident, "resident")

    r = await client.post(f"/v1/pickups/{pid}/settle", headers=r_auth)
    assert r.status == 200, await r.text()
    s = await r.json()
    assert s["status"] == "settled"
    assert s["payout"] == {
        "id": "po_" + pid,
        "amount_fen": 7050,
        "status": "pending",
        "attempts": 0,
        "reason": None,
    }
    platform.drain()
    [settled] = settled_events(platform.bus, pid)
    assert (
        settled["resident_id"] == resident
        and settled["firm_id"] == "fm_test"
        and settled["total_fen"] == 7050
    )
    assert {ln["category"]: (ln["tax_code"], ln["unit"], ln["qty"]) for ln in settled["lines"]} == {
        "paper.cardboard": ("1080101010000000000", "kg", "15.000"),
        "metal.copper": ("1080103020000000000", "kg", "1.100"),
    }
    assert payout_requests(platform.bus, pid) == []  # waiting for invoicing

    issued = InvoiceIssued(
        invoice_id="inv_1",
        number="00000001",
        pickup_id=pid,
        issuer_firm_id="fm_test",
        seller_id=resident,
        kind="blue",
        total_fen=7050,
        vat_fen=68,
        surcharges_fen=0,
        iit_fen=35,
        withheld_fen=103,
        issued_at=datetime.now(UTC),
    )
    publish(platform, issued)
    publish(platform, issued)  # a redelivery (another event id): still one payout
    [req] = payout_requests(platform.bus, pid)
    assert (
        req["payout_id"] == "po_" + pid
        and req["amount_fen"] == 7050 - 103
        and req["payee_user_id"] == resident
    )

    view = await (await client.get(f"/v1/pickups/{pid}", headers=r_auth)).json()
    assert view["withheld_fen"] == 103 and view["net_fen"] == 6947 and view["gross_fen"] == 7050
    assert view["payout"]["status"] == "pending" and view["payout"]["amount_fen"] == 6947
    assert view["invoice"] == {"status": "issued", "id": "inv_1"}

    publish(
        platform,
        PayoutPaid(
            payout_id="po_" + pid,
            reference_id=pid,
            amount_fen=6947,
            provider_ref="sb_1",
            paid_at=datetime.now(UTC),
        ),
    )
    view = await (await client.get(f"/v1/pickups/{pid}", headers=r_auth)).json()
    assert view["payout"]["status"] == "paid" and view["payout"]["amount_fen"] == 6947
    assert view["withheld_fen"] == 103 and view["net_fen"] == 6947

    # both sides rate, once each
    c_auth = auth(settings, collector, "collector")
    r = await client.post(f"/v1/pickups/{pid}/rating", headers=r_auth, json={"score": 5, "comment": "准时"})
    assert r.status == 201
    assert (await client.post(f"/v1/pickups/{pid}/rating", headers=r_auth, json={"score": 1})).status == 409
    assert (await client.post(f"/v1/pickups/{pid}/rating", headers=c_auth, json={"score": 4})).status == 201
    view = await (await client.get(f"/v1/pickups/{pid}", headers=c_auth)).json()
    assert [(x["rater_role"], x["score"]) for x in view["ratings"]] == [("collector", 4), ("resident", 5)]


async def test_blocked_invoice_pays_gross_and_failed_payout_is_retried(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings, invoicing_enabled=True)
    resident, collector = uid("res"), uid("col")
    verify_collector(platform, collector)
    pid = await _to_weighed(platform, client, settings, resident, collector)
    r_auth = auth(settings, resident, "resident")
    assert (await client.post(f"/v1/pickups/{pid}/settle", headers=r_auth)).status == 200
    platform.drain()
    publish(
        platform,
        InvoiceBlocked(
            invoice_id="inv_b",
            pickup_id=pid,
            issuer_firm_id="fm_test",
            seller_id=resident,
            reason="seller_unverified",
            detail="no identity",
            blocked_at=datetime.now(UTC),
        ),
    )
    [req] = payout_requests(platform.bus, pid)
    assert req["amount_fen"] == 7050
    # retrying a payout that has not failed is a conflict
    r = await client.post(f"/v1/pickups/{pid}/payout/retry", headers=r_auth)
    assert r.status == 409 and (await r.json())["payout_status"] == "pending"
    publish(
        platform,
        PayoutFailed(
            payout_id="po_" + pid,
            reference_id=pid,
            amount_fen=7050,
            reason="card closed",
            failed_at=datetime.now(UTC),
        ),
    )
    view = await (await client.get(f"/v1/pickups/{pid}", headers=r_auth)).json()
    assert view["payout"]["status"] == "failed" and view["payout"]["reason"] == "card closed"
    r = await client.post(f"/v1/pickups/{pid}/payout/retry", headers=r_auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["payout"] == {
        "id": f"po_{pid}_2",
        "amount_fen": 7050,
        "status": "pending",
        "attempts": 2,
        "reason": None,
    }
    platform.drain()
    assert sorted(x["payout_id"] for x in payout_requests(platform.bus, pid)) == ["po_" + pid, f"po_{pid}_2"]
    # a late "paid" for the failed first attempt changes nothing
    publish(
        platform,
        PayoutPaid(
            payout_id="po_" + pid,
            reference_id=pid,
            amount_fen=7050,
            provider_ref="x",
            paid_at=datetime.now(UTC),
        ),
    )
    view = await (await client.get(f"/v1/pickups/{pid}", headers=r_auth)).json()
    assert view["payout"]["status"] == "pending" and view["payout"]["id"] == f"po_{pid}_2"
    publish(
        platform,
        PayoutPaid(
            payout_id=f"po_{pid}_2",
            reference_id=pid,
            amount_fen=7050,
            provider_ref="y",
            paid_at=datetime.now(UTC),
        ),
    )
    view = await (await client.get(f"/v1/pickups/{pid}", headers=r_auth)).json()
    assert view["payout"]["status"] == "paid" and view["withheld_fen"] == 0


async def test_invoicing_disabled_pays_gross_at_once(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings, invoicing_enabled=False)
    resident, collector = uid("res"), uid("col")
    verify_collector(platform, collector)
    pid = await _to_weighed(platform, client, settings, resident, collector)
    r = await client.post(f"/v1/pickups/{pid}/settle", headers=auth(settings, resident, "resident"))
    body = await r.json()
    assert body["payout"]["status"] == "pending" and body["invoice"]["status"] == "skipped"
    assert body["withheld_fen"] == 0
    platform.drain()
    [req] = payout_requests(platform.bus, pid)
    assert req["amount_fen"] == 7050


@pytest.mark.postgres
async def test_full_flow_postgres(aiohttp_client, pg_settings):
    settings = pg_settings
    platform, client = await app_client(aiohttp_client, settings, invoicing_enabled=True)
    resident, collector = uid("res"), uid("col")
    verify_collector(platform, collector)
    pid = await _to_weighed(platform, client, settings, resident, collector)
    assert (
        await client.post(f"/v1/pickups/{pid}/settle", headers=auth(settings, resident, "resident"))
    ).status == 200
    platform.drain()
    publish(
        platform,
        InvoiceIssued(
            invoice_id="inv_1",
            number="1",
            pickup_id=pid,
            issuer_firm_id="fm_test",
            seller_id=resident,
            kind="blue",
            total_fen=7050,
            vat_fen=0,
            surcharges_fen=0,
            iit_fen=0,
            withheld_fen=50,
            issued_at=datetime.now(UTC),
        ),
    )
    [req] = payout_requests(platform.bus, pid)
    assert req["amount_fen"] == 7000
    with platform["booking"].db.session() as s:
        row = s.execute(select(pickups).where(pickups.c.id == pid)).one()
    assert row.address_enc.startswith("pii1.") and "朝阳" not in row.address_enc  # encrypted at rest
    assert row.city_code == CITY
