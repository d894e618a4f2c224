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
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from sqlalchemy import func, inspect, select, table, text

from gateway.proxy import _forwarder
from services.booking.store import pickups
from services.kernel.http import Ctx, Router, make_aiohttp_handler
from services.listings import handlers as listings
from services.listings.settings import configure as configure_listings
from tests.booking.support import booking_body
from tests.gateway.replay_cases import (
    ACTIONS,
    UPDATES,
    Case,
    firm_owner,
    published_listing,
    settled,
    wipe_tool,
    with_role,
)
from tests.security.harness import Api, Topology, User, settings_for

SLOW_S = 1.5  # how long a `slow` service holds its reply back
GATEWAY_WAIT_S = 0.5  # the gateway's UPSTREAM_TIMEOUT_S while a `slow` fault is armed


class Faults:
    """Armed per Idempotency-Key: the first request with the key whose work succeeded loses its reply at `where`."""

    def __init__(self) -> None:
        self.armed: dict[str, tuple[str, str, int | None]] = {}
        self.lost: dict[str, tuple[int, bytes]] = {}  # key -> the reply the client never got
        self.location: dict[str, str | None] = {}  # key -> that reply's Location header

    def arm(self, key: str, where: str, mode: str, status: int | None = None) -> None:
        """Lose the first 2xx reply with `key` (or the first reply with `status`: a refusal after the work)."""
        self.armed[key] = (where, mode, status)

    def middleware(self, where: str) -> Any:
        @web.middleware
        async def fault(request: web.Request, handler: Any) -> web.StreamResponse:
            resp = await handler(request)
            key = request.headers.get("Idempotency-Key", "")
            at, _, status = self.armed.get(key, ("", "", None))
            if at != where or (resp.status >= 300 if status is None else resp.status != status):
                return (
                    resp  # not armed here, or a duplicate's answer (409 in progress) rather than the work's
                )
            _, mode, _ = self.armed.pop(key)
            self.lost[key] = (resp.status, bytes(resp.body))
            self.location[key] = resp.headers.get("Location")
            if mode == "raise":
                raise RuntimeError("fault injected: the reply is lost after the work committed")
            if mode == "drop":
                assert request.transport is not None
                request.transport.close()
            elif mode == "slow":
                await asyncio.sleep(SLOW_S)
            return resp

        return fault


# --- PUT and DELETE: no service declares one yet ---------------------------------------------------------------

# The kernel honours keys on every method that changes something (idempotency.KEYED_METHODS). No service has a PUT
# or a DELETE route yet, so this suite declares two with the kernel's Router over listings' own handlers and mounts
# them in its topologies only (the gateway and, in the distributed run, the service process it forwards them to):
# a PUT of a listing's price, and a DELETE that withdraws the listing.
OTHER_METHODS_ROUTER = Router("listings")


class PriceIn(BaseModel):
    price_fen: int = Field(gt=0)


@OTHER_METHODS_ROUTER.route(
    "PUT", "/v1/test-only/listings/{id}/price", authenticated=True, body=PriceIn, owner="listing"
)
async def put_listing_price(ctx: Ctx) -> Any:
    price = {"price_fen": ctx.body.price_fen}
    return await ctx.run(listings.update_listing, ctx.runtime, ctx.user, ctx.params["id"], price)


@OTHER_METHODS_ROUTER.route("DELETE", "/v1/test-only/listings/{id}", authenticated=True, owner="listing")
async def delete_listing(ctx: Ctx) -> Any:
    out = await ctx.run(listings.withdraw_listing, ctx.runtime, ctx.user, ctx.params["id"])
    return {"id": out["id"], "status": out["status"]}


@OTHER_METHODS_ROUTER.replays(put_listing_price)
async def listing_now(ctx: Ctx) -> Any:
    return await ctx.run(listings.get_listing, ctx.runtime, ctx.user, ctx.params["id"])


@OTHER_METHODS_ROUTER.replays(delete_listing)
async def listing_status_now(ctx: Ctx) -> Any:
    return await ctx.run(listings.listing_status, ctx.runtime, ctx.user, ctx.params["id"])


async def case_put_price(api: Api) -> Case:
    listing, seller = await published_listing(api)
    return Case(seller, f"/v1/test-only/listings/{listing}/price", {"price_fen": 3900}, 200, method="PUT")


async def case_delete(api: Api) -> Case:
    listing, seller = await published_listing(api)
    return Case(seller, f"/v1/test-only/listings/{listing}", None, 200, method="DELETE")


OTHER_METHODS = {
    "PUT /v1/test-only/listings/{id}/price": case_put_price,
    "DELETE /v1/test-only/listings/{id}": case_delete,
}


class FaultyTopology(Topology):
    """A topology whose gateway and service process each get the fault middleware innermost (and the PUT and
    DELETE routes above)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.faults = Faults()
        self.service_url = ""
        configure_listings(self.platform["listings"], payment_wait_s=0)  # an order replies at once

    async def _serve(self, app: web.Application) -> str:
        where = "gateway" if "gateway" in app else "service"
        app.middlewares.append(self.faults.middleware(where))
        for r in OTHER_METHODS_ROUTER.routes:
            if where == "service" or self.mode == "embedded":
                handler = make_aiohttp_handler(r, self.platform["listings"])
            else:  # the distributed gateway forwards them to the service process (served first: its address is known)
                handler = _forwarder(r, self.service_url)
            app.router.add_route(r.method, r.path, handler)
        url = await super()._serve(app)
        if where == "service":
            self.service_url = url  # the distributed run's service process, reachable past the gateway
        return url


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


async def send(api: Api, path: str, user: User, body: Any, key: str | None, method: str = "POST") -> Sent:
    headers = user.auth | ({"Idempotency-Key": key} if key else {})
    try:
        async with api.session.request(method, api.topo.url + path, json=body, headers=headers) as r:
            return Sent(r.status, await r.read(), r.headers)
    except aiohttp.ClientError as exc:  # the gateway itself dropped (not one of these faults)
        return Sent(-1, str(exc).encode())


async def retry(
    api: Api, path: str, user: User, body: Any, key: str, timeout_s: float = 20, method: str = "POST"
) -> Sent:
    """Send again, as a client would, while the first request with the key is still finishing (409 Retry-After)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await send(api, path, user, body, key, method)
        busy = got.status == 409 and got.json().get("reason") == "idempotency_key_in_progress"
        if not busy or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def send_and_lose_reply(
    api: Api, where: str, mode: str, path: str, user: User, body: Any, key: str, method: str = "POST"
) -> tuple[int, bytes]:
    """Send a request whose work commits and whose reply is lost (`where`, `mode`): the reply the client never got
    (status, body), once the handler has given it."""
    faults: Faults = api.topo.faults  # type: ignore[attr-defined]
    faults.arm(key, where, mode)
    gw = api.topo.gateway_app["gateway"]  # type: ignore[index]
    if mode == "slow":
        gw.gw = gw.gw.model_copy(update={"upstream_timeout_s": GATEWAY_WAIT_S})
    try:
        first = await send(api, path, user, body, key, method)
    finally:
        gw.gw = gw.gw.model_copy(update={"upstream_timeout_s": 30.0})
    expected = {"raise": 500, "drop": 502, "slow": 504}[mode]
    assert first.status == expected, (first.status, first.body[:300])
    deadline = time.monotonic() + 20
    while key not in faults.lost and time.monotonic() < deadline:  # a slow handler may still be at work
        await asyncio.sleep(0.05)
    return faults.lost[key]


async def lose_reply_then_retry(
    api: Api, where: str, mode: str, path: str, user: User, body: Any, status: int, method: str = "POST"
) -> tuple[Sent, dict[str, int]]:
    """The request's work commits and its reply is lost (`where`, `mode`); the retry gets that reply. Returns the
    retry's reply and what the first request wrote."""
    topo = api.topo
    key = uuid.uuid4().hex
    before = row_counts(topo)
    lost_status, lost_body = await send_and_lose_reply(api, where, mode, path, user, body, key, method)
    assert lost_status == status, lost_body[:300]
    made = changed(before, row_counts(topo))
    assert made, "the first request committed nothing"
    rows = None if method == "POST" else table_rows(topo)  # an update or a delete changes rows in place

    again = await retry(api, path, user, body, key, method=method)
    assert again.status == status, (again.status, again.body[:300])
    assert again.body == lost_body  # the original reply, byte for byte
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert changed(before, row_counts(topo)) == made  # nothing written twice (rows, outbox events)
    third = await send(api, path, user, body, key, method)  # the gateway keeps it now
    assert (third.status, third.body) == (status, lost_body)
    if rows is not None:
        assert rows_changed(rows, table_rows(topo)) == []  # not one field written again
    return again, made


# --- booking, under every fault -------------------------------------------------------------------------------

FAULTS = {
    "embedded": [("gateway", "raise")],
    "distributed": [("gateway", "raise"), ("service", "raise"), ("service", "drop"), ("service", "slow")],
}
_windows = itertools.count()


def _window() -> dict[str, str]:
    from tests.booking.support import SHANGHAI

    n = next(_windows) % (12 * 16)  # half-hour windows of the next 12 days, round again (20 places a slot)
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


# --- every route that creates something ----------------------------------------------------------------------


async def case_consent(api: Api) -> Case:
    return Case(await api.login(), "/v1/me/consents", {"kind": "reverse_invoicing"}, 201)


async def case_firm(api: Api) -> Case:
    from tests.security.flows import firm_body

    return Case(await api.login(), "/v1/firms", firm_body(), 201)


async def case_qualification(api: Api) -> Case:
    fid, owner = await firm_owner(api)
    body = {"kind": "recycler_filing", "number": "京商备2024001", "valid_until": "2099-12-31"}
    return Case(owner, f"/v1/firms/{fid}/qualifications", body, 201)


async def case_accountant(api: Api) -> Case:
    fid, owner = await firm_owner(api)
    return Case(owner, f"/v1/firms/{fid}/accountants", {"user_id": (await api.login()).user_id}, 201)


async def case_collector(api: Api) -> Case:
    from tests.security.flows import new_id_number

    fid, _ = await firm_owner(api)
    body = {
        "real_name": "王五",
        "id_number": new_id_number(),
        "firm_id": fid,
        "area": {"lat": 39.9087, "lng": 116.4605, "radius_km": 10},
        "categories": ["paper.cardboard", "metal.copper"],
    }
    return Case(await api.login(), "/v1/collectors", body, 201)


async def case_observation(api: Api) -> Case:
    fid, owner = await firm_owner(api)
    body = {
        "category": "metal.steel",
        "city_code": "110105",
        "unit_price_fen": 250,
        "qty": "10",
        "kind": "quote",
        "observed_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "firm_id": fid,
    }
    return Case(owner, "/v1/prices/observations", body, 201)


async def case_withdrawal(api: Api) -> Case:
    from services.contracts.payments import PayoutRequested
    from services.kernel.ids import new_id
    from tests.booking.support import publish

    owner = await api.login()
    payout = PayoutRequested(
        payout_id=new_id("po"),
        payee_user_id=owner.user_id,
        amount_fen=500,
        purpose="pickup",
        reference_id=new_id("pk"),
        requested_by="booking",
        requested_at=datetime.now(UTC),
    )
    publish(api.topo.platform, payout)  # what booking publishes for a settled pickup: money in the wallet
    return Case(owner, "/v1/payments/withdrawals", {}, 201)


async def case_pickup(api: Api) -> Case:
    return Case(await api.login(), "/v1/pickups", booking_body(win=_window()), 201)


async def case_rating(api: Api) -> Case:
    pid, resident, _, _ = await settled(api)
    return Case(resident, f"/v1/pickups/{pid}/rating", {"score": 5, "comment": "准时"}, 201)


async def case_complaint(api: Api) -> Case:
    from tests.security.factories import _accepted

    pid, resident, _, _ = await _accepted(api)
    body = {"kind": "weighing", "text": "秤不准", "evidence": [{"kind": "text", "note": "少了两公斤"}]}
    return Case(resident, f"/v1/pickups/{pid}/complaints", body, 201)


async def case_red_letter(api: Api) -> Case:
    from tests.security.factories import _FIRM_OWNERS
    from tests.security.flows import accountant_of

    _, _, invoice, fid = await settled(api)
    accountant = await accountant_of(api, fid, _FIRM_OWNERS[fid])
    return Case(accountant, f"/v1/invoices/{invoice}/red-letter", {"reason": "开票有误"}, 201)


async def case_export(api: Api) -> Case:
    from tests.security.factories import _accountants

    fid, accountant, _ = await _accountants(api)
    return Case(accountant, "/v1/tax/exports", {"period": "2026-10", "format": "csv", "firm_id": fid}, 202)


async def case_tax_unpaid(api: Api) -> Case:
    from tests.security.factories import _accountants

    fid, accountant, _ = await _accountants(api)
    body = {"firm_id": fid, "period": "2025-01", "amount_fen": 123_456, "note": "逾期未缴"}
    return Case(accountant, "/v1/admin/invoicing/tax-unpaid", body, 201)


def _lot_body(fid: str, **extra: Any) -> dict:
    return {
        "category": "metal.steel",
        "grade": "重废 HMS1",
        "qty_t": "20.000",
        "city_code": "110105",
        "reserve_price_fen_per_t": 250_000,
        "auction": "ascending",
        "ends_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "min_increment_fen_per_t": 1_000,
        "source": "purchase",
        "purchase_ref": "购销合同 2026-001",
        "firm_id": fid,
    } | extra


async def case_lot(api: Api) -> Case:
    fid, seller = await firm_owner(api)
    return Case(seller, "/v1/lots", _lot_body(fid), 201)


async def case_bid(api: Api) -> Case:
    """A bid goes through the group-commit writer."""
    from tests.security.factories import _lot

    fid, seller = await firm_owner(api)
    lot = await _lot(api, seller, fid)
    _, buyer = await firm_owner(api)
    return Case(buyer, f"/v1/lots/{lot}/bids", {"price_fen_per_t": 250_000}, 201)


async def case_deposit(api: Api) -> Case:
    fid, seller = await firm_owner(api)
    r = await api.call("POST", "/v1/lots", seller, json=_lot_body(fid, deposit_fen=100_000))
    assert r.status == 201, r
    _, bidder = await firm_owner(api)
    return Case(bidder, f"/v1/lots/{r.body['id']}/deposit", {}, 202)


async def case_wipe_tool(api: Api) -> Case:
    from tests.wipe.support import Tool

    body = {"name": "擦除站 B", "public_key": Tool().public_b64}
    return Case(await api.admin(), "/v1/wipe/tools", body, 201)


async def case_wipe_report(api: Api) -> Case:
    from tests.wipe.support import json_report

    tool = await wipe_tool(api)
    return Case(
        await with_role(api, "erasure_operator"), "/v1/wipe/reports", tool.submission(json_report()), 201
    )


async def case_secondary_check(api: Api) -> Case:
    from tests.wipe.support import changed, json_report

    operator = await with_role(api, "erasure_operator")
    first, second = await wipe_tool(api), await wipe_tool(api)
    report = json_report()
    r = await api.call("POST", "/v1/wipe/reports", operator, json=first.submission(report))
    assert r.status == 201, r
    again = second.submission(changed(report, "report_id", report["report_id"] + "-check"))
    return Case(operator, f"/v1/wipe/certificates/{r.body['certificate_id']}/secondary", again, 201)


async def case_blocklist(api: Api) -> Case:
    from tests.wipe.support import imei

    return Case(await api.admin(), "/v1/admin/devices/blocklist", {"imei": imei()}, 201)


async def case_listing(api: Api) -> Case:
    from tests.security.factories import _listing_body

    return Case(await api.login(), "/v1/listings", _listing_body(), 201)


async def case_order(api: Api) -> Case:
    listing, _ = await published_listing(api)
    return Case(await api.login(), "/v1/orders", {"listing_id": listing}, 201)


async def case_review(api: Api) -> Case:
    listing, seller = await published_listing(api)
    buyer = await api.login()
    r = await api.call("POST", "/v1/orders", buyer, json={"listing_id": listing})
    assert r.status == 201, r
    order = r.body["id"]
    api.drain()  # payments opens the order's payment
    r = await api.call("GET", f"/v1/orders/{order}", buyer)
    pay = {"payment_method": "pm_card_visa"}
    assert (
        await api.call("POST", f"/v1/payments/intents/{r.body['payment']['id']}/confirm", buyer, json=pay)
    ).status == 200
    api.drain()
    ship = {"carrier": "顺丰", "tracking_no": "SF1234567890"}
    assert (await api.call("POST", f"/v1/orders/{order}/ship", seller, json=ship)).status == 200
    api.drain()  # payments captures it into escrow
    r = await api.call("POST", f"/v1/orders/{order}/confirm-receipt", buyer)
    assert r.status == 200 and r.body["status"] == "completed", r
    return Case(buyer, f"/v1/orders/{order}/review", {"rating": 5, "comment": "好评"}, 201)


# route (method path) -> the case that makes a valid request of it
CASES = {
    "/v1/me/consents": case_consent,
    "/v1/firms": case_firm,
    "/v1/firms/{id}/qualifications": case_qualification,
    "/v1/firms/{id}/accountants": case_accountant,
    "/v1/collectors": case_collector,
    "/v1/prices/observations": case_observation,
    "/v1/payments/withdrawals": case_withdrawal,
    "/v1/pickups": case_pickup,
    "/v1/pickups/{id}/rating": case_rating,
    "/v1/pickups/{id}/complaints": case_complaint,
    "/v1/invoices/{id}/red-letter": case_red_letter,
    "/v1/tax/exports": case_export,
    "/v1/admin/invoicing/tax-unpaid": case_tax_unpaid,
    "/v1/lots": case_lot,
    "/v1/lots/{id}/bids": case_bid,
    "/v1/lots/{id}/deposit": case_deposit,
    "/v1/wipe/tools": case_wipe_tool,
    "/v1/wipe/reports": case_wipe_report,
    "/v1/wipe/certificates/{id}/secondary": case_secondary_check,
    "/v1/admin/devices/blocklist": case_blocklist,
    "/v1/listings": case_listing,
    "/v1/orders": case_order,
    "/v1/orders/{id}/review": case_review,
}
# creating routes without a signed-in caller keep the gateway's keys only (docs/reliability.md, fix 7)
PUBLIC = {"/v1/auth/otp"}
# keyed routes whose lost reply is not rebuilt (409 idempotency_key_reply_lost): each is listed in
# docs/reliability.md with the reason
NO_REPLAY = {"/v1/admin/prices/compute", "/v1/admin/payments/reconcile"}


def test_every_keyed_route_has_a_case_and_a_replay() -> None:
    """A keyed request is a POST, PATCH, PUT or DELETE by a signed-in caller: every such route rebuilds a reply lost
    after its commit (Router.replay_of for what it made, Router.replays for an action or an update) and has a case
    below, or is listed as not rebuilt — with the reason in the docs. A new keyed route with none of these fails
    here, and so does a route of a method that changes something without being keyed."""
    from pathlib import Path

    from gateway.app import all_routes
    from services.kernel.http import PUBLIC as PUBLIC_POLICY
    from services.kernel.idempotency import KEYED_METHODS

    every = all_routes()
    assert {r.method for r in every} <= {"GET", *KEYED_METHODS}, "a method that changes something is keyed"
    routes = [r for r in every if r.method == "POST" and not r.raw]
    creating = {r.path for r in routes if r.status in (201, 202)}
    assert creating - PUBLIC == set(CASES), "add a case for each new route that creates something"
    keyed = {r.path: r for r in routes if r.policy.kind != PUBLIC_POLICY}
    assert set(keyed) - set(CASES) == set(ACTIONS) | NO_REPLAY, "add an action case (replay_cases.py)"
    assert [p for p in [*CASES, *ACTIONS] if keyed[p].replay is None] == [], "declare its replay"
    assert [p for p in NO_REPLAY if keyed[p].replay is not None] == []
    docs = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    assert [p for p in NO_REPLAY if f"`POST {p}`" not in docs] == [], "say in the docs why it is not rebuilt"
    # PATCH, PUT, DELETE: each has a case (a PATCH or PUT is also sent twice without a key) and a replay
    others = {f"{r.method} {r.path}": r for r in every if r.method in KEYED_METHODS - {"POST"}}
    assert set(others) == set(UPDATES), (
        "add a case for each PATCH, PUT and DELETE route (UPDATES, replay_cases.py)"
    )
    assert [p for p, r in others.items() if r.replay is None or r.policy.kind == PUBLIC_POLICY] == []


# every case by its route: a POST by its path, another method as "METHOD path"
ALL_CASES = {**CASES, **ACTIONS, **UPDATES, **OTHER_METHODS}

# the embedded run loses the reply in the gateway, the distributed one to the gateway's own time-out (504)
ROUTE_FAULT = {"embedded": ("gateway", "raise"), "distributed": ("service", "slow")}


@pytest.mark.parametrize("route", [*CASES, *UPDATES, *OTHER_METHODS])
async def test_a_lost_reply_is_replayed_and_nothing_is_made_twice(api: Api, route: str) -> None:
    case = await ALL_CASES[route](api)
    where, mode = ROUTE_FAULT[api.mode]
    args = (case.path, case.user, case.body, case.status, case.method)
    _, made = await lose_reply_then_retry(api, where, mode, *args)
    assert made  # what one request makes: asserted unchanged by the retry inside


# --- a reply that could not be stored: rebuilt from what the request made ------------------------------------

# the first request's reply is lost on its way out (the gateway, or the service process, raises after the handler)
LOST_ON_THE_WAY = {"embedded": ("gateway", "raise"), "distributed": ("service", "raise")}


def _key_row(topo: Topology, user: User, key: str) -> Any:
    from services.kernel.outbox import idempotency_keys_t as keys_t

    for rt in topo.platform.runtimes.values():
        with rt.db.engine.connect() as conn:
            row = conn.execute(
                select(keys_t).where(keys_t.c.scope == f"user:{user.user_id}", keys_t.c.key == key)
            ).first()
        if row is not None:
            return rt.db, row
    raise AssertionError(f"no service holds the key {key}")


def _time_passes(topo: Topology, user: User, key: str) -> None:
    """The in-progress window (IDEMPOTENCY_IN_PROGRESS_S) of a key is over: the request that committed is gone."""

    from services.kernel.outbox import idempotency_keys_t as keys_t

    db, row = _key_row(topo, user, key)
    window = timedelta(seconds=topo.settings.idempotency_in_progress_s, milliseconds=1)
    with db.engine.begin() as conn:
        conn.execute(
            keys_t.update()
            .where(keys_t.c.scope == row.scope, keys_t.c.key == key)
            .values(created_at=row.created_at - window)
        )


# fields of a reply that move on by themselves after the request (the export runs in the background)
MOVES_ON = {
    "/v1/tax/exports": {
        "status",
        "progress",
        "rows_done",
        "rows_total",
        "started_at",
        "finished_at",
        "download_url",
        "error",
    }
}


def table_rows(topo: Topology) -> dict[str, list[str]]:
    """Every row of every table of every service (outboxes included), except the Idempotency-Keys themselves."""
    out = {}
    for name, rt in topo.platform.runtimes.items():
        db = rt.db
        with db.engine.connect() as conn:
            for t in inspect(conn).get_table_names(schema=db.schema):
                if t not in ("idempotency_keys", "alembic_version"):
                    rows = conn.execute(select(text("*")).select_from(table(t, schema=db.schema))).all()
                    out[f"{name}.{t}"] = sorted(map(repr, rows))
    return out


def rows_changed(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    return sorted(t for t in after.keys() | before.keys() if before.get(t) != after.get(t))


@pytest.mark.parametrize("route", [*CASES, *ACTIONS, *UPDATES, *OTHER_METHODS])
async def test_a_reply_never_stored_is_rebuilt_from_what_the_request_made(
    api: Api, route: str, monkeypatch
) -> None:  # noqa: ANN001
    """The process that did the work died between its commit and storing the reply (the store is skipped), and the
    client's connection lost the reply too. The key says `committed` (and what a creating request made): after
    the in-progress window the retry gets the reply rebuilt — the first reply; nothing is done twice: every row of
    every table (outboxes: each event published once) is as the first request left it."""
    from services.kernel import idempotency

    case = await ALL_CASES[route](api)
    faults: Faults = api.topo.faults  # type: ignore[attr-defined]
    where, mode = LOST_ON_THE_WAY[api.mode]
    key = uuid.uuid4().hex
    before = table_rows(api.topo)
    faults.arm(key, where, mode)

    async def dies_before_storing(*args: Any, **kw: Any) -> None:
        return None

    with monkeypatch.context() as m:
        m.setattr(idempotency, "_store", dies_before_storing)
        first = await send(api, case.path, case.user, case.body, key, case.method)
    assert first.status == 500, first
    lost_status, lost_body = faults.lost[key]
    assert lost_status == case.status, lost_body[:300]
    user = await case.retry_as() if case.retry_as else case.user
    done = table_rows(api.topo)
    assert rows_changed(before, done), "the first request did nothing"
    _, row = _key_row(api.topo, case.user, key)
    assert row.state == "committed" and (row.made or route not in CASES), row

    busy = await send(api, case.path, user, case.body, key, case.method)  # within the window: maybe at work
    assert busy.status == 409 and busy.json()["reason"] == "idempotency_key_in_progress", busy
    _time_passes(api.topo, case.user, key)
    again = await send(api, case.path, user, case.body, key, case.method)
    assert again.status == case.status, (again.status, again.body[:300])
    assert again.headers.get("Idempotent-Replayed") == "true"
    moving = MOVES_ON.get(route, set())
    rebuilt, original = again.json(), json.loads(lost_body)
    assert {k: v for k, v in rebuilt.items() if k not in moving} == {
        k: v for k, v in original.items() if k not in moving
    }  # the reply the first request gave (the resource as it stands)
    assert again.headers.get("Location") == faults.location.get(key)
    now = table_rows(api.topo)
    if not moving:
        assert rows_changed(done, now) == []  # nothing done twice, no event published again
    else:  # the export goes on in the background: made once all the same
        assert {t: len(r) for t, r in now.items()} == {t: len(r) for t, r in done.items()}
    third = await send(api, case.path, user, case.body, key, case.method)  # kept now, like any reply
    assert (third.status, third.body) == (case.status, again.body)
    assert _key_row(api.topo, case.user, key)[1].state == "replied"


# --- updates: the same one twice without a key; an edit made between a lost reply and its retry --------------

# the routes that set values (PATCH, PUT); a DELETE sent twice without a key is refused the second time (409)
SETTING = [r for r in [*UPDATES, *OTHER_METHODS] if r.split()[0] in ("PATCH", "PUT")]


def _listing(topo: Topology, path: str) -> tuple[int, int, int]:
    """(version, price, `listing.updated` events in the outbox) of the listing `path` names."""
    from services.contracts.listings import ListingUpdated
    from services.kernel.outbox import outbox_t
    from services.listings.store import listings as listings_t

    lid = path.split("/listings/")[1].split("/")[0]
    with topo.platform["listings"].db.engine.connect() as conn:
        row = conn.execute(select(listings_t).where(listings_t.c.id == lid)).one()
        events = conn.execute(
            select(func.count())
            .select_from(outbox_t)
            .where(outbox_t.c.key == lid, outbox_t.c.type == ListingUpdated.type)
        ).scalar_one()
    return row.version, int(row.price_fen), events


@pytest.mark.parametrize("route", SETTING)
async def test_an_update_sent_twice_without_a_key_is_applied_once(api: Api, route: str) -> None:
    """A client retrying without a key, or a seller pressing save twice: the second request finds the values there
    and writes nothing — no new version, no `listing.updated`, no row of any table — and answers 200 with the
    listing, as the first did."""
    case = await ALL_CASES[route](api)
    version, _, events = _listing(api.topo, case.path)
    first = await send(api, case.path, case.user, case.body, None, case.method)
    assert first.status == 200, first
    done = table_rows(api.topo)
    second = await send(api, case.path, case.user, case.body, None, case.method)
    assert (second.status, second.json()) == (200, first.json())
    assert "Idempotent-Replayed" not in second.headers  # the handler's own answer, not a key's
    assert rows_changed(done, table_rows(api.topo)) == []
    assert _listing(api.topo, case.path) == (version + 1, case.body["price_fen"], events + 1)


@pytest.mark.parametrize("route", SETTING)
async def test_an_update_retried_after_its_reply_was_lost_keeps_an_edit_made_in_between(
    api: Api, route: str
) -> None:
    """The seller's client sets a price with a key and its reply is lost (embedded: 500 from the gateway;
    distributed: the gateway's 504 while the service finishes). Meanwhile another of the seller's devices sets
    another price. The retry with the key gets the first reply byte for byte and does not set the first price
    again over the newer one: one version and one event per edit."""
    case = await ALL_CASES[route](api)
    version, _, events = _listing(api.topo, case.path)
    key = uuid.uuid4().hex
    where, mode = ROUTE_FAULT[api.mode]
    args = (case.path, case.user, case.body, key, case.method)
    lost_status, lost_body = await send_and_lose_reply(api, where, mode, *args)
    assert lost_status == 200 and json.loads(lost_body)["price_fen"] == case.body["price_fen"], lost_body
    listing = case.path.split("/listings/")[1].split("/")[0]
    edit = await api.call("PATCH", f"/v1/listings/{listing}", case.user, json={"price_fen": 5100})
    assert edit.status == 200 and edit.body["version"] == version + 2, edit

    again = await retry(api, case.path, case.user, case.body, key, method=case.method)
    assert (again.status, again.body) == (200, lost_body), again
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert _listing(api.topo, case.path) == (version + 2, 5100, events + 2)


async def test_an_update_key_used_again_with_another_body_is_refused(api: Api) -> None:
    """The same Idempotency-Key on a PATCH with another body: 422 `idempotency_key_reused` naming the header, from
    the gateway and (distributed) from the service process itself; nothing changes."""
    case = await UPDATES["PATCH /v1/listings/{id}"](api)
    key = uuid.uuid4().hex
    assert (await send(api, case.path, case.user, case.body, key, "PATCH")).status == 200
    done = table_rows(api.topo)
    other = {"price_fen": 100}
    bases = [api.topo.url] + ([api.topo.service_url] if api.mode == "distributed" else [])  # type: ignore[attr-defined]
    for base in bases:
        headers = case.user.auth | {"Idempotency-Key": key}
        async with api.session.patch(base + case.path, json=other, headers=headers) as r:
            problem = await r.json(content_type=None)
        assert r.status == 422 and problem["reason"] == "idempotency_key_reused", (base, problem)
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert rows_changed(done, table_rows(api.topo)) == []


# --- retries interleaved with faults and duplicates ----------------------------------------------------------

# One step: which of three keys, sent how many times at once, through the gateway or straight to the service
# process (as a second gateway replica that shares no key store would: only the service's own key stops it), and
# which fault loses the reply of the first request that reaches it.
STEP = st.tuples(
    st.integers(0, 2),
    st.integers(1, 3),
    st.sampled_from(["gateway", "direct"]),
    st.sampled_from(["none", "gateway raise", "service raise", "service drop"]),
)


@given(steps=st.lists(STEP, min_size=1, max_size=6))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_retries_interleaved_with_faults_and_duplicates_book_once_per_key(topology, steps) -> None:  # noqa: ANN001
    asyncio.run(_interleave(topology, steps))


async def _interleave(topo: FaultyTopology, steps: list[tuple[int, int, str, str]]) -> None:
    distributed = topo.mode == "distributed"
    async with aiohttp.ClientSession() as session:
        api = Api(topo, session)
        resident = await api.login()
        keys = [uuid.uuid4().hex for _ in range(3)]
        bodies = [booking_body(win=_window()) for _ in range(3)]
        replies: dict[str, list[bytes]] = {}
        for k, n, via, fault in steps:
            key = keys[k]
            if fault != "none":
                where, mode = fault.split()
                if where == "service" and not distributed:
                    where = "gateway"  # the embedded run has no service process of its own
                if via == "direct" and distributed:
                    where = "service"  # the gateway is not on the way
                topo.faults.arm(key, where, mode)
            base = topo.service_url if via == "direct" and distributed else topo.url
            got = await asyncio.gather(*(_post(session, base, resident, bodies[k], key) for _ in range(n)))
            topo.faults.armed.pop(key, None)  # a fault no request reached (all answered as duplicates)
            for status, raw in got:
                assert status in (201, 409, 500, 502, -1), (status, raw[:300])
                if status == 409:
                    assert json.loads(raw)["reason"] == "idempotency_key_in_progress", raw
                if status == 201:
                    replies.setdefault(key, []).append(raw)
        used = sorted({keys[k] for k, *_ in steps})
        booked = {}
        for key in used:
            final = await retry(api, "/v1/pickups", resident, bodies[keys.index(key)], key)
            assert final.status == 201, final
            assert all(r == final.body for r in replies.get(key, [])), "a key answered two different replies"
            if key in topo.faults.lost:
                assert topo.faults.lost[key][1] == final.body
            booked[final.json()["id"]] = key
        assert sorted(_pickups_of(topo, resident.user_id)) == sorted(booked), "one pickup per key, no more"


async def _post(
    session: aiohttp.ClientSession, base: str, user: User, body: Any, key: str
) -> tuple[int, bytes]:
    try:
        async with session.post(
            base + "/v1/pickups", json=body, headers=user.auth | {"Idempotency-Key": key}
        ) as r:
            return r.status, await r.read()
    except aiohttp.ClientError:  # the service dropped the connection it was asked straight
        return -1, b""


# --- a reply that could not be stored; keys forgotten after the retention -----------------------------------


async def test_a_handler_failing_after_its_commit_is_answered_from_what_it_made(
    api: Api, monkeypatch
) -> None:  # noqa: ANN001
    """The work committed, then the handler itself failed: no reply to store (the key says `lost`). The retry is
    answered at once from what the request made — the consent it recorded, 201 — instead of recording it again."""
    from services.accounts import handlers

    real = handlers.record_consent

    def commits_then_fails(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        real(*args, **kw)
        raise RuntimeError("fault injected after the commit")

    monkeypatch.setattr(handlers, "record_consent", commits_then_fails)
    user, key = await api.login(), uuid.uuid4().hex
    before = row_counts(api.topo)
    first = await send(api, "/v1/me/consents", user, {"kind": "reverse_invoicing"}, key)
    assert first.status == 500
    made = changed(before, row_counts(api.topo))
    assert made["accounts.consents"] == 1, made
    assert _key_row(api.topo, user, key)[1].state == "lost"
    again = await send(api, "/v1/me/consents", user, {"kind": "reverse_invoicing"}, key)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true", again
    with api.topo.platform["accounts"].db.engine.connect() as conn:
        from services.accounts.store import consents

        [(cid,)] = conn.execute(select(consents.c.id).where(consents.c.user_id == user.user_id)).all()
    assert again.json()["id"] == cid and again.json()["kind"] == "reverse_invoicing"
    assert changed(before, row_counts(api.topo)) == made


async def test_a_booking_whose_handler_failed_after_the_commit_is_answered_with_its_pickup(
    api: Api, monkeypatch
) -> None:  # noqa: ANN001
    """The same through the group-commit writer: the booking committed (its key recorded the pickup in the batch's
    transaction), then building the reply failed. The retry gets 201 with that pickup; one pickup in booking."""
    from services.booking import handlers

    def fails(*args: Any, **kw: Any) -> dict:
        raise RuntimeError("fault injected after the commit")

    resident, key, body = await api.login(), uuid.uuid4().hex, booking_body(win=_window())
    before = row_counts(api.topo)
    with monkeypatch.context() as m:
        m.setattr(handlers, "booking_view", fails)
        first = await send(api, "/v1/pickups", resident, body, key)
    assert first.status == 500, first
    [pid] = _pickups_of(api.topo, resident.user_id)
    assert _key_row(api.topo, resident, key)[1].made == pid
    again = await send(api, "/v1/pickups", resident, body, key)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true", again
    assert again.json()["id"] == pid and again.json()["status"] == "requested"
    assert _pickups_of(api.topo, resident.user_id) == [pid]
    made = changed(before, row_counts(api.topo))
    assert made["booking.pickups"] == 1 and made["booking.outbox"] == 1, made


async def test_a_route_without_a_replay_still_says_the_reply_is_lost(api: Api, monkeypatch) -> None:  # noqa: ANN001
    """A keyed route whose reply is not rebuilt (NO_REPLAY: here an admin's price computation, whose reply is the
    run's report): its work is not done again and the retry is told so (409 `idempotency_key_reply_lost`)."""
    from datetime import date

    from services.pricing import handlers

    real = handlers.compute_on_request

    def computes_then_fails(*args: Any, **kw: Any) -> dict:
        real(*args, **kw)
        raise RuntimeError("fault injected after the commit")

    admin, key = await api.admin(), uuid.uuid4().hex
    body = {"date": (date.today() - timedelta(days=2)).isoformat(), "reason": "补算"}
    before = row_counts(api.topo)
    with monkeypatch.context() as m:
        m.setattr(handlers, "compute_on_request", computes_then_fails)
        assert (await send(api, "/v1/admin/prices/compute", admin, body, key)).status == 500
    made = changed(before, row_counts(api.topo))
    assert made["pricing.computation_runs"] == 1, made
    again = await send(api, "/v1/admin/prices/compute", admin, body, key)
    assert again.status == 409 and again.json()["reason"] == "idempotency_key_reply_lost", again
    assert changed(before, row_counts(api.topo)) == made  # not computed again


async def _skip_storing(*args: Any, **kw: Any) -> None:
    return None  # the process died between the commit and storing the reply


@pytest.mark.parametrize("action", ["ship", "accept"])
async def test_a_refusal_an_action_committed_is_rebuilt_as_that_refusal(
    api: Api, action: str, monkeypatch
) -> None:  # noqa: ANN001
    """Some actions commit work and then refuse: shipping after `ship_by` cancels the order (the buyer's money
    released) and answers 409 `not_shipped`; grabbing a job whose window has opened expires it and answers 409.
    Their reply never stored, the retry gets the same 409 — rebuilt from the order as it stands, and from the
    outcome the accept recorded — and nothing is done twice."""
    from services.kernel import idempotency
    from services.listings.store import orders

    from .replay_cases import action_accept, action_ship, pickups_table

    case = await (action_ship if action == "ship" else action_accept)(api)
    rid = case.path.split("/")[3]
    past = datetime.now(UTC) - timedelta(minutes=1)
    db, t, values = (
        (api.topo.platform["listings"].db, orders, {"ship_by": past})
        if action == "ship"
        else (*pickups_table(api), {"window_start": past})
    )
    with db.engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == rid).values(**values))
    key, before = uuid.uuid4().hex, table_rows(api.topo)
    faults: Faults = api.topo.faults  # type: ignore[attr-defined]
    faults.arm(key, *LOST_ON_THE_WAY[api.mode], status=409)
    with monkeypatch.context() as m:
        m.setattr(idempotency, "_store", _skip_storing)
        assert (await send(api, case.path, case.user, case.body, key)).status == 500
    lost_status, lost_body = faults.lost[key]
    refusal = json.loads(lost_body)
    assert lost_status == 409 and refusal["current_state"] in ("cancelled", "expired"), refusal
    done = table_rows(api.topo)
    assert rows_changed(before, done), "the refusal committed nothing"
    _time_passes(api.topo, case.user, key)
    for _ in range(2):
        again = await send(api, case.path, case.user, case.body, key)
        assert (again.status, again.json()) == (409, refusal)
    assert rows_changed(done, table_rows(api.topo)) == []


async def test_a_logout_the_token_store_missed_is_put_in_force_by_its_retry(api: Api, monkeypatch) -> None:  # noqa: ANN001
    """The logout committed a new token version but the token store was down: 503, "repeat the request to put it
    in force", and the old token still works. The keyed retry (the key says `lost`) is answered by the replay,
    which publishes the committed version as the handler does on a repeat: logged out, the old token refused."""
    from services.accounts import handlers

    class Down:
        def raise_to(self, *args: Any, **kw: Any) -> None:
            raise ConnectionError("fault injected: the token store is down")

    user, key = await api.login(), uuid.uuid4().hex
    with monkeypatch.context() as m:
        m.setattr(handlers, "token_versions", lambda settings: Down())
        first = await send(api, "/v1/auth/logout", user, None, key)
    assert first.status == 503, first
    assert (await api.call("GET", "/v1/me", user)).status == 200  # not in force yet
    assert _key_row(api.topo, user, key)[1].state == "lost"
    again = await send(api, "/v1/auth/logout", user, None, key)
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true", again
    assert again.json() == {"user_id": user.user_id, "status": "logged_out"}
    assert (await api.call("GET", "/v1/me", user)).status == 401


async def test_keys_are_forgotten_after_the_retention(api: Api) -> None:
    from services.kernel import idempotency
    from services.kernel.outbox import idempotency_keys_t as keys_t

    db = api.topo.platform["accounts"].db
    old = datetime.now(UTC) - timedelta(hours=api.topo.settings.idempotency_retention_hours, minutes=1)
    with db.engine.begin() as conn:
        conn.execute(
            keys_t.insert().values(
                scope="user:us_old", key="k", fingerprint="f", state="replied", created_at=old
            )
        )
    idempotency._last_purge.pop(db, None)  # due now: the next stored reply purges
    user, key = await api.login(), uuid.uuid4().hex
    assert (await send(api, "/v1/me/consents", user, {"kind": "reverse_invoicing"}, key)).status == 201
    with db.engine.connect() as conn:
        rows = conn.execute(select(keys_t.c.scope, keys_t.c.state).where(keys_t.c.key.in_(["k", key]))).all()
    assert rows == [(f"user:{user.user_id}", "replied")]


async def test_a_retry_while_the_work_is_finishing_waits_for_its_reply(api: Api, monkeypatch) -> None:  # noqa: ANN001
    """The consent is committed and the handler is still at work when the retry comes (distributed: the gateway gave
    up waiting, 504). The retry is told 409 in progress with Retry-After — which nobody keeps as the key's
    outcome — and once the reply is stored, the next retry gets it."""
    from services.accounts import handlers

    real = handlers.record_consent

    def slow_after_commit(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kw)
        time.sleep(1.0)
        return out

    monkeypatch.setattr(handlers, "record_consent", slow_after_commit)
    user, key, body = await api.login(), uuid.uuid4().hex, {"kind": "reverse_invoicing"}
    before = row_counts(api.topo)
    gw = api.topo.gateway_app["gateway"]  # type: ignore[index]
    gw.gw = gw.gw.model_copy(update={"upstream_timeout_s": 0.3})
    try:
        first = asyncio.create_task(send(api, "/v1/me/consents", user, body, key))
        await asyncio.sleep(0.6)
        busy = await send(api, "/v1/me/consents", user, body, key)
        assert busy.status == 409 and busy.headers["Retry-After"] == "1", busy
        assert busy.json()["reason"] == "idempotency_key_in_progress"
        first_reply = await first
    finally:
        gw.gw = gw.gw.model_copy(update={"upstream_timeout_s": 30.0})
    assert first_reply.status == (504 if api.mode == "distributed" else 201), first_reply
    again = await retry(api, "/v1/me/consents", user, body, key)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true", again
    if first_reply.status == 201:
        assert again.body == first_reply.body
    assert changed(before, row_counts(api.topo))["accounts.consents"] == 1
