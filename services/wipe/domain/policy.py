"""The wipe policy by media (DOMAIN_RULES.md: GB 46864-2025, NIST SP 800-88, IEEE 2883) and the decision on a report.

Every number comes from `policy.toml` (`WipePolicy`); `decide` is pure: the report, the time and whether the
device is on the lost/stolen list in, the refusals out (empty = a certificate may be issued). The refusal reasons
are the ones WIPE.md names; a report can have several, listed in a fixed order (report, then device, then each
medium in order), and the first is the one the API answers with.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .report import DEVICE_KINDS, HIDDEN_AREAS, MEDIA_TYPES, METHODS, VERIFY_MODES, Medium, Report

POLICY_FILE = "policy.toml"
SCHEMA_VERSION = 1

# The refusal reasons of WIPE.md, in the order a report's refusals are listed.
SUBMISSION_REASONS = ("unknown_tool", "tool_revoked", "bad_signature", "malformed_report")
REPORT_REASONS = ("report_too_old", "activation_lock_on", "device_blocklisted")
MEDIUM_REASONS = (
    "erase_failed",
    "method_not_allowed_for_media",
    "incomplete_erase",
    "hidden_areas_not_reset",
    "verification_failed",
    "verification_insufficient",
)
ALL_REASONS = SUBMISSION_REASONS + REPORT_REASONS + MEDIUM_REASONS


class PolicyError(ValueError):
    """policy.toml is not a valid policy."""


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportRules(_Cfg):
    max_age_days: int = Field(ge=1)
    max_clock_skew_minutes: int = Field(ge=0)


class DeviceRules(_Cfg):
    require_activation_lock_off: bool
    refuse_blocklisted: bool
    kinds_needing_identity: frozenset[str]


class MethodRule(_Cfg):
    min_passes: int = Field(0, ge=0)
    min_random_passes: int = Field(0, ge=0)
    documented_crypto_erase_only: bool = False


class CapacityRules(_Cfg):
    require_full: bool


class VerificationRules(_Cfg):
    modes: frozenset[str]
    sampled_min_subsections: int = Field(ge=1)
    sampled_min_locations_per_subsection: int = Field(ge=1)
    sampled_min_coverage_pct: float = Field(gt=0, le=100)


class CryptoEraseReset(_Cfg):
    make: str = Field(min_length=1)
    kinds: frozenset[str]
    model_prefixes: tuple[str, ...] = ()
    source: str = Field(min_length=1)

    def covers(self, kind: str, make: str, model: str) -> bool:
        if kind not in self.kinds or make.strip().casefold() != self.make.casefold():
            return False
        return not self.model_prefixes or any(
            model.casefold().startswith(p.casefold()) for p in self.model_prefixes
        )


class SecondaryRules(_Cfg):
    share: float = Field(ge=0, le=1)


class CertificateRules(_Cfg):
    retention_years: int = Field(ge=3)  # GB 46864-2025: records kept at least 3 years


class NwipeMethod(_Cfg):
    passes: int = Field(ge=0)
    random_passes: int = Field(ge=0)


class NwipeRules(_Cfg):
    timezone: str
    methods: dict[str, NwipeMethod]


class WipePolicy(_Cfg):
    schema_version: int
    report: ReportRules
    device: DeviceRules
    media_classes: dict[str, frozenset[str]]
    methods: dict[str, dict[str, MethodRule]]
    hidden_areas: dict[str, frozenset[str]]
    capacity: CapacityRules
    verification: VerificationRules
    factory_reset_crypto_erase: tuple[CryptoEraseReset, ...] = ()
    secondary: SecondaryRules
    certificates: CertificateRules
    nwipe: NwipeRules

    @model_validator(mode="after")
    def _coherent(self) -> WipePolicy:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version must be {SCHEMA_VERSION}")
        seen: dict[str, str] = {}
        for cls, types in self.media_classes.items():
            for t in types:
                if t not in MEDIA_TYPES:
                    raise ValueError(f"media_classes.{cls}: unknown media type {t!r}")
                if t in seen:
                    raise ValueError(f"media type {t!r} is in both {seen[t]} and {cls}")
                seen[t] = cls
        missing = set(MEDIA_TYPES) - set(seen)
        if missing:
            raise ValueError(f"media_classes: no class for {sorted(missing)}")
        for cls in self.media_classes:
            if cls not in self.methods or cls not in self.hidden_areas:
                raise ValueError(f"media class {cls!r} needs [methods.{cls}] and hidden_areas.{cls}")
            bad = set(self.methods[cls]) - set(METHODS)
            if bad:
                raise ValueError(f"methods.{cls}: unknown methods {sorted(bad)}")
            if set(self.hidden_areas[cls]) - set(HIDDEN_AREAS):
                raise ValueError(f"hidden_areas.{cls}: values must be among {list(HIDDEN_AREAS)}")
        if self.verification.modes - set(VERIFY_MODES) or not self.verification.modes:
            raise ValueError(f"verification.modes must be among {list(VERIFY_MODES)}")
        if self.device.kinds_needing_identity - set(DEVICE_KINDS):
            raise ValueError(f"device.kinds_needing_identity must be among {list(DEVICE_KINDS)}")
        for fr in self.factory_reset_crypto_erase:
            if fr.kinds - set(DEVICE_KINDS):
                raise ValueError(
                    f"factory_reset_crypto_erase {fr.make}: kinds must be among {list(DEVICE_KINDS)}"
                )
        return self

    def media_class(self, media_type: str) -> str:
        for cls, types in self.media_classes.items():
            if media_type in types:
                return cls
        raise KeyError(media_type)


def parse_policy(text: str) -> WipePolicy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}") from exc
    return policy_from_mapping(data)


def policy_from_mapping(data: dict[str, Any]) -> WipePolicy:
    try:
        return WipePolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise PolicyError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


@cache
def default_policy() -> WipePolicy:
    return parse_policy(resources.files("services.wipe").joinpath(POLICY_FILE).read_text(encoding="utf-8"))


def load_policy(path: str | os.PathLike[str] | None = None) -> WipePolicy:
    if path is None or str(path) == "":
        return default_policy()
    with open(path, encoding="utf-8") as f:
        return parse_policy(f.read())


# --- the decision ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str
    medium: int | None = None  # index in the report's media, for a medium's refusal


def decide(policy: WipePolicy, report: Report, now: datetime, *, blocklisted: bool) -> list[Refusal]:
    """Every reason the policy refuses `report` (in WIPE.md's order); empty when a certificate may be issued."""
    out: list[Refusal] = []
    if report.created_at - now > timedelta(minutes=policy.report.max_clock_skew_minutes):
        out.append(
            Refusal("malformed_report", f"created_at {report.created_at.isoformat()} is in the future")
        )
    age = now - report.created_at
    if age > timedelta(days=policy.report.max_age_days):
        out.append(
            Refusal(
                "report_too_old",
                f"the report is {age.days} days old; at most {policy.report.max_age_days} are accepted",
            )
        )
    if policy.device.require_activation_lock_off and report.activation_lock != "off":
        out.append(Refusal("activation_lock_on", "the activation/cloud lock is on: remove the account first"))
    if policy.device.refuse_blocklisted and blocklisted:
        out.append(Refusal("device_blocklisted", "this device is on the lost/stolen list"))
    for i, medium in enumerate(report.media):
        out += [
            Refusal(reason, f"media[{i}] ({medium.label or medium.type}): {detail}", i)
            for reason, detail in medium_refusals(policy, report, medium)
        ]
    return out


def medium_refusals(policy: WipePolicy, report: Report, m: Medium) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    cls = policy.media_class(m.type)
    if m.erase_result != "passed":
        out.append(("erase_failed", f"the erase {m.erase_result}"))
    why = method_shortfall(policy, report, m, cls)
    if why:
        out.append(("method_not_allowed_for_media", why))
    if policy.capacity.require_full and m.bytes_erased < m.capacity_bytes:
        out.append(("incomplete_erase", f"{m.bytes_erased} of {m.capacity_bytes} bytes erased"))
    if m.hidden_areas not in policy.hidden_areas[cls]:
        out.append(("hidden_areas_not_reset", f"hidden areas (HPA/DCO) {m.hidden_areas} on {cls} media"))
    v = m.verification
    if v is not None and v.result != "passed":
        out.append(("verification_failed", "the verification failed"))
    why = verification_shortfall(policy, m)
    if why:
        out.append(("verification_insufficient", why))
    return out


def method_shortfall(policy: WipePolicy, report: Report, m: Medium, cls: str) -> str | None:
    rule = policy.methods[cls].get(m.method)
    if rule is None:
        allowed = ", ".join(sorted(policy.methods[cls]))
        return f"{m.method} does not count for {cls} media (accepted: {allowed})"
    if m.passes < rule.min_passes or m.random_passes < rule.min_random_passes:
        return (
            f"{m.method} with {m.passes} passes ({m.random_passes} random); {cls} media need at least "
            f"{rule.min_passes} passes with {rule.min_random_passes} random"
        )
    if rule.documented_crypto_erase_only:
        d = report.device
        if not any(fr.covers(d.kind, d.make, d.model) for fr in policy.factory_reset_crypto_erase):
            return (
                f"a factory reset of a {d.make or 'unknown make'} {d.model} is not a documented "
                "cryptographic erase"
            )
    return None


def verification_shortfall(policy: WipePolicy, m: Medium) -> str | None:
    v, rules = m.verification, policy.verification
    if v is None:
        return "the medium was not verified"
    if v.mode not in rules.modes:
        return f"verification mode {v.mode} is not accepted"
    short = (
        (v.subsections or 0) < rules.sampled_min_subsections
        or (v.locations_per_subsection or 0) < rules.sampled_min_locations_per_subsection
        or (v.coverage_pct or 0.0) < rules.sampled_min_coverage_pct
    )
    if v.mode == "sampled" and short:
        return (
            f"sampled verification of {v.subsections or 0} subsections × {v.locations_per_subsection or 0} "
            f"locations, {v.coverage_pct or 0}% of the media; the NIST sample needs ≥ "
            f"{rules.sampled_min_subsections} × {rules.sampled_min_locations_per_subsection}, ≥ "
            f"{rules.sampled_min_coverage_pct}%"
        )
    return None


def secondary_check(policy: WipePolicy, report: Report, certified_serials: list[str]) -> tuple[str, str]:
    """Secondary verification of a certificate by another tool's report on the same device.

    ("failed", why): an erase or a verification that did not pass (the certificate is revoked).
    ("verification_insufficient", why): the report does not check every certified medium fully or by the NIST
    sample, so it settles nothing (refused; the secondary verification is still owed).
    ("passed", ""): every certified medium was verified and found erased."""
    for i, m in enumerate(report.media):
        if m.erase_result != "passed":
            return "failed", f"media[{i}] ({m.label or m.type}): the erase {m.erase_result}"
        if m.verification is not None and m.verification.result != "passed":
            return "failed", f"media[{i}] ({m.label or m.type}): the verification failed"
    for i, m in enumerate(report.media):
        why = verification_shortfall(policy, m)
        if why:
            return "verification_insufficient", f"media[{i}] ({m.label or m.type}): {why}"
    seen = {m.serial.strip().upper() for m in report.media if m.serial}
    missing = [s for s in certified_serials if s and s.strip().upper() not in seen]
    if missing:
        return "verification_insufficient", f"{len(missing)} certified medium/media not in this report"
    return "passed", ""
