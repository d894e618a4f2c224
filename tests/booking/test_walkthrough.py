"""The walk-through of docs/booking.md, on the public API only, with every real service hosted: people log in
with an SMS code, an admin verifies the firm and the collector, the resident books, the collector grabs, weighs,
the resident settles, payments pays. Nothing is set up behind the API's back."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.invoicing.settings import configure as configure_invoicing
from services.kernel.settings import Settings
from tests.support.sse import next_event
from tests.support.walkthrough import Walkthrough

from .support import HOME, booking_body

ADMIN, RESIDENT, OWNER, COLLECTOR = "13900000001", "13912345678", "13800138000", "15011112222"
ACCOUNTANT = "13600001234"


async def test_walkthrough_on_the_public_api(aiohttp_client, tmp_path):
    # the dev environment (the embedded default) returns the login code in the reply, as the docs show
    settings = Settings(
        env="dev",
        data_dir=tmp_path,
        jwt_secret="walk-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        admin_phones=ADMIN,
    )
    platform = Platform(settings).prepare()
    app = create_app_over(platform)
    call = Walkthrough(await aiohttp_client(app), platform)
    login = call.login

    admin = (await login(ADMIN))["access_token"]
    resident = (await login(RESIDENT))["access_token"]
    owner = (await login(OWNER))["access_token"]

    # a recycling firm and its collector, verified by an admin
    firm = await call(
        "POST",
        "/v1/firms",
        owner,
        {
            "name": "绿色再生资源回收有限公司",
            "uscc": "91350100M000100Y43",
            "recycler_filing_no": "BA-2024-0001",
            "address": "北京市朝阳区某路1号",
            "city_code": "110105",
        },
        status=201,
    )
    await call("POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)
    qual = await call(
        "POST",
        f"/v1/firms/{firm['id']}/qualifications",
        owner,
        {"kind": "recycler_filing", "number": "BA-2024-0001", "valid_until": "2099-12-31"},
        status=201,
    )
    await call("POST", f"/v1/admin/verifications/qualification/{qual['id']}/approve", admin)
    # the resident's identity and consent to reverse invoicing (反向开票): the firm can invoice on their behalf
    await call("POST", "/v1/me/identity", resident, {"real_name": "张三", "id_number": "11010519491231002X"})
    await call("POST", "/v1/me/consents", resident, {"kind": "reverse_invoicing"}, status=201)
    applicant = (await login(COLLECTOR))["access_token"]
    col = await call(
        "POST",
        "/v1/collectors",
        applicant,
        {
            "real_name": "王五",
            "id_number": "44030519900101123X",
            "firm_id": firm["id"],
            "area": {"lat": HOME[0], "lng": HOME[1], "radius_km": 8},
            "categories": ["paper.cardboard", "metal.copper", "plastic.pet"],
        },
        status=201,
    )
    await call("POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)
    collector = await login(COLLECTOR)  # a new token carries the collector role
    assert "collector" in collector["roles"]
    collector = collector["access_token"]

    # book → grab → arrive → weigh → settle → paid
    booked = await call("POST", "/v1/pickups", resident, booking_body(), status=201)
    pid = booked["id"]
    assert booked["status"] == "requested" and booked["quote"]["total_fen"] == 7150
    jobs = await call("GET", "/v1/jobs", collector)
    assert [j["id"] for j in jobs["items"]] == [pid] and "address" not in jobs["items"][0]
    # the live feed, open while the collector grabs, shows the job taken by them; closed as the docs kill it
    feed = await call.client.get("/v1/jobs/stream", headers={"Authorization": f"Bearer {collector}"})
    assert feed.status == 200
    accepted = await call("POST", f"/v1/jobs/{pid}/accept", collector)
    assert accepted["status"] == "accepted" and accepted["collector_id"] == col["id"]
    assert await next_event(feed) == ("job.taken", {"id": pid, "by_you": True})
    feed.close()
    await call("POST", f"/v1/pickups/{pid}/arrive", collector)
    weighed = await call(
        "POST",
        f"/v1/pickups/{pid}/weigh",
        collector,
        {
            "lines": [
                {"category": "paper.cardboard", "qty": "13.2"},
                {"category": "metal.copper", "qty": "1.25"},
            ],
            "scale_reading": "电子秤 #A12",
            "reason": "现场称重",
        },
    )
    assert weighed["status"] == "weighed" and weighed["total_fen"] == 1848 + 5625
    settled = await call("POST", f"/v1/pickups/{pid}/settle", resident)
    assert settled["status"] == "settled" and settled["payout"]["id"] == "po_" + pid
    # invoicing issued the reverse invoice (withholding what the tax rules say), payments paid the rest
    view = await call("GET", f"/v1/pickups/{pid}", resident)
    assert view["invoice"]["status"] == "issued", view["invoice"]
    withheld = view["withheld_fen"]
    assert withheld is not None and 0 <= withheld < 7473 and view["net_fen"] == 7473 - withheld
    assert view["payout"] == {
        "id": "po_" + pid,
        "amount_fen": 7473 - withheld,
        "status": "paid",
        "attempts": 1,
        "reason": None,
    }
    await call(
        "POST", f"/v1/pickups/{pid}/rating", resident, {"score": 5, "comment": "准时，称重透明"}, status=201
    )
    await call("POST", f"/v1/pickups/{pid}/rating", collector, {"score": 5}, status=201)
    mine = await call("GET", "/v1/pickups?mine=1", resident)
    assert [p["status"] for p in mine["items"]] == ["settled"]

    # the firm's accountant, named by the owner (a fresh token carries the role), exports the month's detail report;
    # here in a thread (the embedded run's Celery worker runs it in tests/e2e/test_embedded.py)
    configure_invoicing(platform["invoicing"], export_runner="thread")
    accountant_id = (await login(ACCOUNTANT))["user_id"]
    await call("POST", f"/v1/firms/{firm['id']}/accountants", owner, {"user_id": accountant_id}, status=201)
    accountant = (await login(ACCOUNTANT))["access_token"]
    period = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    job = await call(
        "POST",
        "/v1/tax/exports",
        accountant,
        {"period": period, "format": "csv", "firm_id": firm["id"]},
        status=202,
    )
    assert job["status"] == "queued"
    for _ in range(200):
        job = await call("GET", f"/v1/tax/exports/{job['id']}", accountant)
        if job["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "done", job
    r = await call.client.get(job["download_url"], headers={"Authorization": f"Bearer {accountant}"})
    assert r.status == 200
    text = (await r.read()).decode("utf-8-sig")
    rows = {row["row_type"]: row for row in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"invoice", "seller_total", "firm_total"}
    invoice = rows["invoice"]
    assert (invoice["seller_name"], invoice["seller_id_number"], invoice["kind"]) == (
        "张*",
        "110***********002X",
        "blue",
    )
    assert int(invoice["total_fen"]) == 7473 and int(invoice["withheld_fen"]) == withheld
    assert int(rows["firm_total"]["total_fen"]) == 7473
    assert "张三" not in text and "11010519491231002X" not in text
    platform.stop()
