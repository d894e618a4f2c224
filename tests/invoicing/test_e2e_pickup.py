"""End to end through the public API: a resident's pickup is booked, weighed and settled in booking; invoicing issues
the reverse invoice from the collector's firm; booking's saga pays gross − withheld; the firm's accountant and the
resident both see the invoice. Real services (pricing, booking, invoicing) on one bus; accounts' facts published."""

from __future__ import annotations

from sqlalchemy import select

from services.booking.store import pickups
from tests.booking.support import app_client, booking_body, uid, verify_collector

from .support import accountant, auth, issuer_events, publish, seller_events

SERVICES = ["pricing", "booking", "invoicing"]


async def test_a_settled_pickup_gets_its_reverse_invoice_and_the_resident_is_paid_net(
    aiohttp_client, sqlite_settings
):
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings, services=SERVICES, invoicing_enabled=True)
    platform.drain()  # reference prices reach booking
    resident, collector = uid("res"), uid("col")
    publish(platform, *issuer_events("fm_test"), *seller_events(settings, resident))
    verify_collector(platform, collector, firm_id="fm_test")
    r_auth, c_auth = auth(settings, resident, "resident"), auth(settings, collector, "collector")

    r = await client.post("/v1/pickups", json=booking_body(), headers=r_auth)
    assert r.status == 201, await r.text()
    pid = (await r.json())["id"]
    for path in (f"/v1/jobs/{pid}/accept", f"/v1/pickups/{pid}/arrive"):
        assert (await client.post(path, headers=c_auth)).status == 200
    r = await client.post(
        f"/v1/pickups/{pid}/weigh",
        headers=c_auth,
        json={
            "lines": [
                {"category": "paper.cardboard", "qty": "15.000"},
                {"category": "metal.copper", "qty": "1.1"},
            ],
            "reason": "纸板比预估多",
        },
    )
    assert r.status == 200, await r.text()
    assert (await client.post(f"/v1/pickups/{pid}/settle", headers=r_auth)).status == 200
    platform.drain()  # PickupSettled → invoicing → InvoiceIssued → booking's saga → PayoutRequested

    acc = accountant(settings, "fm_test")
    (inv,) = (await (await client.get("/v1/invoices", headers=acc)).json())["items"]
    # 21.00 of cardboard + 49.50 of copper, exempt; income tax 0.25% per line: 5.25 → 5, 12.375 → 12
    assert (inv["pickup_id"], inv["status"], inv["total_fen"], inv["vat_rate"]) == (
        pid,
        "issued",
        7050,
        "免税",
    )
    assert {ln["category"]: ln["iit_fen"] for ln in inv["lines"]} == {
        "paper.cardboard": 5,
        "metal.copper": 12,
    }
    assert inv["withheld_fen"] == 17
    mine = await (await client.get(f"/v1/invoices/{inv['id']}", headers=r_auth)).json()
    assert mine["seller"]["name_masked"] == "张*" and mine["number"] == inv["number"]
    with platform["booking"].db.session() as s:
        row = s.execute(select(pickups).where(pickups.c.id == pid)).one()
    assert (row.invoice_status, row.invoice_id, row.withheld_fen, row.payout_amount_fen) == (
        "issued",
        inv["id"],
        17,
        7050 - 17,
    )
    platform.stop()


async def test_the_whole_platform_through_the_public_api(aiohttp_client, sqlite_settings):
    """Every service, every step through the gateway with the tokens accounts issues: identity, consent, firm,
    qualification, collector, accountant; book → weigh → settle; the invoice, the payout, the monthly export."""
    import asyncio
    import csv
    import io

    from tests.booking.support import booking_body as body_for
    from tests.gateway.support import ID_NUMBER, USCC, call, login, start

    settings = sqlite_settings.model_copy(update={"admin_phones": "13900000001"})
    platform, client = await start(aiohttp_client, settings, services=None)
    platform.drain()
    admin = await login(client, platform, "13900000001")
    resident = await login(client, platform, "13912345678")
    owner = await login(client, platform, "13800138000")
    collector = await login(client, platform, "15011112222")
    clerk = await login(client, platform, "13700001111")

    assert (
        await call(
            client, "POST", "/v1/me/identity", resident, json={"real_name": "张三", "id_number": ID_NUMBER}
        )
    )[0] == 200
    assert (await call(client, "POST", "/v1/me/consents", resident, json={"kind": "reverse_invoicing"}))[
        0
    ] == 201
    st, firm = await call(
        client,
        "POST",
        "/v1/firms",
        owner,
        json={
            "name": "绿色再生资源回收有限公司",
            "uscc": USCC,
            "recycler_filing_no": "BA-2024-0001",
            "address": "北京市朝阳区某路1号",
            "city_code": "110105",
        },
    )
    assert st == 201, firm
    st, qual = await call(
        client,
        "POST",
        f"/v1/firms/{firm['id']}/qualifications",
        owner,
        json={"kind": "recycler_filing", "number": "HB-2024-77", "valid_until": "2099-12-31"},
    )
    assert st == 201, qual
    for kind, id_ in (("firm", firm["id"]), ("qualification", qual["id"])):
        assert (await call(client, "POST", f"/v1/admin/verifications/{kind}/{id_}/approve", admin))[0] == 200
    st, coll = await call(
        client,
        "POST",
        "/v1/collectors",
        collector,
        json={
            "real_name": "李四",
            "id_number": "44030519900101123X",
            "firm_id": firm["id"],
            "area": {"lat": 39.92, "lng": 116.46, "radius_km": 5},
            "categories": ["paper.cardboard", "metal.copper"],
        },
    )
    assert st == 201, coll
    assert (await call(client, "POST", f"/v1/admin/verifications/collector/{coll['id']}/approve", admin))[
        0
    ] == 200
    assert (
        await call(
            client, "POST", f"/v1/firms/{firm['id']}/accountants", owner, json={"user_id": clerk.user_id}
        )
    )[0] == 201
    platform.drain()  # accounts' facts reach booking and invoicing

    async def fresh(user):  # noqa: ANN001, ANN202 - tokens issued from now on carry the new roles
        st, tokens = await call(
            client, "POST", "/v1/auth/refresh", json={"refresh_token": user.refresh_token}
        )
        assert st == 200, tokens
        user.access_token, user.refresh_token = tokens["access_token"], tokens["refresh_token"]
        return user

    collector, clerk = await fresh(collector), await fresh(clerk)
    st, booked = await call(client, "POST", "/v1/pickups", resident, json=body_for())
    assert st == 201, booked
    pid = booked["id"]
    for path in (f"/v1/jobs/{pid}/accept", f"/v1/pickups/{pid}/arrive"):
        st, body = await call(client, "POST", path, collector)
        assert st == 200, body
    st, body = await call(
        client,
        "POST",
        f"/v1/pickups/{pid}/weigh",
        collector,
        json={
            "lines": [
                {"category": "paper.cardboard", "qty": "15.000"},
                {"category": "metal.copper", "qty": "1.1"},
            ],
            "reason": "纸板比预估多",
        },
    )
    assert st == 200, body
    assert (await call(client, "POST", f"/v1/pickups/{pid}/settle", resident))[0] == 200
    platform.drain()  # settle → invoice → saga → payout → paid

    st, page = await call(client, "GET", "/v1/invoices", clerk)
    assert st == 200, page
    (inv,) = page["items"]
    assert (inv["pickup_id"], inv["status"], inv["issuer_firm_id"], inv["seller_id"]) == (
        pid,
        "issued",
        firm["id"],
        resident.user_id,
    )
    assert inv["seller"]["id_number_masked"] == "110***********002X" and inv["buyer"]["uscc"] == USCC
    st, mine = await call(client, "GET", f"/v1/invoices/{inv['id']}", resident)
    assert st == 200 and mine["number"] == inv["number"]
    assert {"weighing", "consent", "qualification", "payout_requested"} <= {
        e["kind"] for e in mine["evidence"]
    }
    st, view = await call(client, "GET", f"/v1/pickups/{pid}", resident)
    assert st == 200 and view["withheld_fen"] == inv["withheld_fen"]
    assert (await call(client, "GET", f"/v1/invoices/{inv['id']}", collector))[0] == 403

    st, job = await call(
        client, "POST", "/v1/tax/exports", clerk, json={"period": inv["invoice_date"][:7], "format": "csv"}
    )
    assert st == 202, job
    for _ in range(200):
        st, job = await call(client, "GET", f"/v1/tax/exports/{job['id']}", clerk)
        if job["status"] == "done":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "done", job
    st, text_ = await call(client, "GET", job["download_url"], clerk)
    rows = list(csv.DictReader(io.StringIO(text_.lstrip("\ufeff"))))
    assert [r["invoice_number"] for r in rows if r["row_type"] == "invoice"] == [inv["number"]]
    assert (await call(client, "GET", job["download_url"], owner))[0] == 403
    platform.stop()
