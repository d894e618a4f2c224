"""Idempotency after commit (docs/reliability.md, fix 7): the work committed, its reply was lost on the way back, and a
retry with the same Idempotency-Key gets the original reply; the databases hold what one request made.

Faults are injected after the handler has returned its reply (so after the commit), on real sockets:

- `gateway raise`: a middleware inside the gateway raises once the route has answered → 500 (the gateway keeps
  no reply for a 5xx, so the retry runs through it again);
- `service raise`: the service process fails after its handler answered → 500 through the gateway;
- `service drop`: the service process closes the connection instead of answering → 502 from the gateway;
- `service slow`: the service answers later than the gateway waits (UPSTREAM_TIMEOUT_S) → 504 from the gateway.

The embedded run (every service in the gateway) runs on SQLite, the distributed one (the gateway forwarding to the
services' process) on PostgreSQL with the gateway's keys in Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, inspect, select, table

from services.booking.store import pickups
from services.listings.settings import configure as configure_listings
from tests.booking.support import booking_body
from tests.security.harness import Api, Topology, User, settings_for

SLOW_S = 1.5  # how long a `slow` service holds its reply back
GATEWAY_WAIT_S = 0.5  # the gateway's UPSTREAM_TIMEOUT_S while a `slow` fault is armed


class Faults:
    """Armed per Idempotency-Key: the first request with the key that reaches `where` loses its reply there."""

    def __init__(self) -> None:
        self.armed: dict[str, tuple[str, str]] = {}
        self.lost: dict[str, tuple[int, bytes]] = {}  # key -> the reply the client never got

    def arm(self, key: str, where: str, mode: str) -> None:
        self.armed[key] = (where, mode)

    def middleware(self, where: str) -> Any:
        @web.middleware
        async def fault(request: web.Request, handler: Any) -> web.StreamResponse:
            resp = await handler(request)
            key = request.headers.get("Idempotency-Key", "")
            if self.armed.get(key, ("", ""))[0] != where:
                return resp
            _, mode = self.armed.pop(key)
            self.lost[key] = (resp.status, bytes(resp.body))
            if mode == "raise":
                raise RuntimeError("fault injected: the reply is lost after the work committed")
            if mode == "drop":
                assert request.transport is not None
                request.transport.close()
            elif mode == "slow":
                await asyncio.sleep(SLOW_S)
            return resp

        return fault


class FaultyTopology(Topology):
    """A topology whose gateway and service process each get the fault middleware innermost."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.faults = Faults()
        configure_listings(self.platform["listings"], payment_wait_s=0)  # an order replies at once

    async def _serve(self, app: web.Application) -> str:
        app.middlewares.append(self.faults.middleware("gateway" if "gateway" in app else "service"))
        return await super()._serve(app)


TOPOLOGIES = {
    "embedded-sqlite": ("embedded", False),
    "distributed-postgresql": ("distributed", True),
}


@pytest.fixture(scope="module", params=list(TOPOLOGIES))
def topology(request, tmp_path_factory):  # noqa: ANN001, ANN201
    mode, pg = TOPOLOGIES[request.param]
    redis_url = request.getfixturevalue("redis_url") if mode == "distributed" else None
    extra: dict[str, Any] = {}
    if pg:
        from tests.conftest import unique_prefix

        url = request.getfixturevalue("pg_url")
        extra = dict(database_url=url, event_log_url=url, db_schema_prefix=unique_prefix())
    settings = settings_for(mode, tmp_path_factory.mktemp(request.param), redis_url, **extra)
    with FaultyTopology(mode, settings) as topo:
        yield topo


@pytest.fixture
async def api(topology):  # noqa: ANN001, ANN201
    async with aiohttp.ClientSession() as session:
        yield Api(topology, session)


# --- what the databases hold --------------------------------------------------------------------------------


def row_counts(topo: Topology) -> dict[str, int]:
    """Rows of every table of every service (outboxes included), except the Idempotency-Keys themselves."""
    out = {}
    for name, rt in topo.platform.runtimes.items():
        db = rt.db
        with db.engine.connect() as conn:
            for t in inspect(conn).get_table_names(schema=db.schema):
                if t in ("idempotency_keys", "alembic_version"):
                    continue
                out[f"{name}.{t}"] = conn.execute(
                    select(func.count()).select_from(table(t, schema=db.schema))
                ).scalar_one()
    return out


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


# --- one request, its reply lost, retried -------------------------------------------------------------------


@dataclass
class Sent:
    status: int
    body: bytes
    headers: Any = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


async def send(api: Api, path: str, user: User, body: Any, key: str) -> Sent:
    headers = user.auth | {"Idempotency-Key": key}
    try:
        async with api.session.post(api.topo.url + path, json=body, headers=headers) as r:
            return Sent(r.status, await r.read(), r.headers)
    except aiohttp.ClientError as exc:  # the gateway itself dropped (not one of these faults)
        return Sent(-1, str(exc).encode())


async def retry(api: Api, path: str, user: User, body: Any, key: str, timeout_s: float = 20) -> Sent:
    """Send again, as a client would, while the first request with the key is still finishing (409 Retry-After)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await send(api, path, user, body, key)
        busy = got.status == 409 and got.json().get("reason") == "idempotency_key_in_progress"
        if not busy or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def lose_reply_then_retry(
    api: Api, where: str, mode: str, path: str, user: User, body: Any, status: int
) -> tuple[Sent, dict[str, int]]:
    """The request's work commits and its reply is lost (`where`, `mode`); the retry gets that reply. Returns the
    retry's reply and what the first request wrote."""
    topo = api.topo
    faults: Faults = topo.faults  # type: ignore[attr-defined]
    key = uuid.uuid4().hex
    before = row_counts(topo)
    faults.arm(key, where, mode)
    gw = topo.gateway_app["gateway"]  # type: ignore[index]
    if mode == "slow":
        gw.gw = gw.gw.model_copy(update={"upstream_timeout_s": GATEWAY_WAIT_S})
    try:
        first = await send(api, path, user, body, key)
    finally:
        gw.gw = gw.gw.model_copy(update={"upstream_timeout_s": 30.0})
    expected = {"raise": 500, "drop": 502, "slow": 504}[mode]
    assert first.status == expected, (first.status, first.body[:300])
    deadline = time.monotonic() + 20
    while key not in faults.lost and time.monotonic() < deadline:  # a slow handler may still be at work
        await asyncio.sleep(0.05)
    lost_status, lost_body = faults.lost[key]
    assert lost_status == status, lost_body[:300]
    made = changed(before, row_counts(topo))
    assert made, "the first request committed nothing"

    again = await retry(api, path, user, body, key)
    assert again.status == status, (again.status, again.body[:300])
    assert again.body == lost_body  # the original reply, byte for byte
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert changed(before, row_counts(topo)) == made  # nothing written twice (rows, outbox events)
    third = await send(api, path, user, body, key)  # the gateway keeps it now
    assert (third.status, third.body) == (status, lost_body)
    return again, made


# --- booking, under every fault -------------------------------------------------------------------------------

FAULTS = {
    "embedded": [("gateway", "raise")],
    "distributed": [("gateway", "raise"), ("service", "raise"), ("service", "drop"), ("service", "slow")],
}
_windows = iter(range(10_000))


def _window() -> dict[str, str]:
    from datetime import datetime, timedelta

    from tests.booking.support import SHANGHAI

    n = next(_windows)
    day = (datetime.now(SHANGHAI) + timedelta(days=2 + n // 16)).date()
    start = datetime(day.year, day.month, day.day, 9 + (n % 16) // 2, 30 * (n % 2), tzinfo=SHANGHAI)
    return {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()}


def _pickups_of(topo: Topology, resident: str) -> list[str]:
    with topo.platform["booking"].db.engine.connect() as conn:
        return list(conn.execute(select(pickups.c.id).where(pickups.c.resident_id == resident)).scalars())


async def test_a_booking_whose_reply_was_lost_is_booked_once(api: Api) -> None:
    for where, mode in FAULTS[api.mode]:
        resident = await api.login()
        body = booking_body(win=_window())
        again, made = await lose_reply_then_retry(api, where, mode, "/v1/pickups", resident, body, 201)
        assert _pickups_of(api.topo, resident.user_id) == [again.json()["id"]], (where, mode)
        assert made["booking.pickups"] == 1 and made["booking.outbox"] == 1, made


async def test_the_same_key_with_another_request_is_refused_by_the_service(api: Api) -> None:
    """The gateway let the key go (a 5xx); the service still knows it holds another request: 422, nothing done."""
    resident = await api.login()
    body = booking_body(win=_window())
    key = uuid.uuid4().hex
    faults: Faults = api.topo.faults  # type: ignore[attr-defined]
    faults.arm(key, "gateway", "raise")
    assert (await send(api, "/v1/pickups", resident, body, key)).status == 500
    before = row_counts(api.topo)
    other = booking_body(win=_window())
    got = await retry(api, "/v1/pickups", resident, other, key)
    assert got.status == 422 and got.json()["reason"] == "idempotency_key_reused", got
    assert got.json()["errors"][0]["field"] == "Idempotency-Key"
    assert changed(before, row_counts(api.topo)) == {}
    assert len(_pickups_of(api.topo, resident.user_id)) == 1
