"""The policy decision equals an independent, table-driven statement of DOMAIN_RULES.md (data wipe), over generated
reports in the JSON wire format (parsed exactly as the API parses them).

The table below is written from DOMAIN_RULES.md, not from policy.toml or the service's code: if either drifts
from the rules, this test finds the report that shows it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.wipe.domain.policy import ALL_REASONS, decide, default_policy
from services.wipe.domain.report import parse_json_report

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

# DOMAIN_RULES.md, "Accepted methods by media": (media class, method) → (min passes, min random passes), or
# "documented" (factory reset: only where it is a documented cryptographic erase). Anything else never counts.
MEDIA_CLASS = {
    "flash": "flash",
    "emmc": "flash",
    "ufs": "flash",
    "ssd": "flash",
    "nvme": "flash",
    "hdd": "magnetic",
}
ACCEPTED = {
    ("flash", "block_erase"): (0, 0),
    ("flash", "sanitize"): (0, 0),
    ("flash", "crypto_erase"): (0, 0),
    ("flash", "overwrite"): (1, 0),
    ("flash", "factory_reset"): "documented",
    ("magnetic", "overwrite"): (3, 1),
    ("magnetic", "purge"): (0, 0),
}
# makes whose factory reset is a documented cryptographic erase, for these kinds (NIST SP 800-88 Rev.1 App. A)
DOCUMENTED_RESET = {("apple", "phone"), ("apple", "tablet")}
HIDDEN_OK = {"flash": {"reset", "none", "not_supported"}, "magnetic": {"reset", "none"}}
NIST_SAMPLE = (1000, 2, 10.0)  # subsections, locations per subsection, % of the media
MAX_AGE = timedelta(days=30)
MAX_SKEW = timedelta(minutes=10)  # a tool's clock may run this far ahead

MEDIUM_ORDER = [
    "erase_failed",
    "method_not_allowed_for_media",
    "incomplete_erase",
    "hidden_areas_not_reset",
    "verification_failed",
    "verification_insufficient",
]


def expected(report: dict, blocklisted: bool) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    if datetime.fromisoformat(report["created_at"]) - NOW > MAX_SKEW:
        out.append(("malformed_report", None))
    if NOW - datetime.fromisoformat(report["created_at"]) > MAX_AGE:
        out.append(("report_too_old", None))
    if report["activation_lock"] == "on":
        out.append(("activation_lock_on", None))
    if blocklisted:
        out.append(("device_blocklisted", None))
    dev = report["device"]
    for i, m in enumerate(report["media"]):
        cls = MEDIA_CLASS[m["type"]]
        found = set()
        if m["erase_result"] in ("failed", "aborted"):
            found.add("erase_failed")
        rule = ACCEPTED.get((cls, m["method"]))
        if rule is None:
            found.add("method_not_allowed_for_media")
        elif rule == "documented":
            if (dev["make"].lower(), dev["kind"]) not in DOCUMENTED_RESET:
                found.add("method_not_allowed_for_media")
        elif m["passes"] < rule[0] or m["random_passes"] < rule[1]:
            found.add("method_not_allowed_for_media")
        if m["bytes_erased"] < m["capacity_bytes"]:
            found.add("incomplete_erase")
        if m["hidden_areas"] not in HIDDEN_OK[cls]:
            found.add("hidden_areas_not_reset")
        v = m["verification"]
        if v["result"] == "failed":
            found.add("verification_failed")
        if v["mode"] == "sampled" and (
            v["subsections"] < NIST_SAMPLE[0]
            or v["locations_per_subsection"] < NIST_SAMPLE[1]
            or v["coverage_pct"] < NIST_SAMPLE[2]
        ):
            found.add("verification_insufficient")
        out += [(r, i) for r in MEDIUM_ORDER if r in found]
    return out


CAPACITY = 64_000_000_000


@st.composite
def media(draw: st.DrawFn) -> dict:
    passes = draw(st.integers(0, 5))
    sampled = draw(st.booleans())
    mtype = draw(st.sampled_from(sorted(MEDIA_CLASS) + ["hdd"] * 4))  # hard disks: where passes matter most
    methods = ["crypto_erase", "block_erase", "sanitize", "purge", "degauss", "factory_reset"]
    return {
        "type": mtype,
        "serial": draw(st.from_regex(r"[A-Z0-9]{6,12}", fullmatch=True)),
        "capacity_bytes": CAPACITY,
        "bytes_erased": draw(st.sampled_from([CAPACITY, CAPACITY - 1, CAPACITY // 2, 0])),
        "hidden_areas": draw(st.sampled_from(["reset", "none", "not_supported"])),
        "method": draw(st.sampled_from(methods + ["overwrite"] * len(methods))),
        "passes": passes,
        "random_passes": draw(st.integers(0, passes)),
        "erase_result": draw(st.sampled_from(["passed", "passed", "failed", "aborted"])),
        "verification": {
            "mode": "sampled" if sampled else "full",
            "subsections": draw(st.sampled_from([999, 1000, 1001, 5000])) if sampled else None,
            "locations_per_subsection": draw(st.sampled_from([1, 2, 3])) if sampled else None,
            "coverage_pct": draw(st.sampled_from([9.99, 10.0, 25.0])) if sampled else 100.0,
            "result": draw(st.sampled_from(["passed", "passed", "failed"])),
        },
    }


@st.composite
def reports(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["phone", "tablet", "laptop", "desktop", "wearable", "drive"]))
    age = draw(
        st.sampled_from(
            [
                timedelta(0),
                timedelta(days=29, hours=23),
                timedelta(days=30),
                timedelta(days=30, seconds=1),
                timedelta(days=90),
                timedelta(minutes=-5),
                timedelta(minutes=-11),
                timedelta(days=-1),
            ]
        )
    )
    return {
        "schema": "wipe-report/1",
        "report_id": "r1",
        "created_at": (NOW - age)
        .astimezone(draw(st.sampled_from([UTC, datetime.now().astimezone().tzinfo])))
        .isoformat(),
        "device": {
            "kind": kind,
            "make": draw(st.sampled_from(["Apple", "apple", "Huawei", "Xiaomi", "Lenovo"])),
            "model": "M1",
            "serial": "DEV123456",
        },
        "activation_lock": draw(st.sampled_from(["off", "off", "on"])),
        "media": draw(st.lists(media(), min_size=1, max_size=3)),
    }


@settings(max_examples=300, deadline=None)
@given(report=reports(), blocklisted=st.booleans())
def test_the_decision_equals_the_table_of_the_rules(report: dict, blocklisted: bool) -> None:
    policy = default_policy()
    parsed = parse_json_report(json.dumps(report), frozenset(policy.device.kinds_needing_identity))
    got = [(r.reason, r.medium) for r in decide(policy, parsed, NOW, blocklisted=blocklisted)]
    want = expected(report, blocklisted)
    assert got == want
    assert all(reason in ALL_REASONS for reason, _ in got)
