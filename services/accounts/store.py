"""Accounts' tables. Personal data is stored only as PII ciphertext (`*_enc`), found by keyed hashes (`*_hash`),
and kept masked (`*_masked`) for display; see services/kernel/pii.py."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Float,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("phone_hash", String(64), nullable=False, unique=True),
    Column("phone_enc", Text, nullable=False),
    Column("phone_masked", String(20), nullable=False),
    # resident identity (实名): name and 身份证号, once verified
    Column("real_name_enc", Text, nullable=True),
    Column("name_masked", String(64), nullable=True),
    Column("id_number_enc", Text, nullable=True),
    Column("id_number_hash", String(64), nullable=True, unique=True),
    Column("id_number_masked", String(24), nullable=True),
    Column("identity_verified_at", Timestamp(), nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    # Access tokens carry the version they were issued at; raising it revokes the older ones on their next
    # request (services/kernel/revocation.py). `token_version_at_ms`: when, so a restart re-publishes recent ones.
    Column("token_version", Integer, nullable=False, server_default="0"),
    Column("token_version_at_ms", BigInteger, nullable=True),
    # An admin's suspension: no login, no refresh, every token revoked, until reinstated.
    Column("suspended_at", Timestamp(), nullable=True),
    Column("suspended_by", String(40), nullable=True),
    Column("suspended_reason", String(300), nullable=True),
)

# Roles granted to a user (resident at registration; admin, accountant, erasure_operator by an admin or the
# ADMIN_PHONES bootstrap). firm / collector / firm accountant follow from the records below.
user_roles = Table(
    "user_roles",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("granted_at", Timestamp(), nullable=False),
    Column("granted_by", String(40), nullable=True),
)

# One-time login codes: only a keyed hash of the code is kept.
otp_codes = Table(
    "otp_codes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("phone_hash", String(64), nullable=False, index=True),
    Column("code_hash", String(64), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False, index=True),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("closed_at_ms", BigInteger, nullable=True),
    Column("closed_reason", String(16), nullable=True),  # used | superseded | burned
)

# Refresh tokens by jti: each may be used once; reuse revokes the family.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("jti", String(40), primary_key=True),
    Column("family", String(40), nullable=False, index=True),
    Column("user_id", String(40), nullable=False, index=True),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("used_at_ms", BigInteger, nullable=True),
    Column("revoked_at_ms", BigInteger, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("recorded_at", Timestamp(), nullable=False),
    UniqueConstraint("user_id", "kind"),
)

firms = Table(
    "firms",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_user_id", String(40), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("uscc", String(18), nullable=False, unique=True),  # 统一社会信用代码: public business data
    Column("recycler_filing_no", String(64), nullable=False),
    Column("address", String(300), nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("status", String(16), nullable=False),  # pending | verified | rejected
    Column("status_reason", String(300), nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("decided_at", Timestamp(), nullable=True),
    Column("decided_by", String(40), nullable=True),
)

qualifications = Table(
    "qualifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("firm_id", String(40), nullable=False, index=True),
    Column("kind", String(32), nullable=False),  # recycler_filing | hazardous_waste | elv
    Column("number", String(64), nullable=False),
    Column("valid_until", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(300), nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("decided_at", Timestamp(), nullable=True),
    Column("decided_by", String(40), nullable=True),
)

firm_accountants = Table(
    "firm_accountants",
    metadata,
    Column("firm_id", String(40), primary_key=True),
    Column("user_id", String(40), primary_key=True, index=True),
    Column("added_at", Timestamp(), nullable=False),
    Column("added_by", String(40), nullable=False),
)

collectors = Table(
    "collectors",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False, index=True),
    Column("firm_id", String(40), nullable=False, index=True),
    Column("real_name_enc", Text, nullable=False),
    Column("name_masked", String(64), nullable=False),
    Column("id_number_enc", Text, nullable=False),
    Column("id_number_hash", String(64), nullable=False),
    Column("id_number_masked", String(24), nullable=False),
    Column("lat", Float, nullable=False),
    Column("lng", Float, nullable=False),
    Column("radius_km", Float, nullable=False),
    Column("categories", Text, nullable=False),  # JSON list of taxonomy leaf codes
    Column("status", String(16), nullable=False),
    Column("status_reason", String(300), nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("decided_at", Timestamp(), nullable=True),
    Column("decided_by", String(40), nullable=True),
    UniqueConstraint("user_id", "firm_id"),
)
