"""The wipe service's tables.

- `tools`: erasure tools registered by an admin (Ed25519 public key); revocation is recorded on the row.
- `certificates`: one per accepted report; never updated or deleted (database triggers refuse it, see the
  migration): a new erase gives a new certificate, a withdrawn one gets a row in `revocations`.
- `certificate_devices`: the device keys (digests of IMEI/serials) a certificate names, for look-ups.
- `evidence`: the signed report behind a certificate, encrypted at rest (it names the device), and its signature.
- `revocations`: at most one per certificate (append-only).
- `secondary_checks`: secondary verifications by another tool (append-only, the report encrypted).
- `attempts`: every submission and its outcome, refusals included (append-only; no report text).
- `blocklist`: lost or stolen devices, by device key; the IMEI only masked.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()

TS = Timestamp()
AUTO_ID = BigInteger().with_variant(Integer, "sqlite")

tools = Table(
    "tools",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("public_key", String(64), nullable=False, unique=True),  # base64 of the raw 32 bytes
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("revoked_at", TS, nullable=True),
    Column("revoked_by", String(64), nullable=True),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("report_digest", String(64), nullable=False, unique=True),  # same report, same certificate
    Column("tool_id", String(40), nullable=False, index=True),
    Column("tool_fingerprint", String(64), nullable=False),
    Column("format", String(8), nullable=False),  # json | nwipe
    Column("report_id", String(200), nullable=False),  # the tool's own id of the report
    Column("report_created_at", TS, nullable=False),
    Column("device_kind", String(16), nullable=False),
    Column("device_make", String(100), nullable=False),
    Column("device_model", String(200), nullable=False),
    Column("imei_masked", String(32), nullable=True),
    Column("serial_masked", String(120), nullable=True),
    Column(
        "media_json", Text, nullable=False
    ),  # [{type, method, passes, random_passes, serial_masked, verification}]
    Column("issued_at", TS, nullable=False),
    Column("issued_by", String(64), nullable=False),  # the operator's user id (not shown publicly)
    Column("retained_until", Date, nullable=False),
    Column("secondary_required", Boolean, nullable=False),
    Index("ix_certificates_issued_at", "issued_at"),
)

certificate_devices = Table(
    "certificate_devices",
    metadata,
    Column("device_key", String(64), primary_key=True),
    Column("certificate_id", String(40), primary_key=True),
)

evidence = Table(
    "evidence",
    metadata,
    Column("certificate_id", String(40), primary_key=True),
    Column("report_enc", Text, nullable=False),
    Column("signature", String(200), nullable=False),
)

revocations = Table(
    "revocations",
    metadata,
    Column("certificate_id", String(40), primary_key=True),
    Column("reason", String(40), nullable=False),
    Column("detail", Text, nullable=True),
    Column("revoked_at", TS, nullable=False),
    Column("revoked_by", String(64), nullable=False),
)

secondary_checks = Table(
    "secondary_checks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("certificate_id", String(40), nullable=False, index=True),
    Column("tool_id", String(40), nullable=False),
    Column("report_digest", String(64), nullable=False),
    Column("outcome", String(12), nullable=False),  # passed | failed
    Column("detail", Text, nullable=True),
    Column("report_enc", Text, nullable=False),
    Column("signature", String(200), nullable=False),
    Column("checked_at", TS, nullable=False),
    Column("checked_by", String(64), nullable=False),
    UniqueConstraint("certificate_id", "report_digest"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("by", String(64), nullable=False),
    Column("tool_id", String(40), nullable=False),
    Column("format", String(8), nullable=False),
    Column("report_digest", String(64), nullable=False, index=True),
    Column("outcome", String(12), nullable=False),  # certified | replayed | refused
    Column("reason", String(40), nullable=True),
    Column("detail", Text, nullable=True),
    Column("certificate_id", String(40), nullable=True),
)

blocklist = Table(
    "blocklist",
    metadata,
    Column("device_key", String(64), primary_key=True),
    Column("imei_masked", String(32), nullable=False),
    Column("added_at", TS, nullable=False),
    Column("added_by", String(64), nullable=False),
)
