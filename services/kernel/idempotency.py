"""Idempotency-Key inside each service: a retry whose work had committed gets the original reply, never a second run.

The gateway keeps the replies it saw (gateway/idempotency.py), but not a 5xx: when the work committed and its reply
was then lost (an error after the commit, the gateway's own time-out answering 504, a dropped connection), the
gateway lets the key go and the retry reaches the service again. The service recognises it itself:

- a keyed request is a POST, PATCH, PUT or DELETE (`KEYED_METHODS`: every method that changes something) with an
  `Idempotency-Key` by a signed-in caller (scope `user:<id>`, as the gateway's); its fingerprint is the method,
  path and body (a different request with the same key is refused, 422);
- the first write transaction of the request on the service's database (a `UnitOfWork` or a group-commit job)
  inserts the key into `idempotency_keys` **in the same transaction as the work**, under the primary key
  (scope, key): work is committed only together with its key, so a second request with that key cannot commit
  work — its insert violates the key, its transaction rolls back (`KeyTaken`) and it is answered like a replay;
- the reply is stored on that row before it is sent (5xx, 429 and Retry-After replies are not: the row says `lost`);
- a keyed request looks its key up before running anything: a stored reply is sent again (status, Content-Type,
  Location and body as the first time, `Idempotent-Replayed: true`); a key whose work committed but whose reply
  is not stored yet is 409 `idempotency_key_in_progress` (Retry-After: 1) for `IDEMPOTENCY_IN_PROGRESS_S`;
- a reply that could not be stored (the handler failed after its commit, or the process died between the commit
  and storing it) is rebuilt by the route's replay, reading only: what the handler answers — the same status,
  the resource as it stands. A creating route's replay (`Router.replay_of`) reads what the work's transaction
  wrote on the key (`made(id)`, e.g. the new pickup's id); an action's (`Router.replays`) reads the resource its
  path names, which the action changed in the transaction that committed the key. The rebuilt reply is stored
  like the first. A route without a replay, or a creating one whose key recorded nothing, is 409
  `idempotency_key_reply_lost`: the work was done once and is not done again; the client looks the result up.

Keys are kept `IDEMPOTENCY_RETENTION_HOURS` (at least the gateway's 24 hours), then purged by the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from .errors import RuleViolated, ValidationFailed
from .outbox import idempotency_keys_t as keys_t

if TYPE_CHECKING:
    from .db import Database

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
# the methods that change something: a key is honoured on each of them, by the gateway and by every service (a
# PATCH retried after a 504 must not be applied again over an edit made in between)
KEYED_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
REPLAYED = "Idempotent-Replayed"
KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, like Stripe and the IETF draft
STORED_HEADERS = ("Content-Type", "Location")
PURGE_EVERY_S = 60.0
# Fault injection for the kill test (tests/fault/test_kill_after_commit.py): SIGKILL this process once a keyed
# request's work has committed, before its reply is stored.
_FAULT = os.environ.get("IDEMPOTENCY_FAULT") == "kill_after_commit"

COMMITTED, REPLIED, LOST = "committed", "replied", "lost"


def fingerprint(request: web.Request, body: bytes) -> str:
    """What makes two requests the same request: method, path with query, body."""
    h = hashlib.sha256()
    for part in (request.method.encode(), request.rel_url.path_qs.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def check_key(key: str) -> None:
    if not KEY_RE.fullmatch(key):
        raise ValidationFailed.field(HEADER, "must be 1 to 255 visible ASCII characters (a UUID is ideal)")


def should_store(resp: web.StreamResponse) -> bool:
    """Replies that are the request's outcome. 5xx, 429 and anything with Retry-After (a 409 "still in progress"
    from the service, while the request that did the work finishes) are transient: a retry must be answered anew."""
    return resp.status < 500 and resp.status != 429 and "Retry-After" not in resp.headers


def key_reused() -> RuleViolated:
    return RuleViolated(
        f"this {HEADER} was already used with a different request; use a new key",
        reason="idempotency_key_reused",
        field=HEADER,
    )


def in_progress_reply(request: web.Request) -> web.Response:
    from .http import problem_for, problem_reply

    return problem_reply(
        problem_for(
            409,
            f"a request with this {HEADER} is still in progress; retry shortly",
            title="State conflict",
            instance=request.path,
            reason="idempotency_key_in_progress",
        ),
        {"Retry-After": "1"},
    )


def reply_lost_reply(request: web.Request) -> web.Response:
    from .http import problem_for, problem_reply

    return problem_reply(
        problem_for(
            409,
            f"the request with this {HEADER} was carried out, but its reply was lost; it is not done again: "
            "look the result up instead",
            title="State conflict",
            instance=request.path,
            reason="idempotency_key_reply_lost",
        )
    )


class KeyTaken(Exception):
    """Another request with this key committed its work first: this one's transaction was rolled back."""


# Rebuilds a lost reply from what the request made, or from the resource it acted on (the route's replay,
# services/kernel/http.py); None when it cannot.
Replay = Callable[[str | None], Awaitable[web.StreamResponse | None]]


@dataclass(eq=False)
class KeyedRequest:
    db: Database
    scope: str
    key: str
    fingerprint: str
    retention: timedelta
    in_progress: timedelta = timedelta(seconds=60)
    committed: bool = False  # a transaction of this request wrote the key and committed
    finished: bool = (
        False  # the handler is done: work it left behind (a task of its context) is not the request's
    )
    made: str | None = None  # what the request makes (`made`), written with the key

    def row(self) -> dict[str, Any]:
        return dict(
            scope=self.scope,
            key=self.key,
            fingerprint=self.fingerprint,
            state=COMMITTED,
            made=self.made,
            created_at=datetime.now(UTC),
        )


# The keyed request being handled (set by the HTTP layer; Ctx.run carries it into worker threads).
current: ContextVar[KeyedRequest | None] = ContextVar("idempotency_key", default=None)


def made(ref: str) -> str:
    """Record what the keyed request being handled makes — the id its reply is about (a new pickup's, the
    order's) — before the transaction that makes it commits: it commits with the key, so a reply lost after the
    commit is rebuilt from it (the route's replay). The last call before the commit counts (a transaction run
    again after a conflict makes its ids anew). Nothing outside a keyed request. Returns `ref`."""
    kr = current.get()
    if kr is not None and not kr.committed and not kr.finished:
        kr.made = ref
    return ref


def unwritten(db: Database) -> KeyedRequest | None:
    """The current keyed request, if its key still has to go into the next write transaction on `db`."""
    kr = current.get()
    if kr is None or kr.committed or kr.finished or kr.db is not db:
        return None
    return kr


def write_key(conn: Any, kr: KeyedRequest) -> None:
    """Insert the key in the caller's transaction (a Session or a Connection); `KeyTaken` if it is there already."""
    try:
        conn.execute(keys_t.insert().values(**kr.row()))
    except IntegrityError as exc:
        raise KeyTaken(kr.key) from exc


# --- the HTTP side -----------------------------------------------------------------------------------------


async def begin(
    request: web.Request,
    db: Database,
    principal: Any,
    retention_hours: int,
    in_progress_s: float = 60,
    replay: Replay | None = None,
) -> Any:
    """For a keyed request: the reply to send again (stored, or rebuilt by `replay`: a web.StreamResponse), or the
    `KeyedRequest` to run with. None for any other request. Raises 422 for a key reused with another request."""
    key = request.headers.get(HEADER)
    if request.method not in KEYED_METHODS or key is None or principal is None:
        return None
    check_key(key)
    body = await request.read()  # cached: the handler reads the same bytes
    kr = KeyedRequest(
        db,
        f"user:{principal.user_id}",
        key,
        fingerprint(request, body),
        timedelta(hours=retention_hours),
        timedelta(seconds=in_progress_s),
    )
    row = await asyncio.get_running_loop().run_in_executor(None, _lookup, kr)
    return kr if row is None else await _answer(request, kr, row, replay)


def _lookup(kr: KeyedRequest) -> Any:
    with kr.db.session(readonly=True) as s:
        return s.execute(select(keys_t).where(keys_t.c.scope == kr.scope, keys_t.c.key == kr.key)).first()


async def _answer(
    request: web.Request, kr: KeyedRequest, row: Any, replay: Replay | None
) -> web.StreamResponse:
    if row.fingerprint != kr.fingerprint:
        raise key_reused()
    if row.state == REPLIED:
        headers = json.loads(row.headers or "{}")
        return web.Response(status=row.status, body=row.body, headers={**headers, REPLAYED: "true"})
    if row.state == COMMITTED and datetime.now(UTC) - row.created_at < kr.in_progress:
        return in_progress_reply(request)
    # the request that did the work is gone without its reply (it failed after its commit, or its process died)
    resp = None if replay is None else await replay(row.made)
    if resp is None:
        return reply_lost_reply(request)
    if should_store(resp):
        await _store(kr, resp, rebuilt=True)
    resp.headers[REPLAYED] = "true"
    return resp


async def run(
    request: web.Request, kr: KeyedRequest, call: Any, replay: Replay | None = None
) -> web.StreamResponse:
    """Run the handler (`call()`) as the keyed request `kr`; store its reply if its work committed."""
    from .errors import DomainError
    from .http import error_response

    token = current.set(kr)
    try:
        try:
            resp = await call()
        except KeyTaken:
            # a concurrent or earlier request with this key committed first: answer as it would be answered now
            row = await asyncio.get_running_loop().run_in_executor(None, _lookup, kr)
            if row is None:  # pragma: no cover - the key is there: its insert just failed on it
                raise
            return await _answer(request, kr, row, replay)
        except (DomainError, web.HTTPException) as exc:
            if not kr.committed or (isinstance(exc, web.HTTPException) and exc.status < 400):
                raise
            resp = error_response(request, exc)  # an outcome after the commit (e.g. a 409): stored below
        except BaseException:
            if kr.committed:
                await _store(kr, None)
            raise
    finally:
        kr.finished = True
        current.reset(token)
    if kr.committed:
        if _FAULT:
            os.kill(os.getpid(), signal.SIGKILL)
        await _store(kr, resp)
    return resp


async def _store(kr: KeyedRequest, resp: web.StreamResponse | None, rebuilt: bool = False) -> None:
    """Put the reply on the key's row (or mark it lost) through the group-commit writer, before it is sent. A
    `rebuilt` reply is kept only where no reply is stored yet (a retry racing another keeps the first)."""
    values: dict[str, Any] = {"state": LOST}
    body = resp.body if isinstance(resp, web.Response) else None
    if resp is not None and isinstance(body, (bytes, bytearray)) and should_store(resp):
        headers = {h: resp.headers[h] for h in STORED_HEADERS if h in resp.headers}
        if "Content-Type" not in headers and resp.content_type:
            headers["Content-Type"] = resp.content_type
        values = {
            "state": REPLIED,
            "status": resp.status,
            "headers": json.dumps(headers),
            "body": bytes(body),
        }
    purge_before = _purge_due(kr)

    where = [keys_t.c.scope == kr.scope, keys_t.c.key == kr.key]
    if rebuilt:
        where.append(keys_t.c.state != REPLIED)

    def job(uow: Any) -> None:
        uow.conn.execute(update(keys_t).where(*where).values(**values))
        if purge_before is not None:
            uow.conn.execute(delete(keys_t).where(keys_t.c.created_at < purge_before))

    try:
        await asyncio.wrap_future(kr.db.writer.submit(job))
    except Exception:  # noqa: BLE001 - the reply still goes out; a retry then finds the key without it
        log.warning("could not store the reply of %s %s", HEADER, kr.key, exc_info=True)


_last_purge: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _purge_due(kr: KeyedRequest) -> datetime | None:
    """Now and then (at most once a minute per database and process), the cut-off of keys to forget."""
    now = time.monotonic()
    if now - _last_purge.get(kr.db, -PURGE_EVERY_S) < PURGE_EVERY_S:
        return None
    _last_purge[kr.db] = now
    return datetime.now(UTC) - kr.retention
