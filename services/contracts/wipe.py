"""Events the wipe service publishes (topic `wipe.certificate`, key = certificate id).

Certificates carry no personal data. A device is named by `device_keys`: SHA-256 digests of its normalised
identifiers (`device_key`), so listings can match a listing's IMEI/serial to a certificate without either side
shipping the raw identifier around the bus.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from services.kernel.events import Event


def device_key(kind: str, identifier: str) -> str:
    """The digest both publisher and consumers compute for one identifier of a device.

    `kind` is "imei" or "serial"; IMEIs keep their 15 digits, serials are trimmed and upper-cased."""
    if kind not in ("imei", "serial"):
        raise ValueError(f"unknown identifier kind {kind!r}")
    value = "".join(identifier.split()).upper()
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class _CertificateEvent(Event):
    topic = "wipe.certificate"
    key_field = "certificate_id"
    source = "/wipe"
    certificate_id: str


class CertificateIssued(_CertificateEvent):
    type = "cn.recycle.wipe.certificate.issued.v1"
    doc = (
        "A signed erasure report passed the policy for its media; the device may be resold. Listings keeps a copy "
        "and lets a listing naming one of `device_keys` be published."
    )
    device_keys: list[str]
    device_kind: str  # phone | tablet | computer | drive | other
    media_type: str
    method: str
    tool_id: str
    issued_at: datetime


class CertificateRevoked(_CertificateEvent):
    type = "cn.recycle.wipe.certificate.revoked.v1"
    doc = (
        "A certificate no longer holds (failed secondary verification, revoked tool, admin decision); listings "
        "that rely on it are unpublished."
    )
    device_keys: list[str]
    reason: str
    revoked_at: datetime
