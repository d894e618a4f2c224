"""Schemathesis against the /openapi.json of a running gateway (embedded, a real server on a free port).

Every operation is called with generated data (valid and invalid) by a real user holding the role the route asks
for: a resident, a collector and a firm owner made verified through the API, an admin (ADMIN_PHONES) — the
erasure operator, accountant and regulator routes get a signed-in user with just that role. No reply may be a 5xx;
every reply must match the document (status code listed, content type, body schema); every error is
application/problem+json whose `status` is the reply's, and every 400 names the bad field(s). Streams (SSE) are
left out: they never end; so is logout (it would revoke the fuzzing user's token). Bounded and deterministic: a
few examples per operation (SCHEMATHESIS_MAX_EXAMPLES, 6), derandomized.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.error
import urllib.request

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import all_routes, create_app_over
from services.accounts import handlers
from services.accounts.sms import sms_of
from services.bootstrap import Platform
from services.kernel.auth import Principal, issue_token
from services.kernel.settings import Settings

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "6"))
STREAMS = [r.operation_id for r in all_routes() if r.raw]


class LiveGateway:
    """The embedded gateway served by aiohttp in a thread with its own event loop."""

    def __init__(self, settings: Settings):
        self.platform = Platform(settings).prepare()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live-gateway", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = create_app_over(self.platform)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        assert self.ready.wait(60), "the gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


ADMIN_PHONE = "13700000009"
USCC = "91350100M000100Y43"  # valid check characters (services/kernel/checkdigits.py)
COLLECTOR_ID_NUMBER = "44030519900101123X"


@pytest.fixture(scope="module")
def live(tmp_path_factory):  # noqa: ANN001, ANN201
    settings = Settings(
        env="test",
        data_dir=tmp_path_factory.mktemp("schemathesis"),
        bus="dblog",
        jwt_secret="schemathesis-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        rate_limit_per_minute=1_000_000,
        rate_limit_ip_per_minute=1_000_000,
        admin_phones=ADMIN_PHONE,
    )
    with LiveGateway(settings) as gw:
        yield gw


def _http(live, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:  # noqa: ANN001
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}"} | ({"Content-Type": "application/json"} if data else {})
    req = urllib.request.Request(live.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def tokens(live) -> dict[str, str]:  # noqa: ANN001
    """An access token per role, each of a real user in the state that role implies."""
    rt = live.platform["accounts"]

    def login(phone: str) -> str:
        handlers.request_otp(rt, phone)
        return handlers.login(rt, phone, sms_of(rt).last_code(phone)).tokens.access_token

    admin, owner, applicant = login(ADMIN_PHONE), login("13700000001"), login("13700000002")
    st, firm = _http(
        live,
        "POST",
        "/v1/firms",
        owner,
        {
            "name": "绿色再生资源回收有限公司",
            "uscc": USCC,
            "recycler_filing_no": "BA-2024-0001",
            "address": "北京市朝阳区某路1号",
            "city_code": "110105",
        },
    )
    assert st == 201, firm
    assert _http(live, "POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)[0] == 200
    st, col = _http(
        live,
        "POST",
        "/v1/collectors",
        applicant,
        {
            "real_name": "王五",
            "id_number": COLLECTOR_ID_NUMBER,
            "firm_id": firm["id"],
            "area": {"lat": 39.9087, "lng": 116.4605, "radius_km": 8},
            "categories": ["paper.cardboard", "metal.copper", "plastic.pet"],
        },
    )
    assert st == 201, col
    assert _http(live, "POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)[0] == 200
    live.platform.drain()  # booking's copy of verified collectors, invoicing's of firms
    out = {
        "resident": login("13700000003"),
        "admin": login(ADMIN_PHONE),
        "firm": login("13700000001"),  # fresh tokens carry the roles granted since
        "collector": login("13700000002"),
    }
    for role, token in out.items():
        st, me = _http(live, "GET", "/v1/me", token)
        assert st == 200 and role in me["roles"], (role, me)
    # roles that need no flow here: a signed-in user holding just that one
    handlers.request_otp(rt, "13700000004")
    other = handlers.login(rt, "13700000004", sms_of(rt).last_code("13700000004"))
    for role in ("erasure_operator", "accountant", "regulator"):
        out[role] = issue_token(live.platform.settings, Principal(other.user_id, frozenset({role})))
    return out


# who calls a route that asks for one of several roles: the first of these it accepts
ROLE_PREFERENCE = ("resident", "collector", "firm", "admin", "erasure_operator", "accountant", "regulator")


def caller_for(policy: str) -> str | None:
    """The role whose user calls an operation with this `x-policy` (None: anonymous, for public routes and
    /metrics, which takes its own token)."""
    if policy == "authenticated":
        return "resident"
    if not policy.startswith("roles:"):
        return None
    allowed = policy.removeprefix("roles:").split(",")
    return next(r for r in ROLE_PREFERENCE if r in allowed)


@schemathesis.check
def problem_json_on_errors(ctx, response, case) -> None:  # noqa: ANN001
    """Every 4xx/5xx is application/problem+json with its own status; a 400 names the bad field(s)."""
    if response.status_code < 400:
        return
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype.startswith("application/problem+json"), f"{response.status_code} in {ctype!r}"
    body = json.loads(response.text)
    assert body.get("status") == response.status_code and body.get("title") and body.get("type"), body
    if response.status_code == 400:
        fields = [e.get("field") for e in body.get("errors", []) if isinstance(e, dict)]
        assert fields and all(fields), f"a 400 naming no field: {body}"


def _document() -> dict:
    """The document the gateway serves at /openapi.json (built from the same route table at import time, so
    schemathesis can parametrize at collection; the test checks the live server serves exactly this)."""
    from gateway.app import SYSTEM_ROUTES, VERSION
    from gateway.openapi import build_openapi

    return build_openapi(all_routes(), SYSTEM_ROUTES, "Recycling marketplace API", VERSION)


# Inputs schemathesis once found breaking a route, kept as regression tests after the fix.
REGRESSION_INPUTS = {
    # parse_qty raised decimal.InvalidOperation (a 500) for a huge quantity: now a 400 naming the field
    "POST /v1/pickups": {
        "address": {"text": "x", "city_code": "110105", "lat": 39.9, "lng": 116.4},
        "window": {"start": "2030-01-01T09:00:00+08:00", "end": "2030-01-01T10:00:00+08:00"},
        "items": [{"category": "metal.copper", "est_qty": 1e133}],
        "notes": "",
    },
    "POST /v1/pickups/{id}/weigh": {"lines": [{"category": "metal.copper", "qty": 1e133}]},
}

DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(operation_id=[*STREAMS, "accounts_logout"])


def test_the_live_server_serves_this_document(live) -> None:  # noqa: ANN001
    with urllib.request.urlopen(live.url + "/openapi.json", timeout=10) as r:
        assert json.loads(r.read()) == json.loads(json.dumps(DOCUMENT))


def test_every_operation_is_fuzzed_but_streams_and_logout() -> None:
    ops = {op["operationId"] for ops in DOCUMENT["paths"].values() for op in ops.values()}
    fuzzed = {r.ok().definition.raw["operationId"] for r in schema.get_all_operations()}
    assert ops - fuzzed == {*STREAMS, "accounts_logout"}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_document(case, live, tokens) -> None:  # noqa: ANN001
    role = caller_for(case.operation.definition.raw.get("x-policy", "public"))
    case.call_and_validate(
        base_url=live.url,
        headers={"Authorization": f"Bearer {tokens[role]}"} if role else {},
        timeout=20,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            problem_json_on_errors,
        ],
    )


@pytest.mark.parametrize("label", sorted(REGRESSION_INPUTS))
def test_inputs_schemathesis_once_broke_are_refused_cleanly(label: str, live, tokens) -> None:  # noqa: ANN001
    method, path = label.split(" ", 1)
    token = tokens["collector" if path.endswith("/weigh") else "resident"]
    st, body = _http(live, method, path.replace("{id}", "pk_missing"), token, REGRESSION_INPUTS[label])
    assert 400 <= st < 500, f"{label}: {st}"
    assert body["status"] == st
