"""services.kernel.pii: AES-GCM round trip, tamper detection, keyed lookup hashes, masks."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel import pii
from services.kernel.settings import ConfigError

KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()
OTHER = base64.urlsafe_b64encode(bytes(range(1, 33))).decode()


def test_round_trip_is_randomised() -> None:
    c = pii.PiiCipher(KEY)
    a, b = c.encrypt("110105194912310021"), c.encrypt("110105194912310021")
    assert a != b and a.startswith("pii1.") and "110105" not in a
    assert c.decrypt(a) == c.decrypt(b) == "110105194912310021"
    assert c.decrypt(c.encrypt("张三")) == "张三"


def test_tampering_and_another_key_are_detected() -> None:
    c = pii.PiiCipher(KEY)
    token = c.encrypt("13812345678")
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, token[:20], "pii1.!!!", "plain text"):
        with pytest.raises(pii.PiiError):
            c.decrypt(bad)
    with pytest.raises(pii.PiiError):
        pii.PiiCipher(OTHER).decrypt(token)


def test_lookup_hash_is_keyed_and_domain_separated() -> None:
    c = pii.PiiCipher(KEY)
    h = c.lookup_hash("13812345678", "phone")
    assert h == c.lookup_hash("13812345678", "phone") and len(h) == 64
    assert h != c.lookup_hash("13812345678", "id_number")
    assert h != pii.PiiCipher(OTHER).lookup_hash("13812345678", "phone")


def test_bad_keys_are_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        pii.PiiCipher(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(ConfigError):
        pii.PiiCipher("not base64 at all!")


def test_settings_helpers(sqlite_settings) -> None:  # noqa: ANN001
    token = pii.encrypt(sqlite_settings, "13812345678")
    assert pii.decrypt(sqlite_settings, token) == "13812345678"
    assert pii.lookup_hash(sqlite_settings, "x", "k") == pii.cipher(sqlite_settings).lookup_hash("x", "k")


def test_masks() -> None:
    assert pii.mask_phone("13812345678") == "138****5678"
    assert pii.mask_id("110105194912311234") == "110***********1234"
    assert (
        pii.mask_name("张三") == "张*"
        and pii.mask_name("欧阳娜娜") == "欧***"
        and pii.mask_name("王") == "王*"
    )
    assert pii.mask_card("6222021234567890123") == "6222***********0123"


@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=1, max_size=40))
def test_a_device_id_mask_never_shows_more_than_half_or_seven(value: str) -> None:
    """One format for every service that shows a device (wipe and listings showed the same IMEI two ways)."""
    masked = pii.mask_device_id(value)
    assert masked is not None and len(masked) == len(value)
    shown = [c for c in masked if c != "*"]
    assert len(shown) <= min(7, len(value) // 2)
    assert value.startswith(masked.split("*")[0]) and value.endswith(masked.rsplit("*", 1)[-1])


def test_an_imei_is_masked_like_an_id_number() -> None:
    assert pii.mask_device_id("868000000008905") == "868********8905"
    assert pii.mask_device_id(None) is None and pii.mask_device_id("") is None
