"""Distributed run: forward each declared route to the process of the service that owns it.

Pooled keep-alive connections and time-outs; the reply (status, headers, body) is passed through unchanged, and
streamed replies (SSE) are streamed. An unreachable service answers 502/504 as problem+json.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from services.kernel.http import RouteDef, authenticate, problem_for, problem_reply

FORWARD_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Accept",
    "Last-Event-ID",
    "X-Forwarded-For",
    "X-Trace-Id",
)
RETURN_HEADERS = (
    "Content-Type",
    "Retry-After",
    "Location",
    "Cache-Control",
    "Content-Disposition",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Idempotent-Replayed",  # the service answered a retry with the reply of the request that did the work
)


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    conn = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
    app["proxy_session"] = aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=None, connect=3, sock_read=30)
    )
    yield
    await app["proxy_session"].close()


def mount_forwarders(app: web.Application, routes: list[RouteDef], urls: dict[str, str]) -> None:
    missing = sorted({r.service for r in routes} - set(urls))
    if missing:
        from services.kernel.settings import ConfigError

        raise ConfigError(f"SERVICE_URLS has no address for {missing}; give every service's base URL as JSON")
    app["service_urls"] = urls
    app.cleanup_ctx.append(_session_ctx)
    for r in routes:
        app.router.add_route(r.method, r.path, _forwarder(r, urls[r.service]), name=r.operation_id)


def _forwarder(route: RouteDef, base: str):  # noqa: ANN202
    async def forward(request: web.Request) -> web.StreamResponse:
        # The gateway authenticates and applies the route's policy before anything leaves it (the service checks
        # again: it never trusts the network), so both runs answer 401/403 the same way.
        route.policy.check(await authenticate(request))
        session: aiohttp.ClientSession = request.app["proxy_session"]
        headers = {h: request.headers[h] for h in FORWARD_HEADERS if h in request.headers}
        headers["X-Request-Id"] = request["request_id"]
        # the public address the client used (a service prints it, e.g. in a certificate's QR code)
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
        # body_exists, not can_read_body: the idempotency middleware may have read (and cached) the body already
        body = await request.read() if request.body_exists else None
        url = base.rstrip("/") + request.rel_url.path_qs
        try:
            upstream = await session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                timeout=aiohttp.ClientTimeout(
                    total=None if route.raw else upstream_timeout_s(request), connect=3
                ),
            )
        except TimeoutError:
            return problem_reply(problem_for(504, f"the {route.service} service did not answer in time"))
        except aiohttp.ClientError:
            return problem_reply(problem_for(502, f"the {route.service} service is unreachable"))
        try:
            out_headers = {h: upstream.headers[h] for h in RETURN_HEADERS if h in upstream.headers}
            if route.raw:
                resp = web.StreamResponse(status=upstream.status, headers=out_headers)
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            data = await upstream.read()
            return web.Response(body=data, status=upstream.status, headers=out_headers)
        finally:
            upstream.release()

    forward.__name__ = f"forward_{route.operation_id}"
    return forward


def upstream_timeout_s(request: web.Request) -> float:
    gateway = request.app.get("gateway")
    return gateway.gw.upstream_timeout_s if gateway is not None else 30.0


async def probe_services(app: web.Application) -> dict[str, str]:
    out = {}
    session: aiohttp.ClientSession = app["proxy_session"]
    for name, base in app["service_urls"].items():
        try:
            async with session.get(base.rstrip("/") + "/readyz", timeout=aiohttp.ClientTimeout(total=3)) as r:
                out[f"service:{name}"] = "ok" if r.status == 200 else f"status {r.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            out[f"service:{name}"] = f"error: {type(exc).__name__}"
    return out
