"""nwipe/ShredOS logs as reports: the parser on real-looking logs (passed and failed), the policy on them, and a
signed log through the API."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.wipe.domain.nwipe import parse_nwipe_log
from services.wipe.domain.policy import decide, default_policy
from services.wipe.domain.report import MalformedReport

from .support import app_client, nwipe_log, operator, policy_with, register

POLICY = default_policy()
NEED = frozenset(POLICY.device.kinds_needing_identity)
SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY_AFTER = datetime(2026, 12, 4, 12, 0, tzinfo=SHANGHAI)


def parse(name: str, text: str | None = None):  # noqa: ANN201
    return parse_nwipe_log(text if text is not None else nwipe_log(name), POLICY.nwipe, NEED)


def test_a_passed_ssd_log_reads_as_one_overwritten_fully_verified_medium():
    r = parse("nwipe_laptop_ssd_passed.log")
    assert (r.format, r.report_id, r.activation_lock) == ("nwipe", "SZ-STATION-03/2026-12-01/0042", "off")
    assert (r.device.kind, r.device.make, r.device.model, r.device.serial, r.device.imei) == (
        "laptop",
        "Lenovo",
        "ThinkPad T480",
        "PF1KX2AB",
        None,
    )
    assert r.created_at == datetime(2026, 12, 1, 9, 46, 27, tzinfo=SHANGHAI)
    (m,) = r.media
    assert (m.label, m.type, m.serial, m.method, m.erase_result, m.hidden_areas) == (
        "sda",
        "ssd",
        "S3Z1NB0K123456A",
        "overwrite",
        "passed",
        "none",
    )
    # PRNG Stream: one random pass per round, one round, plus nwipe's final blanking pass
    assert (m.passes, m.random_passes) == (2, 1)
    assert m.capacity_bytes == m.bytes_erased == 500_107_862_016
    assert (m.verification.mode, m.verification.result) == ("full", "passed")
    assert decide(POLICY, r, DAY_AFTER, blocklisted=False) == []


def test_a_passed_hdd_log_meets_the_magnetic_rule():
    r = parse("nwipe_desktop_hdd_passed.log")
    (m,) = r.media
    assert (m.type, m.passes, m.random_passes, m.serial) == ("hdd", 4, 1, "WD-WCC6Y3KXN2ZF")
    assert decide(POLICY, r, DAY_AFTER, blocklisted=False) == []
    # the same log with "Fill With Zeros" (one pass, none random) does not
    zeros = nwipe_log("nwipe_desktop_hdd_passed.log").replace("DoD Short, 1R", "Fill With Zeros, 1R")
    refusals = decide(POLICY, parse("", zeros), DAY_AFTER, blocklisted=False)
    assert [r.reason for r in refusals] == ["method_not_allowed_for_media"]


def test_a_failed_log_names_every_broken_rule_per_drive():
    r = parse("nwipe_two_drives_failed.log")
    sda, sdb = r.media
    assert (sda.erase_result, sda.hidden_areas, sda.verification.result) == ("failed", "detected", "failed")
    assert (sdb.erase_result, sdb.bytes_erased, sdb.capacity_bytes) == (
        "aborted",
        312_064_622_592,
        1_000_204_886_016,
    )
    got = [(x.reason, x.medium) for x in decide(POLICY, r, DAY_AFTER, blocklisted=False)]
    assert got == [
        ("erase_failed", 0),
        ("hidden_areas_not_reset", 0),
        ("verification_failed", 0),
        ("erase_failed", 1),
        ("incomplete_erase", 1),
    ]


def test_a_log_without_verification_is_insufficient():
    text = nwipe_log("nwipe_desktop_hdd_passed.log").replace("1R+B+VL", "1R+B+NV")
    r = parse("", text)
    assert r.media[0].verification is None
    assert [x.reason for x in decide(POLICY, r, DAY_AFTER, blocklisted=False)] == [
        "verification_insufficient"
    ]


def test_a_verify_only_log_verifies_without_erasing():
    r = parse("nwipe_hdd_verify_zeros.log")
    (m,) = r.media
    assert (m.passes, m.bytes_erased, m.verification.mode, m.verification.result) == (0, 0, "full", "passed")
    failed = parse("nwipe_hdd_verify_zeros_failed.log").media[0]
    assert (failed.erase_result, failed.verification.result) == ("failed", "failed")


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda t: t.replace("device.kind: laptop\n", ""), "device.kind"),
        (lambda t: t.replace("media.sda.type: ssd\n", ""), "media.sda.type"),
        (lambda t: t.replace("activation_lock: off\n", ""), "activation_lock"),
        (lambda t: t.replace("device.model: ThinkPad T480\n", ""), "device.model"),
        (lambda t: t.replace("PRNG Stream, 1R", "Shred Harder, 1R"), "report"),
        (lambda t: t.split("********************************* Drive Status")[0], "report"),
        (lambda t: t.replace("device.serial: PF1KX2AB", "device.imei: 860000000000001"), "device.imei"),
    ],
)
def test_a_log_missing_what_the_policy_needs_is_malformed(edit, field):
    with pytest.raises(MalformedReport) as exc:
        parse("", edit(nwipe_log("nwipe_laptop_ssd_passed.log")))
    assert exc.value.problems[0][0] == field


async def test_a_signed_nwipe_log_through_the_api(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    # the sample logs are dated December 2026: accept them whenever the test runs
    policy = policy_with(report={"max_age_days": 36500, "max_clock_skew_minutes": 10})
    _, client = await app_client(aiohttp_client, settings, policy=policy)
    tool = await register(client, settings)
    r = await client.post(
        "/v1/wipe/reports",
        json=tool.submission(nwipe_log("nwipe_laptop_ssd_passed.log"), "nwipe"),
        headers=operator(settings),
    )
    assert r.status == 201, await r.text()
    cert = await (await client.get(f"/v1/wipe/certificates/{(await r.json())['certificate_id']}")).json()
    assert (cert["format"], cert["device"]["kind"], cert["device"]["serial_masked"]) == (
        "nwipe",
        "laptop",
        "PF****AB",
    )
    assert [(m["type"], m["method"], m["passes"], m["verification"]["mode"]) for m in cert["media"]] == [
        ("ssd", "overwrite", 2, "full")
    ]

    r = await client.post(
        "/v1/wipe/reports",
        json=tool.submission(nwipe_log("nwipe_two_drives_failed.log"), "nwipe"),
        headers=operator(settings),
    )
    body = await r.json()
    assert (r.status, body["reason"]) == (422, "erase_failed")
    assert [(x["reason"], x["medium"]) for x in body["refusals"]][-1] == ("incomplete_erase", 1)
