"""The human-check hook (slider / captcha) for routes with a per-client budget (`Budget`, e.g. login codes).

A client over its own budget is refused with 429 unless the hook vouches that a human is asking. The default
vouches for nobody. Production plugs in its captcha provider (Aliyun 滑块验证, Tencent 天御, GeeTest, ...):
the app shows the slider when it gets `429` with `reason: otp_budget`, and sends the provider's ticket in the
`X-Captcha-Token` header with the retried request; `passed` verifies that ticket server-side with the provider.
The global budget (the cost ceiling) is never bypassed.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

HEADER = "X-Captcha-Token"


class HumanCheck(Protocol):
    async def passed(self, request: web.Request) -> bool:
        """True if the request carries a valid proof that a human is asking (verify it with the provider)."""


class NoHumanCheck:
    """The default: no captcha provider configured, so a client over its budget waits (Retry-After)."""

    async def passed(self, request: web.Request) -> bool:
        return False
