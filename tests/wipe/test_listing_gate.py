"""End to end through the gateway with the real wipe and listings services on one bus: a phone listing cannot be
published → a signed report arrives → it can → the certificate is revoked (a failed secondary verification) → the
listing is unpublished. Both runs: SQLite with the embedded log, PostgreSQL."""

from __future__ import annotations

from services.listings.settings import configure as configure_listings

from .support import app_client, auth, changed, json_report, operator, policy_with, register

SERVICES = ["payments", "listings", "wipe"]
CITY = "110105"  # 北京市朝阳区


def phone_listing(imei: str) -> dict:
    return {
        "title": "华为 Mate 40 Pro 8+256G 亮黑色",
        "description": "自用一手手机，电池健康 92%，已专业清除数据",
        "category": "electronics.phone",
        "condition": "good",
        "price_fen": 189900,
        "city_code": CITY,
        "device": {"kind": "phone", "imei": imei},
    }


async def test_a_phone_listing_follows_its_wipe_certificate(aiohttp_client, settings):
    platform, client = await app_client(
        aiohttp_client, settings, SERVICES, policy=policy_with(secondary={"share": 1.0})
    )
    configure_listings(platform["listings"], payment_wait_s=0)
    eraser = await register(client, settings, name="擦除站 A")
    checker = await register(client, settings, name="复核站 B")
    seller = auth(settings, "us_seller", "resident")

    report = json_report(model="Mate 40 Pro")
    imei = report["device"]["imei"]
    r = await client.post("/v1/listings", json=phone_listing(imei), headers=seller)
    assert r.status == 201, await r.text()
    lid = (await r.json())["id"]
    r = await client.post(f"/v1/listings/{lid}/publish", headers=seller)
    assert (r.status, (await r.json())["reason"]) == (422, "wipe_certificate_required")

    # a signed report for another phone does not help
    r = await client.post(
        "/v1/wipe/reports", json=eraser.submission(json_report()), headers=operator(settings)
    )
    assert r.status == 201
    platform.drain()
    r = await client.post(f"/v1/listings/{lid}/publish", headers=seller)
    assert (r.status, (await r.json())["reason"]) == (422, "wipe_certificate_required")

    # the erasure operator submits the signed report of this phone: the certificate reaches listings over the bus
    r = await client.post("/v1/wipe/reports", json=eraser.submission(report), headers=operator(settings))
    assert r.status == 201, await r.text()
    cid = (await r.json())["certificate_id"]
    platform.drain()
    r = await client.post(f"/v1/listings/{lid}/publish", headers=seller)
    assert r.status == 200, await r.text()
    listing = await (await client.get(f"/v1/listings/{lid}")).json()
    assert (listing["status"], listing["certificate_id"]) == ("published", cid)

    # secondary verification by another tool finds data left: the certificate is revoked, the listing unpublished
    failed = changed(changed(report, "report_id", "recheck-1"), "media.0.verification.result", "failed")
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary", json=checker.submission(failed), headers=operator(settings)
    )
    assert (r.status, (await r.json())["outcome"]) == (201, "failed")
    platform.drain()
    listing = await (await client.get(f"/v1/listings/{lid}", headers=seller)).json()
    assert (listing["status"], listing["unpublished_reason"], listing["certificate_id"]) == (
        "draft",
        "certificate_revoked",
        None,
    )
    cert = await (await client.get(f"/v1/wipe/certificates/{cid}")).json()
    assert (cert["valid"], cert["revoked_reason"]) == (False, "secondary_verification_failed")
    r = await client.post(f"/v1/listings/{lid}/publish", headers=seller)
    assert (r.status, (await r.json())["reason"]) == (422, "wipe_certificate_required")


async def test_a_listing_is_published_only_on_a_certificate_of_the_same_device(
    aiohttp_client, sqlite_settings
):
    """DOMAIN_RULES refuses an identity mismatch with the listed device: a listing giving its own IMEI and the
    serial of another, certified phone is not covered by that phone's certificate; the one naming both is."""
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings, SERVICES)
    configure_listings(platform["listings"], payment_wait_s=0)
    eraser = await register(client, settings)
    seller = auth(settings, "us_seller", "resident")
    report = json_report(model="Mate 40 Pro")
    r = await client.post("/v1/wipe/reports", json=eraser.submission(report), headers=operator(settings))
    assert r.status == 201, await r.text()
    cid = (await r.json())["certificate_id"]
    platform.drain()

    other_imei = json_report()["device"]["imei"]
    for device, status in [
        ({"kind": "phone", "imei": other_imei, "serial": report["device"]["serial"]}, 422),
        ({"kind": "phone", "imei": report["device"]["imei"], "serial": report["device"]["serial"]}, 200),
        ({"kind": "phone", "imei": report["device"]["imei"]}, 200),
    ]:
        r = await client.post(
            "/v1/listings", json=phone_listing(device["imei"]) | {"device": device}, headers=seller
        )
        lid = (await r.json())["id"]
        r = await client.post(f"/v1/listings/{lid}/publish", headers=seller)
        got = await r.json()
        assert r.status == status, (device, got)
        if status == 422:
            assert got["reason"] == "wipe_certificate_required"
        else:
            assert (await (await client.get(f"/v1/listings/{lid}")).json())["certificate_id"] == cid
            # one device is on sale in one listing at a time (device_already_listed): free it for the next case
            assert (await client.post(f"/v1/listings/{lid}/withdraw", headers=seller)).status == 200
