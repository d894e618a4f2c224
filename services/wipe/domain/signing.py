"""Ed25519 keys of erasure tools and the check of a report's signature (WIPE.md: over the UTF-8 bytes of
`report` exactly as sent, no canonicalisation)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class BadKey(ValueError):
    pass


def _b64(value: str, what: str) -> bytes:
    v = value.strip()
    try:
        return base64.b64decode(v + "=" * (-len(v) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
        except (binascii.Error, ValueError):
            raise BadKey(f"{what} is not base64") from None


def parse_public_key(value: str) -> bytes:
    """The raw 32 bytes of an Ed25519 public key given as base64; BadKey otherwise."""
    raw = _b64(value, "public_key")
    if len(raw) != 32:
        raise BadKey(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise BadKey(f"not an Ed25519 public key: {exc}") from None
    return raw


def key_fingerprint(raw: bytes) -> str:
    """SHA-256 of the raw key, hex: how the key is named in replies and on certificates."""
    return hashlib.sha256(raw).hexdigest()


def signature_valid(public_key: bytes, report: str, signature_b64: str) -> bool:
    try:
        sig = _b64(signature_b64, "signature")
    except BadKey:
        return False
    if len(sig) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, report.encode("utf-8"))
        return True
    except InvalidSignature:
        return False
