"""Gateway-only middlewares and system routes: access log, metrics, CORS, body size, rate limits, idempotency.

Order (outermost first), as `create_app` assembles it:

1. `observe`          – times every request, counts it for /metrics and writes one access-log line, after
                        everything below has produced the final reply (errors included);
2. `request_context`  – (services.kernel.http) request id, trace id, every error → problem+json;
3. `preflight`        – answers CORS preflights for the allowed origin (other origins get no CORS headers);
4. `body_limit`       – refuses a declared Content-Length above MAX_BODY_BYTES with 413 before reading it
                        (aiohttp's client_max_size catches chunked bodies when they are read);
5. `rate_limit`       – per client IP, then per user, then the route's declared budgets (e.g. login codes per
                        client and for the whole platform; 429 with Retry-After);
6. `idempotency`      – Idempotency-Key on POST (claim, replay, 422 on reuse).

CORS headers on actual replies are added in `on_response_prepare`, so error replies carry them too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from services.kernel.db import Database
from services.kernel.http import RouteDef, principal_or_none, problem_for, problem_reply
from services.kernel.settings import Settings

from .idempotency import IdempotencyMiddleware, IdempotencyStore, RedisIdempotencyStore, SqlIdempotencyStore
from .ratelimit import MemoryRateLimiter, RateLimiter, RateLimitMiddleware, RedisRateLimiter
from .settings import GatewaySettings, gateway_settings

access_log = logging.getLogger("gateway.access")
log = logging.getLogger(__name__)

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-Id",
    "Last-Event-ID",
    "Accept",
)
EXPOSED_HEADERS = "X-Request-Id, Retry-After, Idempotent-Replayed, Location"
UNMATCHED = "<unmatched>"


def route_template(request: web.Request) -> str:
    """The route's path template (e.g. /v1/firms/{id}): bounded label values for metrics and logs."""
    try:
        resource = request.match_info.route.resource
    except AttributeError:
        return UNMATCHED
    return resource.canonical if resource is not None else UNMATCHED


@dataclass
class Gateway:
    """The gateway's own state: settings, stores, metrics. One per app (tests build many apps)."""

    settings: Settings
    gw: GatewaySettings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    limiter: RateLimiter | None = None
    idempotency_store: IdempotencyStore | None = None
    _purger: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.allowed_origins = frozenset(
            o.strip().rstrip("/") for o in self.settings.cors_origin.split(",") if o.strip()
        )
        self.idem = IdempotencyMiddleware(
            self._store, self.gw.idempotency_ttl_s, self.gw.idempotency_lock_s, self.client_ip
        )
        self.rl = RateLimitMiddleware(
            self._limiter,
            self.settings.rate_limit_per_minute,
            self.settings.rate_limit_ip_per_minute,
            self.gw.rate_limit_window_s,
            self.client_ip,
            self.settings,
        )

    # Stores are opened at startup (cleanup_ctx); the middlewares reach them through these proxies.
    @property
    def _store(self) -> IdempotencyStore:
        return _Deferred(self, "idempotency_store")  # type: ignore[return-value]

    @property
    def _limiter(self) -> RateLimiter:
        return _Deferred(self, "limiter")  # type: ignore[return-value]

    def client_ip(self, request: web.Request) -> str:
        if self.gw.trust_forwarded_for:
            fwd = request.headers.get("X-Forwarded-For", "")
            if fwd.strip():
                return fwd.split(",")[0].strip()
        return request.remote or "unknown"

    # --- middlewares ------------------------------------------------------------------------------------
    def outer(self) -> list:
        return [self.observe]

    def inner(self) -> list:
        return [self.preflight, self.body_limit, self.rl.middleware(), self.idem.middleware()]

    @web.middleware
    async def observe(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:  # redirects pass through request_context
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(request)
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route, str(status)).observe(elapsed)
            principal = principal_or_none(request) if "principal" in request else None
            access_log.info(
                "request",
                extra={
                    "http_method": request.method,
                    "route": route,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request.get("request_id"),
                    "user_id": principal.user_id if principal else None,
                    "client_ip": self.client_ip(request),
                },
            )

    @web.middleware
    async def preflight(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            origin = request.headers.get("Origin", "").rstrip("/")
            if origin not in self.allowed_origins:
                return problem_reply(
                    problem_for(403, "this origin may not call the API from a browser", instance=request.path)
                )
            asked = [
                h.strip()
                for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
                if h.strip()
            ]
            allowed = {h.lower() for h in ALLOWED_HEADERS}
            headers = {
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ", ".join(
                    [h for h in asked if h.lower() in allowed] or ALLOWED_HEADERS
                ),
                "Access-Control-Max-Age": "600",
            }
            return web.Response(status=204, headers=headers)
        return await handler(request)

    async def cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: CORS headers on every reply to the allowed origin (errors included)."""
        origin = request.headers.get("Origin", "").rstrip("/")
        vary = response.headers.get("Vary", "")
        if "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        if origin and origin in self.allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS

    @web.middleware
    async def body_limit(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        return await handler(request)

    # --- lifecycle ---------------------------------------------------------------------------------------
    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if self.settings.redis_url:
            prefix = self.gw.gateway_redis_prefix
            self.limiter = RedisRateLimiter(self.settings.redis_url, prefix)
            self.idempotency_store = RedisIdempotencyStore(self.settings.redis_url, prefix)
        else:
            self.limiter = MemoryRateLimiter()
            db = Database(
                self.settings.db_url("gateway"), schema=self.settings.db_schema("gateway"), pool_size=5
            )
            self.idempotency_store = await loop.run_in_executor(None, SqlIdempotencyStore, db)
        self._purger = asyncio.create_task(self._purge_loop())
        yield
        self._purger.cancel()
        for closeable in (self.limiter, self.idempotency_store):
            try:
                await closeable.close()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                log.warning("closing %s failed", type(closeable).__name__)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(600)
            try:
                n = await self.idempotency_store.purge_expired()  # type: ignore[union-attr]
                if n:
                    log.info("purged %d expired idempotency keys", n)
            except Exception:  # noqa: BLE001
                log.warning("purging idempotency keys failed", exc_info=True)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics for the scraper that holds METRICS_TOKEN: route names and traffic are nobody else's
        business. Without a token configured they are not served."""
        token = self.settings.metrics_token
        if not token:
            return problem_reply(
                problem_for(
                    404,
                    "metrics are not served here (set METRICS_TOKEN to enable them)",
                    instance=request.path,
                )
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return problem_reply(
                problem_for(401, "metrics need Authorization: Bearer <METRICS_TOKEN>", instance=request.path),
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


class _Deferred:
    """Forwards calls to an attribute of the gateway that is only set at startup."""

    def __init__(self, owner: Gateway, attr: str):
        self._owner, self._attr = owner, attr

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._owner, self._attr)
        if target is None:
            raise RuntimeError("the gateway has not started yet")
        return getattr(target, name)


def install(app: web.Application, gateway: Gateway, routes: list[RouteDef] = ()) -> None:  # type: ignore[assignment]
    """System routes, CORS headers, the routes' budgets and the stores' lifecycle."""
    app["gateway"] = gateway
    gateway.rl.budgets = {(r.method, r.path): r.budgets for r in routes if r.budgets}
    app.router.add_get("/metrics", gateway.metrics)
    app.on_response_prepare.append(gateway.cors_headers)
    app.cleanup_ctx.append(gateway.lifecycle)


def build(settings: Settings) -> Gateway:
    return Gateway(settings, gateway_settings(settings))
