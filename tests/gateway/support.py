"""Helpers for tests through the public API (the gateway, embedded, in process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.app import create_app_over
from services.accounts.sms import sms_of
from services.bootstrap import Platform
from services.kernel.settings import Settings

# Valid test identities (check characters computed, see services/kernel/checkdigits.py)
ID_NUMBER = "11010519491231002X"
USCC = "91350100M000100Y43"
CITY_CODE = "110105"


async def start(
    aiohttp_client,
    settings: Settings,
    platform: Platform | None = None,  # noqa: ANN001, ANN201
    services: list[str] | None = ["accounts"],  # noqa: B006
):
    """(platform, client) for the embedded gateway; background threads off: call platform.drain().

    Hosts only accounts unless `services` says otherwise (None: every service) — ten times faster to prepare;
    the gateway's OpenAPI document and route table stay complete either way."""
    platform = platform or Platform(settings, services=services).prepare()
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def sms_code(platform: Platform, phone: str) -> str:
    """The last login code 'sent' to `phone` (the log SMS provider's outbox: in process only, never over HTTP)."""
    code = sms_of(platform["accounts"]).last_code(phone)
    assert code, f"no code sent to {phone}"
    return code


@dataclass
class User:
    user_id: str
    access_token: str
    refresh_token: str
    roles: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def login(client, platform: Platform, phone: str) -> User:  # noqa: ANN001
    r = await client.post("/v1/auth/otp", json={"phone": phone})
    assert r.status == 202, await r.text()
    r = await client.post("/v1/auth/token", json={"phone": phone, "code": sms_code(platform, phone)})
    assert r.status == 200, await r.text()
    body = await r.json()
    return User(body["user_id"], body["access_token"], body["refresh_token"], body["roles"])


async def call(client, method: str, path: str, user: User | None = None, **kw: Any) -> tuple[int, Any]:  # noqa: ANN001
    headers = dict(kw.pop("headers", {}))
    if user is not None:
        headers.update(user.auth)
    r = await client.request(method, path, headers=headers, **kw)
    ctype = r.headers.get("Content-Type", "")
    body = await r.json(content_type=None) if "json" in ctype else await r.text()
    return r.status, body
