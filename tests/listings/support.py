"""Helpers for listings tests: the platform (payments + listings) behind the gateway app, tokens, certificates
published as the wipe service would, valid IMEIs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.contracts.wipe import CertificateIssued, CertificateRevoked, device_key
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.checkdigits import luhn_check_digit
from services.kernel.events import Envelope, Event, topic_of
from services.kernel.ids import new_id
from services.kernel.settings import Settings
from services.listings.settings import configure

SERVICES = ["payments", "listings"]
CITY = "110105"  # 北京市朝阳区


def platform_for(settings: Settings, services: list[str] | None = None, **listings: Any) -> Platform:
    platform = Platform(settings, services=services or SERVICES).prepare()
    listings.setdefault("payment_wait_s", 0)  # no background threads: tests drain
    configure(platform["listings"], **listings)
    return platform


async def app_client(
    aiohttp_client,
    settings: Settings,
    services: list[str] | None = None,  # noqa: ANN001
    **listings: Any,
):  # noqa: ANN201
    platform = platform_for(settings, services, **listings)
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def auth(settings: Settings, user_id: str, *roles: str) -> dict[str, str]:
    return {
        "Authorization": "Bearer "
        + issue_token(settings, Principal(user_id, frozenset(roles or ("resident",))))
    }


def uid(prefix: str = "u") -> str:
    return new_id(prefix)


def imei(body: str) -> str:
    """A valid IMEI from 14 digits (Luhn check digit appended)."""
    assert len(body) == 14
    return body + luhn_check_digit(body)


def publish(platform: Platform, *events: Event) -> None:
    """Publish events as another service would (straight onto the bus), then let every consumer catch up."""
    envs = [Envelope.wrap(e) for e in events]
    platform.bus.publish(
        [
            Record(topic=topic_of(e.type), key=e.subject, value=e.to_bytes(), headers={"ce_type": e.type})
            for e in envs
        ]
    )
    platform.drain()


def certify(
    platform: Platform,
    *,
    imei_value: str | None = None,
    serial: str | None = None,
    certificate_id: str | None = None,
    kind: str = "phone",
) -> str:
    cid = certificate_id or new_id("wc")
    keys = ([device_key("imei", imei_value)] if imei_value else []) + (
        [device_key("serial", serial)] if serial else []
    )
    publish(
        platform,
        CertificateIssued(
            certificate_id=cid,
            device_keys=keys,
            device_kind=kind,
            media_type="flash",
            method="crypto_erase",
            tool_id="tool_1",
            issued_at=datetime.now(UTC),
        ),
    )
    return cid


def revoke(
    platform: Platform, certificate_id: str, keys: list[str], reason: str = "secondary verification failed"
):
    publish(
        platform,
        CertificateRevoked(
            certificate_id=certificate_id, device_keys=keys, reason=reason, revoked_at=datetime.now(UTC)
        ),
    )


def book_body(**over: Any) -> dict[str, Any]:
    body = {
        "title": "《三体》全集 刘慈欣 九成新",
        "description": "三本一套，无笔记，无破损",
        "category": "books.general",
        "condition": "like_new",
        "price_fen": 4500,
        "city_code": CITY,
        "images": ["https://img.example.cn/a.jpg"],
    }
    body.update(over)
    return body


def phone_body(imei_value: str, **over: Any) -> dict[str, Any]:
    body = {
        "title": "华为 Mate 40 Pro 8+256G 亮黑色",
        "description": "自用一手手机，电池健康 92%，已恢复出厂并专业清除数据",
        "category": "electronics.phone",
        "condition": "good",
        "price_fen": 189900,
        "city_code": CITY,
        "device": {"kind": "phone", "imei": imei_value},
    }
    body.update(over)
    return body
