"""A Redis database of its own for each test session.

Several test sessions run on one machine at once (engineers, CI): sharing one database, one session's FLUSHDB
wiped another's budget counters mid-test, and two distributed runs' Celery workers took each other's tasks. A
session without TEST_REDIS_URL leases a free database of 1-15 instead: a key per database in db 0, set only if
absent (SET NX), with an expiry a thread keeps renewing while the session runs (a killed session frees its
database after `TTL_S`). A session with TEST_REDIS_URL takes that database's lease too when it is free, so the
others pass it by.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator

import redis

POOL = range(1, 16)
TTL_S = 120


def _key(db: int) -> str:
    return f"recycle:test-session-redis-db:{db}"


@contextlib.contextmanager
def leased_redis_db(server: str, explicit: int | None = None) -> Iterator[int | None]:
    """Yield the database this session may use alone (`explicit` if given: yielded even when another session
    holds it), or None if every database of the pool is held."""
    admin = redis.Redis.from_url(f"{server}/0", socket_connect_timeout=3)
    me = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
    candidates = [explicit] if explicit is not None else list(POOL)
    got = next((db for db in candidates if admin.set(_key(db), me, nx=True, ex=TTL_S)), None)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(TTL_S / 4):
            with contextlib.suppress(redis.RedisError):
                if admin.get(_key(got)) == me.encode():
                    admin.expire(_key(got), TTL_S)

    if got is not None:
        threading.Thread(target=renew, name="redis-lease", daemon=True).start()
    try:
        yield got if explicit is None else explicit
    finally:
        stop.set()
        if got is not None:
            with contextlib.suppress(redis.RedisError):
                if admin.get(_key(got)) == me.encode():
                    admin.delete(_key(got))
        admin.close()
