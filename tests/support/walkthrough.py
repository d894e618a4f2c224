"""The public API of an in-process platform as the walk-throughs drive it (aiohttp's test client)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from services.bootstrap import Platform


class Walkthrough:
    """Each request's status checked, then the platform drained: what its background threads do in a running
    platform (relays, consumers), so the next step sees every event of this one."""

    def __init__(self, client: TestClient, platform: Platform) -> None:
        self.client, self.platform = client, platform

    async def __call__(
        self, method: str, path: str, token: str | None = None, body: dict | None = None, status: int = 200
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await self.client.request(method, path, json=body, headers=headers)
        data = await r.json(content_type=None)
        assert r.status == status, (method, path, r.status, data)
        self.platform.drain()
        return data

    async def login(self, phone: str) -> dict:
        """Sign in with the dev OTP code: the token reply."""
        otp = await self("POST", "/v1/auth/otp", body={"phone": phone}, status=202)
        return await self("POST", "/v1/auth/token", body={"phone": phone, "code": otp["dev_code"]})
