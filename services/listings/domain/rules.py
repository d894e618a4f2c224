"""What may be listed and published, as named rules over plain facts (no I/O). Each rule answers `None`
(satisfied) or a `Refusal(reason, detail)`; the API turns a refusal into 422 `{reason}`.

Reasons:
- `prohibited_item`            the category or a word of the title/description is on the prohibited list
                               (weapons, drugs, counterfeits, personal data carriers sold as data, ...);
- `wipe_certificate_required`  the listing names a device, or its category holds storage, and no valid wipe
                               certificate (信息清除证书) matches its IMEI/serial;
- `device_already_listed`      another listing of the same device (by its IMEI/serial) is on sale or reserved: one
                               device, one offer (else it could be sold twice, or someone lists a device they saw);
- `own_listing`                a seller cannot order their own listing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


# What may stand between the characters of a prohibited word without hiding it: spacing and invisible
# characters (format characters such as U+200B zero-width space, U+2060 word joiner, U+00AD soft hyphen, and
# variation selectors) and the symbols used to letter-space a word (仿.真.枪, 仿-真-枪, 仿*真*枪). Clause
# punctuation (，、；：！？) is not among them: "价格高，仿佛新的" names no 高仿.
_LETTER_SPACING = r".\-_*·•~|/\\+=^`'\"#@&%$<>"


def _is_spacing(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return (
        cat.startswith("Z")
        or ch.isspace()
        or cat == "Cf"
        or 0xFE00 <= ord(ch) <= 0xFE0F
        or 0xE0100 <= ord(ch) <= 0xE01EF
        or ch in _LETTER_SPACING
    )


def _squeeze(text: str) -> str:
    return "".join(c for c in _fold(text) if not _is_spacing(c))


@dataclass(frozen=True)
class ProhibitedItems:
    """禁售物品: categories never listed, and words that give an item away wherever they appear."""

    categories: frozenset[str]
    words: tuple[str, ...]

    def check(self, category: str, *texts: str) -> Refusal | None:
        if category in self.categories:
            return Refusal("prohibited_item", f"items of category {category} cannot be listed")
        # spacing and invisible characters out of both sides: "仿 真 枪", "仿\u200b真枪", "仿.真.枪" name 仿真枪
        squeezed = _squeeze(" ".join(texts))
        for word in self.words:
            w = _squeeze(word)
            if w and w in squeezed:
                return Refusal("prohibited_item", f"listing mentions a prohibited item ({word})")
        return None


@dataclass(frozen=True)
class DeviceFacts:
    """What the listing says about its device and what listings knows of certificates for it."""

    names_device: bool
    category_holds_storage: bool
    device_keys: tuple[str, ...]  # digests of its IMEI/serial (services.contracts.wipe.device_key)
    valid_certificates: tuple[str, ...]  # ids of unrevoked certificates naming all of those keys


def wipe_certificate_required(facts: DeviceFacts) -> Refusal | None:
    """GB 46864-2025: a device with non-volatile storage is not resold before a verified erasure."""
    if not (facts.names_device or facts.category_holds_storage):
        return None
    if not facts.device_keys:
        return Refusal(
            "wipe_certificate_required",
            "this category holds personal data: name the device (its IMEI or serial) and have it wiped",
        )
    if not facts.valid_certificates:
        return Refusal(
            "wipe_certificate_required",
            "no valid wipe certificate names this device's IMEI and serial (信息清除证书): every identifier the "
            "listing gives must be on the same certificate",
        )
    return None


def one_offer_per_device(other_live_listing: str | None) -> Refusal | None:
    """`other_live_listing`: a published or reserved listing, other than this one, naming the same device."""
    if other_live_listing is not None:
        return Refusal(
            "device_already_listed",
            f"this device (its IMEI/serial) is already on sale in listing {other_live_listing}",
        )
    return None


def not_own_listing(buyer_id: str, seller_id: str) -> Refusal | None:
    if buyer_id == seller_id:
        return Refusal("own_listing", "you cannot buy your own listing")
    return None


def first_refusal(refusals: Iterable[Refusal | None]) -> Refusal | None:
    return next((r for r in refusals if r is not None), None)
