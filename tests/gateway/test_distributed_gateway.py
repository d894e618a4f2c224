"""The distributed gateway (SERVICES=none): it forwards to the service's own process and keeps the same behaviour —
authentication and policy, idempotency replays, problem+json, request ids — as the embedded one."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.app import create_app
from services.accounts.sms import sms_of
from services.bootstrap import Platform
from services.kernel.http import mount, request_context
from services.kernel.runtime import available_services
from tests.gateway.support import sms_code

PHONE = "13812345678"


async def _topology(aiohttp_client, aiohttp_server, settings):  # noqa: ANN001, ANN202
    platform = Platform(settings, services=["accounts"]).prepare()
    service = web.Application(middlewares=[request_context])  # what `recycle serve-service accounts` runs
    service["settings"] = settings
    mount(service, platform["accounts"])
    seen: list = []

    @web.middleware
    async def spy(request: web.Request, handler):  # noqa: ANN001, ANN202
        seen.append(request.headers.copy())  # case-insensitive
        return await handler(request)

    service.middlewares.append(spy)
    upstream = await aiohttp_server(service)
    urls = {name: str(upstream.make_url("")) for name in available_services()}
    gw_settings = settings.model_copy(update={"services": "none", "service_urls": json.dumps(urls)})
    client = await aiohttp_client(create_app(gw_settings))
    return platform, client, seen


async def test_forwarding_keeps_the_gateway_behaviour(
    aiohttp_client, aiohttp_server, sqlite_settings
) -> None:  # noqa: ANN001
    platform, client, seen = await _topology(aiohttp_client, aiohttp_server, sqlite_settings)

    key = {"Idempotency-Key": "otp-1", "X-Request-Id": "rq-dist-1"}
    r1 = await client.post("/v1/auth/otp", json={"phone": PHONE}, headers=key)
    assert r1.status == 202, await r1.text()
    assert r1.headers["X-Request-Id"] == "rq-dist-1" and seen[-1]["X-Request-Id"] == "rq-dist-1"
    r2 = await client.post("/v1/auth/otp", json={"phone": PHONE}, headers=key | {"X-Request-Id": "rq-dist-2"})
    assert (
        r2.status == 202
        and r2.headers["Idempotent-Replayed"] == "true"
        and await r2.json() == await r1.json()
    )
    assert len(sms_of(platform["accounts"]).messages(PHONE)) == 1  # the code was sent once
    r3 = await client.post("/v1/auth/otp", json={"phone": "13812345679"}, headers=key)
    assert r3.status == 422

    r = await client.post("/v1/auth/token", json={"phone": PHONE, "code": sms_code(platform, PHONE)})
    assert r.status == 200, await r.text()
    tokens = await r.json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = await client.get("/v1/me", headers=auth)
    assert r.status == 200 and (await r.json())["phone_masked"] == "138****5678"

    calls_before = len(seen)
    r = await client.get("/v1/me")  # refused by the gateway: nothing is forwarded
    assert r.status == 401 and r.content_type == "application/problem+json"
    r = await client.get("/v1/admin/verifications", headers=auth)
    assert r.status == 403 and (await r.json())["reason"] == "role_required"
    r = await client.get("/v1/me", headers={"Authorization": "Bearer forged.token.here"})
    assert r.status == 401
    assert len(seen) == calls_before

    r = await client.post("/v1/auth/otp", json={"phone": "123"})  # the service's own problem, passed through
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert (await r.json())["errors"][0]["field"] == "phone"
    platform.stop()
