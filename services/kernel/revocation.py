"""Token revocation that takes effect on the next request: a per-user token version.

Accounts keeps each user's token version in its database (the truth) and raises it whenever the user's access
shrinks (a role or firm role taken away), the user is suspended, or logs out. Every access token carries the
version it was issued at (claim `ver`). Every request's token is checked against a *cached copy* of the current
versions, kept here: a token older than its user's version is refused (401 `token_revoked`); the client refreshes
(refresh tokens survive a role change and carry the roles as they are now; suspension and logout revoke them too).

The cached copy lives in memory in the embedded run (one process serves every HTTP request) and in Redis in the
distributed run (REDIS_URL: the gateway and every service process read the same copy). Accounts writes it after
committing a change, and again at start-up for every version raised within the access-token lifetime, so a
restarted process or a flushed Redis learns the recent revocations back. An entry lives as long as an access token:
by then every token issued before the change has expired on its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol

from .settings import Settings

KEY_PREFIX = "recycle:tokver:"


class TokenVersions(Protocol):
    def current(self, user_id: str) -> int:
        """The user's current token version (0 when none was ever raised or the entry has aged out)."""

    async def acurrent(self, user_id: str) -> int: ...

    def raise_to(self, user_id: str, version: int, ttl_s: int) -> None:
        """Record `version` as current, unless a higher one is recorded already (writers may race)."""


class MemoryTokenVersions:
    """The embedded run's copy: one process answers every request."""

    def __init__(self) -> None:
        self._v: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def current(self, user_id: str) -> int:
        hit = self._v.get(user_id)
        if hit is None:
            return 0
        if hit[1] <= time.monotonic():
            self._v.pop(user_id, None)
            return 0
        return hit[0]

    async def acurrent(self, user_id: str) -> int:
        return self.current(user_id)

    def raise_to(self, user_id: str, version: int, ttl_s: int) -> None:
        with self._lock:
            if version >= self.current(user_id):
                self._v[user_id] = (version, time.monotonic() + ttl_s)


# KEYS[1]: the user's key; ARGV: version, ttl ms. Only ever raises the stored version.
_RAISE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) >= cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class RedisTokenVersions:
    """The distributed run's copy, shared by the gateway and every service process."""

    def __init__(self, url: str, prefix: str = KEY_PREFIX):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._raise = self.redis.register_script(_RAISE)

    def current(self, user_id: str) -> int:
        v = self.redis.get(self.prefix + user_id)
        return int(v) if v is not None else 0

    async def acurrent(self, user_id: str) -> int:
        # the sync client in a worker thread: one client works for every event loop (tests run many)
        return await asyncio.to_thread(self.current, user_id)

    def raise_to(self, user_id: str, version: int, ttl_s: int) -> None:
        self._raise(keys=[self.prefix + user_id], args=[version, max(1, ttl_s) * 1000])


_STORES: dict[tuple[str, ...], TokenVersions] = {}
_STORES_LOCK = threading.Lock()


def token_versions(settings: Settings) -> TokenVersions:
    """The copy this process reads and accounts writes (one per Redis URL, or per data directory in memory)."""
    key = ("redis", settings.redis_url) if settings.redis_url else ("memory", str(settings.data_dir))
    store = _STORES.get(key)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(key)
            if store is None:
                store = (
                    RedisTokenVersions(settings.redis_url) if settings.redis_url else MemoryTokenVersions()
                )
                _STORES[key] = store
    return store
