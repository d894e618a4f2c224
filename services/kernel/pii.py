"""Personal data at rest and on display: AES-GCM encryption, HMAC lookup hashes, masks.

Personal data (phone numbers, 身份证号, real names, bank cards) is stored only as ciphertext, found through a keyed
hash, and shown only masked. Every service that holds personal data uses this module with the platform's
PII_KEY (`settings.secret("pii_key")`: URL-safe base64 of 32 bytes), so a ciphertext written by accounts and carried
in an event (`*_enc` fields) can be read by invoicing.

Two sub-keys are derived from PII_KEY with HKDF-SHA256 (one for encryption, one for lookup hashes), so a lookup
hash never reveals anything about the encryption key and the other way round.

Ciphertext format: ``pii1.<urlsafe base64 of nonce(12) || ciphertext || tag(16)>``. The version prefix leaves room
for key rotation (a future ``pii2`` names a new key; readers keep the old one to decrypt).

Lookup hashes are deterministic (same input, same hash) by design: they back unique indexes ("one account per
phone") and equality look-ups. They are keyed, so a leaked table cannot be reversed by hashing all 10^10 phone
numbers without the key. Each kind (phone, id_number, ...) is hashed in its own domain.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .settings import ConfigError, Settings

PREFIX = "pii1."


class PiiError(ValueError):
    """A ciphertext that is malformed, or was not made with this key."""


class PiiCipher:
    """Encrypts, decrypts and hashes personal data with one PII key."""

    def __init__(self, key_b64: str):
        try:
            raw = base64.urlsafe_b64decode(key_b64.encode() + b"=" * (-len(key_b64) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("PII_KEY must be URL-safe base64 of 32 random bytes") from exc
        if len(raw) != 32:
            raise ConfigError(f"PII_KEY must decode to 32 bytes (AES-256), got {len(raw)}")
        self._aead = AESGCM(_derive(raw, b"recycle/pii/aes-gcm/v1"))
        self._mac_key = _derive(raw, b"recycle/pii/lookup-hmac/v1")

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)  # 96-bit random nonces: fine far below 2^32 messages per key
        sealed = self._aead.encrypt(nonce, plaintext.encode(), None)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def decrypt(self, token: str) -> str:
        if not isinstance(token, str) or not token.startswith(PREFIX):
            raise PiiError("not a PII ciphertext")
        body = token[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise PiiError("malformed PII ciphertext") from exc
        if len(raw) < 12 + 16:
            raise PiiError("truncated PII ciphertext")
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except InvalidTag as exc:
            raise PiiError(
                "PII ciphertext does not verify under this key (tampered, or another key)"
            ) from exc

    def lookup_hash(self, value: str, kind: str) -> str:
        """A keyed, deterministic hash for unique indexes and look-ups; `kind` separates domains."""
        mac = hmac.new(self._mac_key, kind.encode() + b"\x00" + value.encode(), hashlib.sha256)
        return mac.hexdigest()


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@functools.lru_cache(maxsize=8)
def _cipher_for(key_b64: str) -> PiiCipher:
    return PiiCipher(key_b64)


def cipher(settings: Settings) -> PiiCipher:
    """The platform's PII cipher (cached per key)."""
    return _cipher_for(settings.secret("pii_key"))


def encrypt(settings: Settings, plaintext: str) -> str:
    return cipher(settings).encrypt(plaintext)


def decrypt(settings: Settings, token: str) -> str:
    return cipher(settings).decrypt(token)


def lookup_hash(settings: Settings, value: str, kind: str) -> str:
    return cipher(settings).lookup_hash(value, kind)


# --- masks (for replies, events and logs) ------------------------------------------------------


def mask_phone(phone: str) -> str:
    """138****5678: the carrier prefix and the last four digits stay (what Chinese apps show)."""
    p = phone.strip()
    if len(p) < 7:
        return "*" * len(p)
    return p[:3] + "*" * (len(p) - 7) + p[-4:]


def mask_id(id_number: str) -> str:
    """110***********1234: the province/city prefix and the last four characters stay."""
    v = id_number.strip()
    if len(v) < 8:
        return "*" * len(v)
    return v[:3] + "*" * (len(v) - 7) + v[-4:]


def mask_name(name: str) -> str:
    """张*, 欧** : the first character (usually the surname) stays."""
    n = name.strip()
    if not n:
        return ""
    return n[0] + "*" * max(len(n) - 1, 1)


def mask_device_id(value: str | None) -> str | None:
    """868********1234 for an IMEI (like mask_id); shorter serials keep at most half their characters, so a
    printed page tells devices apart without naming one. One format for every service that shows a device."""
    if not value:
        return None
    v = "".join(value.split())
    hidden = max(len(v) - 7, (len(v) + 1) // 2)
    shown = len(v) - hidden
    tail = min(4, (shown + 1) // 2)
    head = shown - tail
    return v[:head] + "*" * hidden + (v[-tail:] if tail else "")


def mask_card(card_number: str) -> str:
    """6222 **** **** 1234 style, without spaces: the BIN's first four and the last four digits stay."""
    v = "".join(card_number.split())
    if len(v) < 9:
        return "*" * len(v)
    return v[:4] + "*" * (len(v) - 8) + v[-4:]
