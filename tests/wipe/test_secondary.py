"""Secondary verification: a configurable share of certificates is drawn; a different registered tool re-verifies;
a failure revokes the certificate (an event); a pass leaves it valid."""

from __future__ import annotations

from services.contracts.wipe import CertificateRevoked
from services.kernel.ids import new_id
from services.wipe.domain.certificate import drawn_for_secondary

from .support import (
    admin,
    app_client,
    changed,
    json_report,
    nwipe_log,
    operator,
    policy_with,
    published,
    register,
)

# the sample logs are dated December 2026: accept them whenever the test runs
ANY_AGE = {"max_age_days": 36500, "max_clock_skew_minutes": 10}


def test_the_draw_takes_the_configured_share():
    ids = [new_id("wc") for _ in range(4000)]
    share = sum(drawn_for_secondary(i, 0.20) for i in ids) / len(ids)
    assert 0.17 < share < 0.23
    assert not any(drawn_for_secondary(i, 0.0) for i in ids[:100])
    assert all(drawn_for_secondary(i, 1.0) for i in ids[:100])
    assert [drawn_for_secondary(i, 0.2) for i in ids[:50]] == [drawn_for_secondary(i, 0.2) for i in ids[:50]]


async def _certified_desktop(aiohttp_client, settings, share: float = 1.0):  # noqa: ANN001, ANN202
    policy = policy_with(secondary={"share": share}, report=ANY_AGE)
    platform, client = await app_client(aiohttp_client, settings, policy=policy)
    eraser = await register(client, settings, name="擦除站 北京")
    checker = await register(client, settings, name="复核站 上海")
    r = await client.post(
        "/v1/wipe/reports",
        json=eraser.submission(nwipe_log("nwipe_desktop_hdd_passed.log"), "nwipe"),
        headers=operator(settings),
    )
    assert r.status == 201, await r.text()
    return platform, client, eraser, checker, (await r.json())["certificate_id"]


async def test_a_passed_secondary_verification_settles_a_drawn_certificate(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client, eraser, checker, cid = await _certified_desktop(aiohttp_client, settings)
    view = await (await client.get(f"/v1/wipe/certificates/{cid}")).json()
    assert view["secondary_verification"] == "pending"
    pending = await (await client.get("/v1/wipe/secondary/pending", headers=operator(settings))).json()
    assert [p["certificate_id"] for p in pending["items"]] == [cid]

    # the tool that erased cannot verify its own work
    log = nwipe_log("nwipe_hdd_verify_zeros.log")
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary",
        json=eraser.submission(log, "nwipe"),
        headers=operator(settings),
    )
    assert (r.status, (await r.json())["reason"]) == (422, "same_tool")

    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary",
        json=checker.submission(log, "nwipe"),
        headers=operator(settings, "us_checker"),
    )
    body = await r.json()
    assert r.status == 201, body
    assert (body["outcome"], body["certificate_status"]) == ("passed", "verified")
    again = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary",
        json=checker.submission(log, "nwipe"),
        headers=operator(settings, "us_checker"),
    )
    assert again.status == 200 and (await again.json())["id"] == body["id"]

    view = await (await client.get(f"/v1/wipe/certificates/{cid}")).json()
    assert (view["valid"], view["secondary_verification"]) == (True, "passed")
    pending = await (await client.get("/v1/wipe/secondary/pending", headers=admin(settings))).json()
    assert pending["items"] == []
    assert not [e for e in published(platform) if e.type == CertificateRevoked.type]


async def test_a_failed_secondary_verification_revokes_the_certificate(aiohttp_client, settings):
    platform, client, _, checker, cid = await _certified_desktop(aiohttp_client, settings)
    log = nwipe_log("nwipe_hdd_verify_zeros_failed.log")
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary",
        json=checker.submission(log, "nwipe"),
        headers=operator(settings),
    )
    body = await r.json()
    assert r.status == 201, body
    assert (body["outcome"], body["certificate_status"]) == ("failed", "revoked")
    view = await (await client.get(f"/v1/wipe/certificates/{cid}")).json()
    assert (view["valid"], view["revoked_reason"], view["secondary_verification"]) == (
        False,
        "secondary_verification_failed",
        "failed",
    )
    (ev,) = [
        CertificateRevoked.decode(e.data) for e in published(platform) if e.type == CertificateRevoked.type
    ]
    assert (ev.certificate_id, ev.reason) == (cid, "secondary_verification_failed") and ev.device_keys


async def test_a_secondary_report_must_name_the_same_device_and_cover_its_media(
    aiohttp_client, sqlite_settings
):
    settings = sqlite_settings
    _, client, _, checker, cid = await _certified_desktop(aiohttp_client, settings, share=0.0)
    view = await (await client.get(f"/v1/wipe/certificates/{cid}")).json()
    assert view["secondary_verification"] == "not_drawn"
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary",
        json=checker.submission(json_report()),
        headers=operator(settings),
    )
    assert (r.status, (await r.json())["reason"]) == (422, "device_mismatch")
    # a later erase by the other tool without verification settles nothing
    no_verify = nwipe_log("nwipe_hdd_verify_zeros.log").replace(
        "Verify Zeros (0x00), 1R", "Fill With Zeros, 1R"
    )
    no_verify = no_verify.replace(
        "********************************* Drive Status",
        (
            "******************************* Erasure Summary ********************************\n"
            "!   Device |      Bytes Erased |      Bytes Total | Percentage Erased\n"
            "--------------------------------------------------------------------------------\n"
            "       sda |     1000204886016 |    1000204886016 |           100.00%\n"
            "********************************************************************************\n\n"
            "********************************* Drive Status"
        ),
    )
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary",
        json=checker.submission(no_verify, "nwipe"),
        headers=operator(settings),
    )
    assert (r.status, (await r.json())["reason"]) == (422, "verification_insufficient")
    r = await client.post(
        "/v1/wipe/certificates/wc_nope/secondary",
        json=checker.submission(no_verify, "nwipe"),
        headers=operator(settings),
    )
    assert r.status == 404


async def test_a_report_on_another_phone_with_the_same_storage_serial_neither_revokes_nor_passes(
    aiohttp_client, sqlite_settings
):
    """Sharing the storage's serial is not enough: a report naming another IMEI (or device serial) than the
    certificate's is about another device (a board moved, a typo) and is refused as device_mismatch."""
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings)
    eraser = await register(client, settings, name="擦除站 北京")
    checker = await register(client, settings, name="复核站 上海")
    report = json_report()
    r = await client.post("/v1/wipe/reports", json=eraser.submission(report), headers=operator(settings))
    cid = (await r.json())["certificate_id"]
    other = json_report()["device"]
    failed = changed(changed(report, "report_id", "recheck"), "media.0.verification.result", "failed")
    for path in ("device.imei", "device.serial"):
        wrong = changed(failed, path, other[path.split(".")[1]])
        r = await client.post(
            f"/v1/wipe/certificates/{cid}/secondary",
            json=checker.submission(wrong),
            headers=operator(settings),
        )
        assert (r.status, (await r.json())["reason"]) == (422, "device_mismatch"), path
        assert (await (await client.get(f"/v1/wipe/certificates/{cid}")).json())["valid"] is True
    # the same phone's failed re-check revokes it
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/secondary", json=checker.submission(failed), headers=operator(settings)
    )
    assert (r.status, (await r.json())["outcome"]) == (201, "failed")
