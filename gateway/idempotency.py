"""Idempotency keys: the port, its two adapters, and the gateway middleware that uses them.

A client sends `Idempotency-Key: <key>` with a POST, PATCH, PUT or DELETE (`KEYED_METHODS`). The first request with a key *claims* it (so a concurrent
duplicate cannot run too: it gets 409 with Retry-After), runs, and its reply (status, content type, body) is stored
for IDEMPOTENCY_TTL_S. A later request with the same key and the same request (method, path, query, body) gets the
stored reply again, marked `Idempotent-Replayed: true`, without the work being done twice. The same key with a
different request is refused with 422. Keys are scoped per user (per client IP for anonymous calls), so two users
can never see each other's replies. A claimed key whose request crashed is freed (or taken over after
IDEMPOTENCY_LOCK_S, if the process died); 5xx, 429 and Retry-After replies are not stored, so the client may retry them.

The gateway sees replies only: a retry after a 5xx or a time-out whose work had committed reaches the service
again, and the service itself answers it with the original reply (services/kernel/idempotency.py). Fingerprint,
key syntax and the problems are that module's, so both layers answer alike.

Adapters: `SqlIdempotencyStore` (a table in the gateway's own SQLite/PostgreSQL database; the embedded run) and
`RedisIdempotencyStore` (REDIS_URL set; the distributed run, shared by every gateway replica). One contract test
suite runs against both (tests/gateway/test_idempotency_store_contract.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiohttp import web
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from services.kernel.db import Database, ensure_schema, new_metadata
from services.kernel.errors import DomainError, Unavailable
from services.kernel.http import authenticate, error_response
from services.kernel.idempotency import (
    HEADER,
    KEYED_METHODS,
    REPLAYED,
    STORED_HEADERS,
    check_key,
    fingerprint,
    in_progress_reply,
    key_reused,
    should_store,
)
from services.kernel.ids import new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def to_json(self) -> dict:
        return {"status": self.status, "headers": self.headers, "body": base64.b64encode(self.body).decode()}

    @classmethod
    def from_json(cls, d: dict) -> StoredReply:
        return cls(int(d["status"]), dict(d["headers"]), base64.b64decode(d["body"]))


@dataclass(frozen=True)
class Claim:
    outcome: Literal["new", "replay", "mismatch", "in_progress"]
    token: str = ""  # proves ownership of a "new" claim to complete() / release()
    reply: StoredReply | None = None


class IdempotencyStore(Protocol):
    async def claim(self, scope: str, key: str, fingerprint: str, lock_s: float) -> Claim:
        """Atomically: claim an unknown (or expired) key, or say what the key holds."""

    async def complete(self, scope: str, key: str, token: str, reply: StoredReply, ttl_s: float) -> None:
        """Store the reply of the claim `token` (a no-op if the claim was lost) and keep it for `ttl_s`."""

    async def release(self, scope: str, key: str, token: str) -> None:
        """Forget a pending claim (the request failed and may be retried)."""

    async def purge_expired(self) -> int: ...

    async def close(self) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- SQL adapter -----------------------------------------------------------------------------------------

metadata: MetaData = new_metadata()

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(200), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(8), nullable=False),  # pending | done
    Column("token", String(64), nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False, index=True),
    Column("status", Integer, nullable=True),
    Column("headers", Text, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
)


class SqlIdempotencyStore:
    """Keys in a table of the gateway's database (SQLite file or a PostgreSQL schema).

    The gateway is not a service with migrations: its only table is a cache of replies with a lifetime of hours,
    created if missing (see docs/decisions/003-auth-and-pii.md).
    """

    def __init__(self, db: Database):
        self.db = db
        ensure_schema(db.engine, db.schema)
        metadata.create_all(db.engine, checkfirst=True)

    async def _run(self, fn: Callable, *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _claim(self, scope: str, key: str, fingerprint: str, lock_s: float) -> Claim:
        t = idempotency_keys
        for _ in range(5):
            now = _now_ms()
            token = new_id("ik")
            try:
                with self.db.engine.begin() as conn:
                    q = select(t).where(t.c.scope == scope, t.c.key == key)
                    if self.db.dialect == "postgresql":
                        q = q.with_for_update()
                    row = conn.execute(q).first()
                    if row is not None and row.expires_at_ms <= now:
                        conn.execute(delete(t).where(t.c.scope == scope, t.c.key == key))
                        row = None
                    if row is None:
                        conn.execute(
                            t.insert().values(
                                scope=scope,
                                key=key,
                                fingerprint=fingerprint,
                                state="pending",
                                token=token,
                                expires_at_ms=now + int(lock_s * 1000),
                                created_at_ms=now,
                            )
                        )
                        return Claim("new", token)
                    if row.fingerprint != fingerprint:
                        return Claim("mismatch")
                    if row.state == "done":
                        return Claim(
                            "replay", reply=StoredReply(row.status, json.loads(row.headers), row.body)
                        )
                    return Claim("in_progress")
            except IntegrityError:
                continue  # a concurrent first request inserted it: look again
        return Claim("in_progress")

    async def claim(self, scope: str, key: str, fingerprint: str, lock_s: float) -> Claim:
        return await self._run(self._claim, scope, key, fingerprint, lock_s)  # type: ignore[return-value]

    def _complete(self, scope: str, key: str, token: str, reply: StoredReply, ttl_s: float) -> None:
        t = idempotency_keys
        with self.db.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.scope == scope, t.c.key == key, t.c.token == token)
                .values(
                    state="done",
                    status=reply.status,
                    headers=json.dumps(reply.headers),
                    body=reply.body,
                    expires_at_ms=_now_ms() + int(ttl_s * 1000),
                )
            )

    async def complete(self, scope: str, key: str, token: str, reply: StoredReply, ttl_s: float) -> None:
        await self._run(self._complete, scope, key, token, reply, ttl_s)

    def _release(self, scope: str, key: str, token: str) -> None:
        t = idempotency_keys
        with self.db.engine.begin() as conn:
            conn.execute(
                delete(t).where(
                    t.c.scope == scope, t.c.key == key, t.c.token == token, t.c.state == "pending"
                )
            )

    async def release(self, scope: str, key: str, token: str) -> None:
        await self._run(self._release, scope, key, token)

    def _purge(self) -> int:
        with self.db.engine.begin() as conn:
            return conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.expires_at_ms <= _now_ms())
            ).rowcount

    async def purge_expired(self) -> int:
        return await self._run(self._purge)  # type: ignore[return-value]

    async def close(self) -> None:
        self.db.dispose()


# --- Redis adapter ---------------------------------------------------------------------------------------

# Replace the value only if the claim token still matches (a takeover after the lock expired wins).
_COMPLETE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if cjson.decode(v)['token'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local d = cjson.decode(v)
if d['token'] ~= ARGV[1] or d['state'] ~= 'pending' then return 0 end
return redis.call('DEL', KEYS[1])
"""


class RedisIdempotencyStore:
    """Keys in Redis with native expiry (SET NX PX claims atomically across every gateway replica)."""

    def __init__(self, url: str, prefix: str = "recycle:gw:"):
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._complete = self.redis.register_script(_COMPLETE)
        self._release = self.redis.register_script(_RELEASE)

    def _k(self, scope: str, key: str) -> str:
        return self.prefix + "idem:" + hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()

    async def claim(self, scope: str, key: str, fingerprint: str, lock_s: float) -> Claim:
        k = self._k(scope, key)
        for _ in range(5):
            token = new_id("ik")
            value = json.dumps({"state": "pending", "fp": fingerprint, "token": token})
            if await self.redis.set(k, value, nx=True, px=max(1, int(lock_s * 1000))):
                return Claim("new", token)
            raw = await self.redis.get(k)
            if raw is None:
                continue  # expired between SET NX and GET
            d = json.loads(raw)
            if d["fp"] != fingerprint:
                return Claim("mismatch")
            if d["state"] == "done":
                return Claim("replay", reply=StoredReply.from_json(d["reply"]))
            return Claim("in_progress")
        return Claim("in_progress")

    async def complete(self, scope: str, key: str, token: str, reply: StoredReply, ttl_s: float) -> None:
        k = self._k(scope, key)
        raw = await self.redis.get(k)
        if raw is None:
            return
        d = json.loads(raw)
        value = json.dumps({"state": "done", "fp": d["fp"], "token": token, "reply": reply.to_json()})
        await self._complete(keys=[k], args=[token, value, max(1, int(ttl_s * 1000))])

    async def release(self, scope: str, key: str, token: str) -> None:
        await self._release(keys=[self._k(scope, key)], args=[token])

    async def purge_expired(self) -> int:
        return 0  # Redis expires keys itself

    async def close(self) -> None:
        await self.redis.aclose()


# --- the middleware --------------------------------------------------------------------------------------


@dataclass
class IdempotencyMiddleware:
    store: IdempotencyStore
    ttl_s: float
    lock_s: float
    client_ip: Callable[[web.Request], str]
    _tasks: set = field(default_factory=set)

    def middleware(self) -> Callable:
        @web.middleware
        async def idempotency(request: web.Request, handler: Callable) -> web.StreamResponse:
            return await self.handle(request, handler)

        return idempotency

    async def handle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        if request.method not in KEYED_METHODS or key is None:
            return await handler(request)
        check_key(key)
        principal = await authenticate(
            request
        )  # a bad or revoked token is refused here: a key cannot be scoped without a user
        scope = f"user:{principal.user_id}" if principal else f"ip:{self.client_ip(request)}"
        body = await request.read()  # cached: the handler reads the same bytes (413 raised here if too large)
        fp = fingerprint(request, body)
        try:
            claim = await self.store.claim(scope, key, fp, self.lock_s)
        except Exception as exc:  # noqa: BLE001 - the store is down: refuse rather than risk doing it twice
            raise Unavailable("the idempotency store is unavailable; retry later") from exc
        if claim.outcome == "mismatch":
            raise key_reused()
        if claim.outcome == "in_progress":
            return in_progress_reply(request)
        if claim.outcome == "replay":
            assert claim.reply is not None
            return web.Response(
                status=claim.reply.status,
                body=claim.reply.body,
                headers={**claim.reply.headers, REPLAYED: "true"},
            )
        try:
            try:
                resp = await handler(request)
            except (DomainError, web.HTTPException) as exc:
                if isinstance(exc, web.HTTPException) and exc.status < 400:
                    raise
                resp = error_response(request, exc)
        except Exception:
            # free the key before the 500 goes out: a retry sent at once must run, not find it in progress
            try:
                await self.store.release(scope, key, claim.token)
            except Exception:  # noqa: BLE001 - the request's own error matters more; the claim lapses after lock_s
                log.warning("could not release Idempotency-Key %s of %s", key, scope, exc_info=True)
            raise
        except BaseException:  # cancelled: nothing can be awaited here any more
            self._later(self.store.release(scope, key, claim.token))
            raise
        body_out = resp.body if isinstance(resp, web.Response) else None
        if isinstance(body_out, (bytes, bytearray)) and should_store(resp):
            headers = {h: resp.headers[h] for h in STORED_HEADERS if h in resp.headers}
            if "Content-Type" not in headers and resp.content_type:
                headers["Content-Type"] = resp.content_type
            await self.store.complete(
                scope, key, claim.token, StoredReply(resp.status, headers, bytes(body_out)), self.ttl_s
            )
        else:
            await self.store.release(scope, key, claim.token)
        return resp

    def _later(self, coro: Awaitable) -> None:
        """Run cleanup even while this request is being cancelled."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
