"""Rate limits per client IP and per user: the port, two adapters (in-memory, Redis) and the middleware.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a key may send a
burst of `limit` requests, then one every `window/limit` seconds. A refused request gets 429 problem+json with
`Retry-After` (whole seconds until one more request would pass). State per key is a single number, so the Redis
adapter is one atomic script using the server's clock (gateway replicas' clocks do not matter).

The embedded run keeps the state in memory (one process); with REDIS_URL set every gateway replica shares it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from services.kernel.errors import RateLimited, Unavailable
from services.kernel.http import Budget, principal_or_none
from services.kernel.settings import Settings

from .captcha import HumanCheck, NoHumanCheck

log = logging.getLogger(__name__)

# Never limited: probes, scrapes and the (static) API documents; CORS preflights carry no credentials either.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})


def _template(request: web.Request) -> str:
    try:
        resource = request.match_info.route.resource
    except AttributeError:
        return ""
    return resource.canonical if resource is not None else ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    remaining: int = 0


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        """Count one request for `key`; refuse it if the key is over `limit` per `window_s`."""

    async def close(self) -> None: ...


# (now + interval·n) - window is not exact in floating point: without slack a fresh key's first call was refused
# about once in 650 at a limit of 1 (the clock's value decided, not the load). A call may come 1 % of an interval
# early; the call after the burst is still refused (it is a whole interval early).
_SLACK = 0.01


def gcra(tat: float | None, now: float, limit: int, window_s: float) -> tuple[Decision, float | None]:
    """One GCRA step: (decision, the new theoretical arrival time to store, or None to keep the old one)."""
    interval = window_s / limit
    tat = max(tat if tat is not None else now, now)
    new_tat = tat + interval
    allow_at = new_tat - window_s
    if allow_at - now > interval * _SLACK:
        return Decision(False, allow_at - now, 0), None
    remaining = int((window_s - (new_tat - now)) / interval + 1e-9)
    return Decision(True, 0.0, max(remaining, 0)), new_tat


class MemoryRateLimiter:
    """One process's limits (the embedded run). Memory stays bounded: idle keys are swept."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000):
        self._tat: dict[str, float] = {}
        self._clock = clock
        self._sweep_every = sweep_every
        self._hits = 0

    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        now = self._clock()
        decision, new_tat = gcra(self._tat.get(key), now, limit, window_s)
        if new_tat is not None:
            self._tat[key] = new_tat
        self._hits += 1
        if self._hits % self._sweep_every == 0:
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        return decision

    async def close(self) -> None:
        self._tat.clear()


# KEYS[1]: the key; ARGV: limit, window in ms. Uses the Redis server clock. Returns {allowed, retry_ms, remaining}.
_GCRA = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local interval = window / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at - now > interval * 0.01 then  -- the same slack as gcra(): float rounding
  return {0, math.ceil(allow_at - now), 0}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0, math.floor((window - (new_tat - now)) / interval + 0.000001)}
"""


class RedisRateLimiter:
    """Limits shared by every gateway replica (REDIS_URL)."""

    def __init__(self, url: str, prefix: str = "recycle:gw:"):
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._script = self.redis.register_script(_GCRA)

    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        allowed, retry_ms, remaining = await self._script(
            keys=[self.prefix + "rl:" + key], args=[limit, int(window_s * 1000)]
        )
        return Decision(bool(allowed), int(retry_ms) / 1000, int(remaining))

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass
class RateLimitMiddleware:
    limiter: RateLimiter
    per_user: int
    per_ip: int
    window_s: float
    client_ip: Callable[[web.Request], str]
    settings: Settings | None = None
    # (method, path template) -> the route's declared budgets; filled in by create_app from the route table
    budgets: dict[tuple[str, str], tuple[Budget, ...]] = field(default_factory=dict)
    human_check: HumanCheck = field(default_factory=NoHumanCheck)

    def middleware(self) -> Callable:
        @web.middleware
        async def rate_limit(request: web.Request, handler: Callable) -> web.StreamResponse:
            if request.method != "OPTIONS" and request.path not in EXEMPT_PATHS:
                await self.check(request)
                budgets = self.budgets.get((request.method, _template(request)))
                if budgets:
                    await self.spend(request, budgets)
            return await handler(request)

        return rate_limit

    async def spend(self, request: web.Request, budgets: tuple[Budget, ...]) -> None:
        """Count one call against each of the route's budgets (per client first, then global)."""
        for b in sorted(budgets, key=lambda b: b.per != "client"):
            limit = int(getattr(self.settings, b.setting))
            if limit <= 0:
                continue
            key = f"budget:{b.name}:" + (
                f"client:{self.client_ip(request)}" if b.per == "client" else "global"
            )
            try:
                d = await self.limiter.hit(key, limit, b.window_s)
            except Exception as exc:  # noqa: BLE001 - fail closed: every call past a budget costs money
                log.warning("budget store unavailable: %s", type(exc).__name__)
                raise Unavailable("cannot check the request budget right now; retry shortly") from exc
            if d.allowed:
                continue
            if b.per == "client" and await self.human_check.passed(request):
                continue
            who = "this address" if b.per == "client" else "the platform (all clients)"
            raise RateLimited(
                f"too many {b.name} requests from {who}: at most {limit} per {b.window_s // 60 or 1}"
                f" minute(s); retry later",
                retry_after_s=max(1, math.ceil(d.retry_after_s)),
                reason=f"{b.name}_budget",
                budget=b.per,
            )

    async def check(self, request: web.Request) -> None:
        checks = []
        if self.per_ip > 0:
            checks.append(("ip:" + self.client_ip(request), self.per_ip, "this address"))
        principal = principal_or_none(request)  # a bad token is refused later, by the route's policy
        if principal is not None and self.per_user > 0:
            checks.append(("user:" + principal.user_id, self.per_user, "this user"))
        for key, limit, who in checks:
            try:
                d = await self.limiter.hit(key, limit, self.window_s)
            except (TimeoutError, OSError, ConnectionError) as exc:
                # Fail open: an unreachable limiter store must not take the whole API down.
                log.warning("rate limiter unavailable: %s", type(exc).__name__)
                return
            except Exception as exc:  # noqa: BLE001 - redis-py raises its own ConnectionError types
                log.warning("rate limiter failed: %s", type(exc).__name__)
                return
            if not d.allowed:
                raise RateLimited(
                    f"too many requests from {who}: at most {limit} per {self.window_s:g} s",
                    retry_after_s=max(1, math.ceil(d.retry_after_s)),
                )
