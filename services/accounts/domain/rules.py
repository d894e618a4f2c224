"""Accounts rules on input: phone numbers, real names, roles. Pure functions, no I/O."""

from __future__ import annotations

import re
import unicodedata

from services.kernel.auth import ROLES
from services.kernel.errors import ValidationFailed

# Mainland mobile numbers: 11 digits, 1 then 3-9 (号段 13x-19x).
_MOBILE = re.compile(r"1[3-9]\d{9}")
_SEPARATORS = re.compile(r"[\s\-()]")

# Roles an admin grants directly. The others follow from verified records: resident (every user), firm (owner of
# a verified firm), collector (a verified collector), accountant (also: named by a firm's owner).
GRANTABLE_ROLES = frozenset({"accountant", "erasure_operator", "admin", "regulator"})
DERIVED_ROLES = frozenset({"firm", "collector"})
VERIFICATION_KINDS = ("collector", "firm", "qualification")
QUALIFICATION_KINDS = ("recycler_filing", "hazardous_waste", "elv")
CONSENT_KINDS = ("reverse_invoicing",)


def normalize_phone(raw: str, field: str = "phone") -> str:
    """A mainland mobile number as 11 digits; accepts spaces, dashes and a +86 / 0086 / 86 prefix."""
    v = _SEPARATORS.sub("", raw or "")
    for prefix in ("+86", "0086", "86"):
        if v.startswith(prefix) and len(v) == len(prefix) + 11:
            v = v[len(prefix) :]
            break
    if not _MOBILE.fullmatch(v):
        raise ValidationFailed.field(
            field, "must be a mainland China mobile number: 11 digits starting with 13-19"
        )
    return v


def validate_real_name(raw: str, field: str = "real_name") -> str:
    """A person's name as on the ID card: 1-50 letters (Chinese, or Latin for foreigners), with · or spaces."""
    v = unicodedata.normalize("NFC", (raw or "").strip())
    v = re.sub(r"\s+", " ", v)
    if not v:
        raise ValidationFailed.field(field, "is required")
    if len(v) > 50:
        raise ValidationFailed.field(field, "must be at most 50 characters")
    for c in v:
        if c in " ·•.-'" or unicodedata.category(c).startswith("L"):
            continue
        raise ValidationFailed.field(field, f"contains {c!r}: a name holds letters, spaces and · only")
    if not any(unicodedata.category(c).startswith("L") for c in v):
        raise ValidationFailed.field(field, "must contain letters")
    return v


def validate_grant(roles: list[str], field: str = "roles") -> list[str]:
    out = []
    for i, r in enumerate(roles):
        if r not in ROLES:
            raise ValidationFailed.field(f"{field}.{i}", f"unknown role {r!r}; roles: {sorted(ROLES)}")
        if r not in GRANTABLE_ROLES:
            raise ValidationFailed.field(
                f"{field}.{i}",
                f"{r!r} is not granted by hand: it follows from a verified firm or collector "
                f"(grantable: {sorted(GRANTABLE_ROLES)})",
            )
        if r not in out:
            out.append(r)
    return out
