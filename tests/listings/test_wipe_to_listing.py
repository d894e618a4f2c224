"""The wipe service and listings together, through the bus: a signed erasure report becomes a certificate, which
lets the phone's listing be published; blocklisting the phone as stolen revokes the certificate and unpublishes
the listing."""

from __future__ import annotations

from tests.wipe.support import admin, json_report, operator, register

from .support import app_client, auth, phone_body, uid


async def test_a_wiped_phone_is_listed_and_a_stolen_one_taken_down(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s, services=["wipe", "payments", "listings"])
    report = json_report()
    imei = report["device"]["imei"]
    seller = uid("sel")
    r = await client.post("/v1/listings", json=phone_body(imei), headers=auth(s, seller))
    lid = (await r.json())["id"]
    r = await client.post(f"/v1/listings/{lid}/publish", headers=auth(s, seller))
    assert r.status == 422 and (await r.json())["reason"] == "wipe_certificate_required"

    tool = await register(client, s)
    r = await client.post("/v1/wipe/reports", json=tool.submission(report), headers=operator(s))
    assert r.status == 201, await r.text()
    cert = (await r.json())["certificate_id"]
    platform.drain()  # wipe's outbox → bus → listings' copy
    r = await client.post(f"/v1/listings/{lid}/publish", headers=auth(s, seller))
    assert r.status == 200, await r.text()
    assert (await (await client.get(f"/v1/listings/{lid}")).json())["certificate_id"] == cert
    platform.drain()
    assert (await (await client.get("/v1/listings/search", params={"q": "华为"})).json())["total"] == 1

    r = await client.post("/v1/admin/devices/blocklist", json={"imei": imei}, headers=admin(s))
    assert r.status == 201, await r.text()
    platform.drain()
    got = await (await client.get(f"/v1/listings/{lid}", headers=auth(s, seller))).json()
    assert got["status"] == "draft" and got["unpublished_reason"] == "certificate_revoked"
    assert (await (await client.get("/v1/listings/search", params={"q": "华为"})).json())["total"] == 0
