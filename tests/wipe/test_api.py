"""The wipe API through the gateway: tools, signed reports → certificates, every refusal reason of WIPE.md,
signatures (tampered report, other key, revoked tool), the public certificate, revocation, the blocklist, events."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.contracts.wipe import CertificateIssued, CertificateRevoked, device_key
from services.kernel.db import UnitOfWork

from .support import (
    Tool,
    admin,
    app_client,
    auth,
    changed,
    json_report,
    medium,
    operator,
    policy_with,
    published,
    register,
)


async def _submit(client, settings, tool: Tool, report, fmt: str = "json", headers=None):  # noqa: ANN001
    r = await client.post(
        "/v1/wipe/reports", json=tool.submission(report, fmt), headers=headers or operator(settings)
    )
    return r.status, await r.json()


async def test_a_signed_report_gets_a_certificate_anyone_can_check(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    report = json_report()
    st, body = await _submit(client, settings, tool, report)
    assert st == 201, body
    assert body["status"] == "verified" and body["certificate_id"].startswith("wc_")

    r = await client.get(f"/v1/wipe/certificates/{body['certificate_id']}")  # no token: public
    assert r.status == 200
    cert = await r.json()
    dev = report["device"]
    assert cert["valid"] is True and cert["revoked_reason"] is None
    assert cert["device"] == {
        "kind": "phone",
        "make": "Huawei",
        "model": "Mate 40",
        "imei_masked": dev["imei"][:3] + "*" * 8 + dev["imei"][-4:],
        "serial_masked": dev["serial"][:2] + "*" * 5 + dev["serial"][-3:],  # SN12345678 → SN*****678
    }
    (m,) = cert["media"]
    assert (m["type"], m["method"], m["verification"]["mode"], m["verification"]["result"]) == (
        "ufs",
        "crypto_erase",
        "full",
        "passed",
    )
    assert cert["tool"]["id"] == tool.id and cert["secondary_verification"] in ("pending", "not_drawn")
    # no personal data or raw identifier anywhere in the public reply, no operator either
    raw = json.dumps(cert)
    for secret in (dev["imei"], dev["serial"], report["media"][0]["serial"], "us_operator"):
        assert secret not in raw
    assert int(cert["retained_until"][:4]) - int(cert["issued_at"][:4]) >= 3

    (ev,) = [e for e in published(platform) if e.type == CertificateIssued.type]
    issued = CertificateIssued.decode(ev.data)
    assert issued.certificate_id == body["certificate_id"] and ev.subject == body["certificate_id"]
    assert set(issued.device_keys) == {
        device_key("imei", dev["imei"]),
        device_key("serial", dev["serial"]),
        device_key("serial", report["media"][0]["serial"]),
    }
    assert (issued.device_kind, issued.media_type, issued.method, issued.tool_id) == (
        "phone",
        "ufs",
        "crypto_erase",
        tool.id,
    )
    assert dev["imei"] not in ev.model_dump_json()


async def test_the_same_report_gives_the_same_certificate_and_another_report_a_new_one(
    aiohttp_client, settings
):
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    report = json_report()
    st1, first = await _submit(client, settings, tool, report)
    st2, again = await _submit(client, settings, tool, report)
    assert (st1, st2) == (201, 200) and again == first
    # the same device erased again: a new report, a new certificate; the first stays as it was
    st3, other = await _submit(client, settings, tool, changed(report, "report_id", "rep-again"))
    assert st3 == 201 and other["certificate_id"] != first["certificate_id"]
    issued = [e for e in published(platform) if e.type == CertificateIssued.type]
    assert [e.subject for e in issued] == [first["certificate_id"], other["certificate_id"]]


def _refusal_cases() -> list[tuple[str, dict, str]]:
    ok = json_report()
    old = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    return [
        ("malformed_report", changed(ok, "schema", "wipe-report/0"), "json"),
        ("malformed_report", changed(ok, "device.imei", "860000000000001"), "json"),  # Luhn
        ("report_too_old", changed(ok, "created_at", old), "json"),
        ("erase_failed", changed(ok, "media.0.erase_result", "failed"), "json"),
        ("erase_failed", changed(ok, "media.0.erase_result", "aborted"), "json"),
        ("verification_failed", changed(ok, "media.0.verification.result", "failed"), "json"),
        (
            "verification_insufficient",
            changed(
                ok,
                "media.0.verification",
                {
                    "mode": "sampled",
                    "subsections": 999,
                    "locations_per_subsection": 2,
                    "coverage_pct": 10.0,
                    "result": "passed",
                },
            ),
            "json",
        ),
        ("method_not_allowed_for_media", changed(ok, "media.0.method", "degauss"), "json"),
        ("method_not_allowed_for_media", changed(ok, "media.0.method", "factory_reset"), "json"),  # Huawei
        (
            "method_not_allowed_for_media",
            json_report(
                kind="laptop",
                media=[
                    medium(type="hdd", method="overwrite", passes=1, random_passes=1, hidden_areas="reset")
                ],
            ),
            "json",
        ),
        ("incomplete_erase", changed(ok, "media.0.bytes_erased", 127_000_000_000), "json"),
        (
            "hidden_areas_not_reset",
            json_report(
                kind="laptop",
                media=[
                    medium(
                        type="hdd",
                        method="overwrite",
                        passes=3,
                        random_passes=1,
                        hidden_areas="not_supported",
                    )
                ],
            ),
            "json",
        ),
        ("activation_lock_on", changed(ok, "activation_lock", "on"), "json"),
    ]


@pytest.mark.parametrize(
    "reason,report,fmt", _refusal_cases(), ids=[f"{c[0]}-{i}" for i, c in enumerate(_refusal_cases())]
)
async def test_each_refusal_reason_answers_422_naming_it(
    aiohttp_client, sqlite_settings, reason, report, fmt
):
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    st, body = await _submit(client, settings, tool, report, fmt)
    assert st == 422, body
    assert body["reason"] == reason, body
    assert body["type"].endswith("rule-violated") and body["detail"]
    assert not [e for e in published(platform) if e.type == CertificateIssued.type]


@pytest.mark.parametrize(
    "path,value",
    [
        ("media.0.passes", True),
        ("media.0.random_passes", False),
        ("media.0.capacity_bytes", "128000000000"),
        ("media.0.bytes_erased", 128_000_000_000.0),
        ("media.0.verification.subsections", "1000"),
        ("report_id", 42),
    ],
)
async def test_a_report_is_read_as_written_no_count_read_into_text_or_booleans(
    aiohttp_client, sqlite_settings, path, value
):
    """WIPE.md's numbers are JSON numbers and its strings strings: `"passes": true` is not one pass."""
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    report = json_report(kind="laptop", media=[medium(type="ssd", method="overwrite")])
    if path.startswith("media.0.verification."):
        report = changed(
            report,
            "media.0.verification",
            report["media"][0]["verification"]
            | {"mode": "sampled", "subsections": 1000, "locations_per_subsection": 2, "coverage_pct": 10.0},
        )
    st, body = await _submit(client, settings, tool, report)
    assert st == 201, body  # as written, it passes
    st, body = await _submit(
        client, settings, tool, changed(changed(report, "report_id", "sloppy"), path, value)
    )
    assert (st, body["reason"]) == (422, "malformed_report"), body
    assert [e["field"] for e in body["errors"]] == [f"report.{path}"]


async def test_a_blocklisted_device_gets_no_certificate_and_loses_the_ones_it_had(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    report = json_report()
    st, cert = await _submit(client, settings, tool, report)
    assert st == 201
    r = await client.post(
        "/v1/admin/devices/blocklist", json={"imei": report["device"]["imei"]}, headers=admin(settings)
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["certificates_revoked"] == 1 and report["device"]["imei"] not in json.dumps(body)
    r = await client.post(
        "/v1/admin/devices/blocklist", json={"imei": report["device"]["imei"]}, headers=admin(settings)
    )
    assert r.status == 200 and (await r.json())["certificates_revoked"] == 0  # once
    st, body = await _submit(client, settings, tool, changed(report, "report_id", "after-theft"))
    assert (st, body["reason"]) == (422, "device_blocklisted")
    view = await (await client.get(f"/v1/wipe/certificates/{cert['certificate_id']}")).json()
    assert (view["valid"], view["revoked_reason"]) == (False, "device_blocklisted")
    (rev,) = [e for e in published(platform) if e.type == CertificateRevoked.type]
    assert CertificateRevoked.decode(rev.data).reason == "device_blocklisted"
    assert device_key("imei", report["device"]["imei"]) in CertificateRevoked.decode(rev.data).device_keys
    # a bad IMEI is a 400 naming the field
    r = await client.post(
        "/v1/admin/devices/blocklist", json={"imei": "860000000000001"}, headers=admin(settings)
    )
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "imei"


async def test_a_blocklisted_phone_is_known_by_its_other_identifiers_too(aiohttp_client, settings):
    """The list is kept by IMEI, but a certificate tied the phone's IMEI to its serial and its storage's serial: a
    report that leaves the IMEI out names the same phone and is refused, and a certificate issued earlier on the
    serial alone is revoked with the others."""
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    report = json_report()
    serial_only = changed(changed(report, "report_id", "serial-only"), "device.imei", None)
    st, earlier = await _submit(client, settings, tool, serial_only)
    assert st == 201, earlier
    st, cert = await _submit(client, settings, tool, report)
    assert st == 201, cert
    r = await client.post(
        "/v1/admin/devices/blocklist", json={"imei": report["device"]["imei"]}, headers=admin(settings)
    )
    assert r.status == 201 and (await r.json())["certificates_revoked"] == 2
    for c in (earlier, cert):
        view = await (await client.get(f"/v1/wipe/certificates/{c['certificate_id']}")).json()
        assert (view["valid"], view["revoked_reason"]) == (False, "device_blocklisted")
    # the phone's serial without its IMEI; only its storage's serial (as a loose drive)
    by_storage = changed(changed(serial_only, "device.serial", None), "device.kind", "drive")
    for n, again in enumerate([serial_only, by_storage]):
        again = changed(again, "report_id", f"after-theft-{n}")
        st, body = await _submit(client, settings, tool, again)
        assert (st, body["reason"]) == (422, "device_blocklisted"), (n, body)
    # another phone is not caught by it
    st, body = await _submit(client, settings, tool, json_report())
    assert st == 201, body


# --- signatures ------------------------------------------------------------------------------------------------


async def test_signatures_tampered_report_other_key_unknown_and_revoked_tool(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    other = await register(client, settings, name="擦除站 B")
    report = json.dumps(json_report(), ensure_ascii=False)

    tampered = tool.submission(report) | {"report": report.replace('"passed"', '"passed" ', 1)}
    r = await client.post("/v1/wipe/reports", json=tampered, headers=operator(settings))
    assert (r.status, (await r.json())["reason"]) == (422, "bad_signature")

    signed_by_other = tool.submission(report) | {"signature": other.sign(report)}
    r = await client.post("/v1/wipe/reports", json=signed_by_other, headers=operator(settings))
    assert (r.status, (await r.json())["reason"]) == (422, "bad_signature")

    garbage = tool.submission(report) | {"signature": "not-base64!!"}
    r = await client.post("/v1/wipe/reports", json=garbage, headers=operator(settings))
    assert (r.status, (await r.json())["reason"]) == (422, "bad_signature")

    unknown = tool.submission(report) | {"tool_id": "wt_nobody"}
    r = await client.post("/v1/wipe/reports", json=unknown, headers=operator(settings))
    assert (r.status, (await r.json())["reason"]) == (422, "unknown_tool")

    st, cert = await _submit(client, settings, tool, report)
    assert st == 201
    r = await client.post(f"/v1/wipe/tools/{tool.id}/revoke", headers=admin(settings))
    revoked_tool = await r.json()
    assert (
        r.status == 200 and revoked_tool["status"] == "revoked" and revoked_tool["certificates_revoked"] == 1
    )
    st, body = await _submit(client, settings, tool, json_report())
    assert (st, body["reason"]) == (422, "tool_revoked")
    view = await (await client.get(f"/v1/wipe/certificates/{cert['certificate_id']}")).json()
    assert (view["valid"], view["revoked_reason"]) == (False, "tool_revoked")
    revoked = [
        CertificateRevoked.decode(e.data) for e in published(platform) if e.type == CertificateRevoked.type
    ]
    assert [(e.certificate_id, e.reason) for e in revoked] == [(cert["certificate_id"], "tool_revoked")]
    # the other tool still works
    st, _ = await _submit(client, settings, other, json_report())
    assert st == 201


async def test_tool_registration_checks_the_key_and_the_role(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    _, client = await app_client(aiohttp_client, settings)
    tool = Tool()
    r = await client.post(
        "/v1/wipe/tools", json={"name": "x", "public_key": tool.public_b64}, headers=operator(settings)
    )
    assert r.status == 403
    r = await client.post(
        "/v1/wipe/tools", json={"name": "x", "public_key": "QUJD" * 11}, headers=admin(settings)
    )
    assert r.status == 400 and (await r.json())["errors"][0]["field"] == "public_key"
    await register(client, settings, tool)
    r = await client.post(
        "/v1/wipe/tools", json={"name": "again", "public_key": tool.public_b64}, headers=admin(settings)
    )
    assert r.status == 422 and (await r.json())["reason"] == "duplicate_key"
    r = await client.get("/v1/wipe/tools", headers=operator(settings))
    assert r.status == 200 and [t["id"] for t in (await r.json())["items"]] == [tool.id]
    r = await client.post(
        "/v1/wipe/reports", json=tool.submission(json_report()), headers=auth(settings, "us_res", "resident")
    )
    assert r.status == 403
    r = await client.get("/v1/wipe/certificates/wc_missing")
    assert r.status == 404


async def test_certificates_are_immutable_in_the_database(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    st, cert = await _submit(client, settings, tool, json_report())
    db = platform["wipe"].db
    for stmt in (
        "UPDATE certificates SET device_model = 'x'",
        "DELETE FROM certificates",
        "DELETE FROM evidence",
        "UPDATE certificate_devices SET device_key = 'x'",
    ):
        with pytest.raises(DBAPIError, match="immutable"), UnitOfWork(db) as uow:
            uow.session.execute(text(stmt))
    view = await (await client.get(f"/v1/wipe/certificates/{cert['certificate_id']}")).json()
    assert view["device"]["model"] == "Mate 40"


async def test_admin_revocation_and_evidence(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    report = json.dumps(json_report(), ensure_ascii=False)
    st, cert = await _submit(client, settings, tool, report)
    cid = cert["certificate_id"]
    r = await client.get(f"/v1/wipe/certificates/{cid}/evidence", headers=admin(settings))
    ev = await r.json()
    assert r.status == 200 and (ev["report"], ev["tool_id"]) == (report, tool.id)
    assert tool.key.public_key().verify(base64.b64decode(ev["signature"]), report.encode()) is None
    r = await client.post(
        f"/v1/wipe/certificates/{cid}/revoke", json={"reason": "operator error"}, headers=admin(settings)
    )
    assert r.status == 200 and (await r.json())["revoked_reason"] == "admin_decision"
    st, again = await _submit(client, settings, tool, report)
    assert (st, again) == (200, {"certificate_id": cid, "status": "revoked"})
    revoked = [e for e in published(platform) if e.type == CertificateRevoked.type]
    assert len(revoked) == 1


async def test_a_laptop_with_two_drives_needs_both_erased(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await app_client(
        aiohttp_client, settings, policy=policy_with(secondary={"share": 0.0})
    )
    tool = await register(client, settings)
    ssd = medium(type="nvme", method="sanitize")
    hdd = medium(type="hdd", method="overwrite", passes=3, random_passes=1, hidden_areas="reset")
    st, body = await _submit(
        client,
        settings,
        tool,
        json_report(kind="laptop", imei=None, make="Lenovo", model="ThinkPad P52", media=[ssd, hdd]),
    )
    assert st == 201, body
    bad = changed(json_report(kind="laptop", imei=None, media=[ssd, hdd]), "media.1.erase_result", "aborted")
    st, body = await _submit(client, settings, tool, bad)
    assert (st, body["reason"], [r["medium"] for r in body["refusals"]]) == (422, "erase_failed", [1])
    st, body = await _submit(client, settings, tool, json_report(kind="laptop", imei=None, media=[ssd, hdd]))
    view = await (await client.get(f"/v1/wipe/certificates/{body['certificate_id']}")).json()
    assert [m["type"] for m in view["media"]] == ["nvme", "hdd"] and view[
        "secondary_verification"
    ] == "not_drawn"


@pytest.mark.parametrize(
    "path",
    ["/v1/wipe/reports", "/v1/wipe/certificates/{id}/secondary", "/v1/admin/devices/blocklist"],
)
def test_the_openapi_document_lists_the_200_of_a_repeat(path: str) -> None:
    """These POSTs answer 201 the first time and 200 with the same body for the same report / IMEI again
    (schemathesis found the 200 of the blocklist undocumented): the document lists both, with the same schema."""
    from gateway.app import SYSTEM_ROUTES, VERSION, all_routes
    from gateway.openapi import build_openapi

    responses = build_openapi(all_routes(), SYSTEM_ROUTES, "t", VERSION)["paths"][path]["post"]["responses"]
    assert responses["200"] == responses["201"]
    assert "application/json" in responses["200"]["content"]
