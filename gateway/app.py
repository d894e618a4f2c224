"""The gateway: the one public entry.

Embedded run: every service is hosted in this process and its routes are mounted here.
Distributed run (`SERVICES=none` and `SERVICE_URLS` set): the same route table is mounted as forwarders to each
service's own process. Either way the gateway owns request ids, problem+json, authentication, rate limits,
idempotency, CORS, metrics and the generated OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from services.bootstrap import Platform
from services.kernel.http import RouteDef, harden, json_reply, mount, request_context, settle_heap
from services.kernel.runtime import available_services, load_spec
from services.kernel.settings import Settings, get_settings

from . import admin, console, docs_page, middlewares, proxy
from .openapi import build_openapi

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def all_routes() -> list[RouteDef]:
    routes: list[RouteDef] = []
    for name in available_services():
        spec = load_spec(name)
        if spec.router is not None:
            routes.extend(spec.router.routes)
    return routes


def _reply(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict:
    """One OpenAPI response: its description and, when it has a body, the body's media type and schema."""
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


def _route(
    path: str, method: str, tag: str, policy: str, responses: dict[str, dict], **op: Any
) -> dict[str, Any]:
    """A route the gateway serves itself, in the shape `build_openapi` takes (`op`: operationId, summary, ...)."""
    return {
        "path": path,
        "method": method,
        "op": {**op, "tags": [tag], "x-policy": policy, "responses": responses},
    }


OBJECT = {"type": "object"}
HTML = _reply("HTML", {"type": "string"}, "text/html")
# what every admin route may answer besides its own replies
ADMIN_REFUSALS = {
    "401": _reply("no or bad token"),
    "403": _reply("not an admin"),
    "503": _reply("this gateway hosts no service (distributed run)"),
}
GROUP_PARAMETER = {"name": "group", "in": "path", "required": True, "schema": {"type": "string"}}
NO_GROUP = {"404": _reply("no such consumer group")}


def _admin(path: str, method: str, responses: dict[str, dict], **op: Any) -> dict[str, Any]:
    return _route(path, method, "admin", "roles:admin", {**responses, **ADMIN_REFUSALS}, **op)


SYSTEM_ROUTES = [
    _route(
        "/healthz",
        "GET",
        "system",
        "public",
        {
            "200": _reply(
                "OK", {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
            )
        },
        operationId="healthz",
        summary="liveness",
    ),
    _route(
        "/readyz",
        "GET",
        "system",
        "public",
        {"200": _reply("ready", OBJECT), "503": _reply("not ready", OBJECT)},
        operationId="readyz",
        summary="readiness: databases and bus",
    ),
    _route(
        "/openapi.json",
        "GET",
        "system",
        "public",
        {"200": _reply("OK", OBJECT)},
        operationId="openapi",
        summary="this document",
    ),
    _route(
        "/metrics",
        "GET",
        "system",
        "metrics token",
        {
            "200": _reply("Prometheus text format", {"type": "string"}, "text/plain"),
            "401": _reply("no or wrong metrics token", OBJECT, "application/problem+json"),
            "404": _reply("metrics not enabled (no METRICS_TOKEN)", OBJECT, "application/problem+json"),
        },
        operationId="metrics",
        summary="Prometheus metrics: requests and latency by route template and status (METRICS_TOKEN bearer)",
    ),
    _route(
        "/docs",
        "GET",
        "system",
        "public",
        {"200": HTML},
        operationId="docs",
        summary="API docs page (works offline)",
    ),
    _admin(
        "/v1/admin/dead-letters",
        "GET",
        {
            "200": _reply(
                "OK",
                {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["group", "parked"],
                                "properties": {"group": {"type": "string"}, "parked": {"type": "integer"}},
                            },
                        }
                    },
                },
            )
        },
        operationId="list_dead_letter_groups",
        summary="(admin) every consumer group with the number of records it parked",
    ),
    _admin(
        "/v1/admin/dead-letters/{group}",
        "GET",
        {
            "200": _reply(
                "OK",
                {
                    "type": "object",
                    "required": ["group", "items"],
                    "properties": {
                        "group": {"type": "string"},
                        "items": {
                            "type": "array",
                            "items": {"type": "object", "required": ["id", "original", "attempts", "error"]},
                        },
                    },
                },
            ),
            **NO_GROUP,
        },
        operationId="list_dead_letters",
        summary="(admin) the records a consumer group parked: original topic and offset, attempts, error",
        parameters=[GROUP_PARAMETER],
    ),
    _admin(
        "/v1/admin/dead-letters/{group}/replay",
        "POST",
        {
            "200": _reply(
                "OK",
                {
                    "type": "object",
                    "required": ["group", "replayed"],
                    "properties": {"group": {"type": "string"}, "replayed": {"type": "integer"}},
                },
            ),
            "400": _reply("malformed body"),
            **NO_GROUP,
        },
        operationId="replay_dead_letters",
        summary="(admin) send a group's parked records (all, or `only` these ids) back to their topic",
        parameters=[GROUP_PARAMETER],
        requestBody={
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "only": {
                                "type": "array",
                                "maxItems": 1000,
                                "items": {"type": "string", "pattern": "^[0-9]+@[0-9]+$"},
                            }
                        },
                    }
                }
            },
        },
    ),
    _route(
        "/console/",
        "GET",
        "system",
        "public",
        {"200": HTML},
        operationId="console",
        summary="the web console (Chinese UI; works offline): price indices, invoices and exports, admin, lots",
    ),
]


def create_app(settings: Settings | None = None, platform: Platform | None = None) -> web.Application:
    """The gateway app. Flags a test may set on the returned app before it starts: `platform_prepared` (the
    platform was prepared already), `platform_no_background` (no relay/consumer threads; call drain()),
    `platform_no_stop` (the caller stops the platform, e.g. one shared by many tests). `create_app_over` sets the
    first two."""
    settings = settings or get_settings()
    distributed = settings.services == "none"
    gateway = middlewares.build(settings)
    app = web.Application(
        middlewares=[*gateway.outer(), request_context, *gateway.inner()],
        client_max_size=settings.max_body_bytes,
    )
    app["settings"] = settings
    routes = all_routes()
    app["routes"] = routes
    app["openapi"] = build_openapi(routes, SYSTEM_ROUTES, "Recycling marketplace API", VERSION)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs_page.handler)
    console.install(app)
    admin.install(app)
    middlewares.install(app, gateway, routes)
    harden(app)

    if distributed:
        proxy.mount_forwarders(app, routes, settings.service_url_map)
        app["platform"] = None
    else:
        platform = platform or Platform(settings)
        app["platform"] = platform
        for rt in platform.runtimes.values():
            mount(app, rt)
        app.cleanup_ctx.append(_platform_ctx)
        gateway.registry.register(admin.ParkedCollector(platform))
    settle_heap(app)  # after the platform's context: what it loads is frozen too
    return app


def create_app_over(platform: Platform) -> web.Application:
    """The gateway app over a platform its caller prepared and drives by hand (tests, benchmarks): it prepares
    nothing and starts no relay or consumer threads (the caller calls `platform.drain()`)."""
    app = create_app(platform.settings, platform)
    app["platform_prepared"] = True
    app["platform_no_background"] = True
    return app


async def _platform_ctx(app: web.Application) -> AsyncIterator[None]:
    platform: Platform = app["platform"]
    if not app.get("platform_prepared"):
        await _in_thread(platform.prepare)
    if not app.get("platform_no_background"):
        platform.start()
    yield
    if not app.get("platform_no_stop"):
        await _in_thread(platform.stop)


async def _in_thread(fn: Any) -> Any:
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def healthz(request: web.Request) -> web.Response:
    return json_reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    platform: Platform | None = request.app["platform"]

    def probe() -> None:
        from sqlalchemy import text

        if platform is None:
            return
        for name, rt in platform.runtimes.items():
            try:
                with rt.db.engine.connect() as c:
                    c.execute(text("SELECT 1"))
                checks[f"db:{name}"] = "ok"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                checks[f"db:{name}"] = f"error: {type(exc).__name__}"
        try:
            platform.bus.end_offsets("platform.heartbeat")
            checks["bus"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["bus"] = f"error: {type(exc).__name__}"

    if platform is None:
        checks.update(await proxy.probe_services(request.app))
    else:
        await _in_thread(probe)
    settings: Settings = request.app["settings"]
    if settings.redis_url:
        checks["redis"] = await _probe_redis(settings.redis_url)
    checks.update(_supervised_processes())
    ok = all(v == "ok" for v in checks.values())
    return json_reply({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


def _supervised_processes() -> dict[str, str]:
    """`process:<name>` for each process the supervisor runs (recycle run / run-dist): a crashed one shows as
    `restarting` until it is back."""
    import json
    import os

    path = os.environ.get("SUPERVISOR_STATE_FILE")
    if not path:
        return {}
    try:
        with open(path) as f:
            states = json.load(f)
    except (OSError, ValueError):
        return {}
    return {
        f"process:{name}": "ok" if v.get("state") == "up" else v.get("state", "unknown")
        for name, v in states.items()
    }


async def _probe_redis(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"
    finally:
        await client.aclose()


async def openapi(request: web.Request) -> web.Response:
    return json_reply(request.app["openapi"])
