"""Both runs of the platform on real sockets, for tests that probe it as an outside client would.

- embedded: the gateway hosts every service in process (memory rate limits, SQLite idempotency store, token
  versions in memory);
- distributed: the gateway (SERVICES=none) forwards every route to a service process's app
  (`services.kernel.http.service_app`, what `recycle serve-service` serves), and the gateway's limits,
  idempotency keys and the token versions live in Redis.

Each topology runs in a thread with its own event loop, so one is shared by many tests (any event loop may
call it). Background threads are off: `drain()` runs relays and consumers to quiescence.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import create_app
from services.accounts.sms import sms_of
from services.bootstrap import Platform
from services.kernel.http import service_app
from services.kernel.runtime import available_services
from services.kernel.settings import Settings

MODES = ("embedded", "distributed")
SECRET = "security-secret-" + "x" * 32
PII_KEY = "dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0="
ADMIN_PHONE = "13900000001"
_phones = itertools.count(1)


def new_phone() -> str:
    """A fresh mainland mobile number (distinct across the whole test session)."""
    return f"137{uuid.uuid4().int % 10**4:04d}{next(_phones) % 10**4:04d}"


def settings_for(mode: str, data_dir: Path, redis_url: str | None, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        env="test",
        data_dir=data_dir,
        bus="dblog",
        jwt_secret=SECRET,
        pii_key=PII_KEY,
        admin_phones=ADMIN_PHONE,
        rate_limit_per_minute=100_000,
        rate_limit_ip_per_minute=100_000,
        otp_per_client_limit=100_000,
        otp_global_limit=100_000,
    )
    if mode == "distributed":
        assert redis_url, "the distributed run keeps its limits and token versions in Redis"
        base |= dict(redis_url=redis_url)
    return Settings(**(base | overrides))


class Topology:
    """One run of the platform, listening on 127.0.0.1 (see the module doc)."""

    def __init__(self, mode: str, settings: Settings, services: list[str] | None = None):
        self.mode = mode
        self.settings = settings
        self.platform = Platform(settings, services=services).prepare()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runners: list[web.AppRunner] = []
        self.url = ""
        self.admin_user: User | None = None
        self.gateway_app: web.Application | None = None
        self.thread = threading.Thread(target=self._run, name=f"topology-{mode}", daemon=True)

    def __enter__(self) -> Topology:
        self.thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for r in reversed(self._runners):
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.platform.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _start(self) -> None:
        if self.mode == "embedded":
            app = create_app(self.settings, self.platform)
        else:
            upstream = await self._serve(service_app(self.settings, list(self.platform.runtimes.values())))
            urls = {name: upstream for name in available_services()}
            app = create_app(
                self.settings.model_copy(update={"services": "none", "service_urls": json.dumps(urls)})
            )
        app["platform_prepared"] = app["platform_no_background"] = app["platform_no_stop"] = True
        # the gateway's Redis keys (limits, budgets, idempotency) of this topology only: runs never share them
        gateway = app["gateway"]
        gateway.gw = gateway.gw.model_copy(update={"gateway_redis_prefix": f"test:{uuid.uuid4().hex[:10]}:"})
        self.gateway_app = app
        self.url = await self._serve(app)

    def drain(self) -> None:
        self.platform.drain()

    def sms_code(self, phone: str) -> str:
        code = sms_of(self.platform["accounts"]).last_code(phone)
        assert code, f"no code sent to {phone}"
        return code


@dataclass
class User:
    user_id: str
    access_token: str
    refresh_token: str
    roles: list[str]
    phone: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) else None

    def __repr__(self) -> str:
        return f"<{self.status} {str(self.body)[:300]}>"


class Api:
    """An outside client of one topology (a session in the calling test's event loop)."""

    def __init__(self, topo: Topology, session: aiohttp.ClientSession):
        self.topo = topo
        self.session = session
        self.mode = topo.mode

    async def call(self, method: str, path: str, user: User | None = None, **kw: Any) -> Reply:
        headers = dict(kw.pop("headers", None) or {})
        if user is not None:
            headers = user.auth | headers
        async with self.session.request(method, self.topo.url + path, headers=headers, **kw) as r:
            raw = await r.read()
            ctype = r.headers.get("Content-Type", "")
            body: Any = raw.decode("utf-8", "replace")
            if "json" in ctype and raw:
                body = json.loads(raw)
            return Reply(r.status, body, r.headers)

    async def login(self, phone: str | None = None) -> User:
        phone = phone or new_phone()
        r = await self.call("POST", "/v1/auth/otp", json={"phone": phone})
        assert r.status == 202, r
        r = await self.call(
            "POST", "/v1/auth/token", json={"phone": phone, "code": self.topo.sms_code(phone)}
        )
        assert r.status == 200, r
        b = r.body
        return User(b["user_id"], b["access_token"], b["refresh_token"], b["roles"], phone)

    async def refresh(self, user: User) -> User:
        r = await self.call("POST", "/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert r.status == 200, r
        b = r.body
        return User(b["user_id"], b["access_token"], b["refresh_token"], b["roles"], user.phone)

    async def admin(self) -> User:
        """The bootstrap admin (logged in once per topology: a phone gets only so many codes)."""
        if self.topo.admin_user is None:
            self.topo.admin_user = await self.login(ADMIN_PHONE)
        return self.topo.admin_user

    def drain(self) -> None:
        self.topo.drain()
