"""What a certificate says and how it is named: no personal data, identifiers masked or digested.

- `device_keys`: the digests listings matches against (services.contracts.wipe.device_key).
- The same report (same bytes, same tool) always maps to the same certificate: the submission is keyed by
  `report_digest`; a different report for the same device is another erase, hence a new certificate.
- A share of certificates is drawn for secondary verification by a hash of the certificate id: reproducible and
  auditable (anyone can recompute the draw), yet not predictable by the operator before the id exists.
"""

from __future__ import annotations

import hashlib

from services.contracts.wipe import device_key

from .report import Report

# WIPE.md device kinds → the contract's device_kind (services/contracts/wipe.py)
CONTRACT_KIND = {
    "phone": "phone",
    "tablet": "tablet",
    "laptop": "computer",
    "desktop": "computer",
    "drive": "drive",
    "wearable": "other",
}


def report_digest(tool_id: str, report: str) -> str:
    return hashlib.sha256(tool_id.encode() + b"\x00" + report.encode("utf-8")).hexdigest()


def device_keys(report: Report) -> list[str]:
    return list(dict.fromkeys(device_key(kind, value) for kind, value in report.identifiers()))


def drawn_for_secondary(certificate_id: str, share: float) -> bool:
    if share <= 0:
        return False
    if share >= 1:
        return True
    draw = int.from_bytes(hashlib.sha256(f"secondary:{certificate_id}".encode()).digest()[:8], "big")
    return draw < share * 2**64
