"""Identifiers: time-ordered, URL-safe, prefixed with what they name (e.g. `pk_...` for a pickup)."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """RFC 9562 UUIDv7: millisecond timestamp first, so ids sort by creation time and index well."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def new_id(prefix: str = "") -> str:
    u = uuid7().hex
    return f"{prefix}_{u}" if prefix else u
