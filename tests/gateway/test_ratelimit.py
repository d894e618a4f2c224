"""Rate limits: the GCRA step, the limiter port against both adapters (memory, Redis), and 429 through the API."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ratelimit import MemoryRateLimiter, RedisRateLimiter, gcra
from tests.gateway.support import call, login, start


def test_gcra_allows_a_burst_then_one_per_interval() -> None:
    tat = None
    for i in range(5):
        d, tat = gcra(tat, 100.0, 5, 60.0)
        assert d.allowed and d.remaining == 4 - i
    d, new = gcra(tat, 100.0, 5, 60.0)
    assert not d.allowed and new is None and d.retry_after_s == pytest.approx(12.0)
    d, _ = gcra(tat, 112.0, 5, 60.0)
    assert d.allowed


@given(
    now=st.floats(min_value=0, max_value=1e8, allow_nan=False),  # a monotonic clock: seconds since boot
    limit=st.integers(min_value=1, max_value=1000),
    window_s=st.floats(min_value=1.0, max_value=86_400.0),
)
def test_gcra_allows_exactly_the_limit_at_any_clock_value(now: float, limit: int, window_s: float) -> None:
    """A fresh key takes `limit` calls at one instant and refuses the next, whatever the clock reads (float
    rounding of now + interval - window once refused a limit-1 budget's first call: an OTP asked for in vain)."""
    tat = None
    for _ in range(limit):
        d, tat = gcra(tat, now, limit, window_s)
        assert d.allowed
    d, new = gcra(tat, now, limit, window_s)
    assert not d.allowed and new is None


def test_memory_limiter_with_a_clock() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])

    async def run() -> None:
        assert all([(await limiter.hit("k", 2, 10)).allowed for _ in range(2)])
        d = await limiter.hit("k", 2, 10)
        assert not d.allowed and d.retry_after_s == pytest.approx(5.0)
        assert (await limiter.hit("other", 2, 10)).allowed
        now[0] = 5.0
        assert (await limiter.hit("k", 2, 10)).allowed

    asyncio.run(run())


@pytest.fixture(params=["memory", "redis"])
async def limiter(request):  # noqa: ANN001, ANN201
    if request.param == "memory":
        lim = MemoryRateLimiter()
    else:
        lim = RedisRateLimiter(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    yield lim
    await lim.close()


async def test_limiter_contract(limiter) -> None:  # noqa: ANN001
    decisions = [await limiter.hit("user:a", 3, 1.0) for _ in range(3)]
    assert all(d.allowed for d in decisions) and decisions[-1].remaining == 0
    refused = await limiter.hit("user:a", 3, 1.0)
    assert not refused.allowed and 0 < refused.retry_after_s <= 1 / 3 + 0.01
    assert (await limiter.hit("user:b", 3, 1.0)).allowed  # keys are independent
    await asyncio.sleep(refused.retry_after_s + 0.05)
    assert (await limiter.hit("user:a", 3, 1.0)).allowed
    assert not (await limiter.hit("user:a", 3, 1.0)).allowed


async def _per_user_limit(aiohttp_client, settings) -> None:  # noqa: ANN001
    platform, client = await start(aiohttp_client, settings)
    user = await login(client, platform, "13812345678")  # 2 requests count on the IP only
    for _ in range(3):
        st, _ = await call(client, "GET", "/v1/me", user)
        assert st == 200
    r = await client.get("/v1/me", headers=user.auth)
    assert r.status == 429 and r.content_type == "application/problem+json"
    body = await r.json()
    assert body["status"] == 429 and "this user" in body["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 20
    other = await login(client, platform, "13812345679")
    st, _ = await call(client, "GET", "/v1/me", other)
    assert st == 200  # another user has their own budget
    st, _ = await call(client, "GET", "/healthz")
    assert st == 200  # probes are never limited


async def test_per_user_limit_memory(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    await _per_user_limit(aiohttp_client, sqlite_settings.model_copy(update={"rate_limit_per_minute": 3}))


async def test_per_user_limit_redis(
    aiohttp_client,
    sqlite_settings,
    redis_url,
    redis_prefix,  # noqa: ANN001
    monkeypatch,
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_PREFIX", redis_prefix)
    await _per_user_limit(
        aiohttp_client,
        sqlite_settings.model_copy(update={"rate_limit_per_minute": 3, "redis_url": redis_url}),
    )


async def test_per_ip_limit(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    _, client = await start(
        aiohttp_client,
        sqlite_settings.model_copy(update={"rate_limit_ip_per_minute": 2}),
        services=["accounts", "booking"],
    )
    for _ in range(2):
        st, _ = await call(client, "GET", "/v1/categories")
        assert st == 200
    r = await client.get("/v1/categories")
    assert r.status == 429 and "this address" in (await r.json())["detail"]
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["X-Request-Id"]
