"""The authorization matrix, generated from the gateway's route table: every route × every role × anonymous.

Expected outcome from the route's declared policy:
- public: nobody gets 401/403;
- authenticated: anonymous 401; any role passes (not 401/403);
- roles={...}: anonymous 401; a listed role passes (not 401/403); any other role 403.

"Passes" means the policy let the request through: with made-up ids and no body the handler then answers 400/404/
422 (or 2xx), never 401, and never the policy's 403 (`reason: role_required`). A handler may still answer its own 403
about the record (e.g. booking: "only a verified collector": the made-up collector in the token is in no service's
records); the policy's refusal and a handler's are told apart by the problem's `reason`. Routes are read from
`all_routes()` at collection time, so a route another engineer adds is in the matrix on the next run. The same matrix runs against the distributed gateway (forwarders), whose
policy check happens before forwarding: there an allowed request reaches the (unreachable) service and gets 502.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from gateway.app import all_routes, create_app, create_app_over
from services.bootstrap import Platform
from services.kernel.auth import ROLES, Principal, issue_token
from services.kernel.http import POLICY_FORBIDDEN, PUBLIC, RouteDef, Router
from services.kernel.runtime import available_services
from services.kernel.settings import Settings

ROUTES = all_routes()
FIRM_ID = "fm_matrix"
FIRM_ROLE = {"firm": "owner", "accountant": "accountant", "collector": "collector"}
_PARAM = re.compile(r"{(\w+)(?::([^}]*))?}")


def _settings(tmp_path, **kw) -> Settings:  # noqa: ANN001
    return Settings(
        env="test",
        data_dir=tmp_path,
        bus="dblog",
        jwt_secret="matrix-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        rate_limit_per_minute=100_000,
        rate_limit_ip_per_minute=100_000,
        **kw,
    )


def _url(route: RouteDef) -> str:
    """The route's path with made-up values in its parameters (matching a parameter's regex, if it has one)."""

    def fill(m: re.Match) -> str:
        pattern = m.group(2)
        for candidate in ("zz_missing", "1", "0", "a"):
            if pattern is None or re.fullmatch(pattern, candidate):
                return candidate
        return "1"

    return _PARAM.sub(fill, route.path)


def _token(settings: Settings, role: str) -> str:
    firm_roles = {(FIRM_ID, FIRM_ROLE[role])} if role in FIRM_ROLE else set()
    principal = Principal(
        f"us_matrix_{role}",
        frozenset({role}),
        frozenset({FIRM_ID} if firm_roles else ()),
        frozenset(firm_roles),
    )
    return issue_token(settings, principal)


def expected(route: RouteDef, role: str | None) -> str:
    """'pass' (not 401/403), '401' or '403'."""
    if route.policy.kind == PUBLIC:
        return "pass"
    if role is None:
        return "401"
    if route.policy.kind == "roles" and role not in route.policy.roles:
        return "403"
    return "pass"


async def _status(client, route: RouteDef, headers: dict[str, str]) -> tuple[int, str]:  # noqa: ANN001
    async def go() -> tuple[int, str]:
        async with client.request(route.method, _url(route), headers=headers) as r:
            # streams (SSE) stay open: the status line is all we need
            text = "" if route.raw and r.status < 300 else await r.text()
            return r.status, text

    try:
        return await asyncio.wait_for(go(), timeout=10)
    except TimeoutError:
        return 0, "timed out after the policy let it through"


def _outcomes(settings: Settings, route: RouteDef) -> list[tuple[str | None, dict[str, str], str]]:
    out: list[tuple[str | None, dict[str, str], str]] = [(None, {}, expected(route, None))]
    for role in sorted(ROLES):
        out.append((role, {"Authorization": f"Bearer {_token(settings, role)}"}, expected(route, role)))
    return out


def _check(
    route: RouteDef,
    role: str | None,
    want: str,
    status: int,
    text: str,
    allowed_status: set[int] | None = None,
) -> str | None:
    who = role or "anonymous"
    reason = _reason(text) if status in (401, 403) else None
    if want == "pass":
        if status == 401 or (status == 403 and reason == POLICY_FORBIDDEN):
            return f"{who}: got {status} but the policy {route.policy.describe()} allows it: {text[:200]}"
        if allowed_status is not None and status not in allowed_status:
            return f"{who}: got {status}, expected one of {sorted(allowed_status)}: {text[:200]}"
        return None
    if status != int(want):
        return f"{who}: got {status}, expected {want} from the policy {route.policy.describe()}: {text[:200]}"
    if want == "403" and reason != POLICY_FORBIDDEN:
        return f"{who}: got a 403, but not from the route's policy: {text[:200]}"
    return None


def _reason(text: str) -> str | None:
    """The problem's `reason` (every 401/403 must be problem+json)."""
    body = json.loads(text)
    assert body["type"] and body["title"] and body["status"] in (401, 403)
    return body.get("reason")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):  # noqa: ANN001, ANN201
    settings = _settings(tmp_path_factory.mktemp("matrix"))
    p = Platform(settings).prepare()
    yield p
    p.stop()


def _id(route: RouteDef) -> str:
    return f"{route.method} {route.path} [{route.policy.describe()}]"


@pytest.mark.parametrize("route", ROUTES, ids=_id)
async def test_embedded(route: RouteDef, platform, aiohttp_client) -> None:  # noqa: ANN001
    app = create_app_over(platform)
    app["platform_no_stop"] = True
    client = await aiohttp_client(app)
    failures = []
    for role, headers, want in _outcomes(platform.settings, route):
        status, text = await _status(client, route, headers)
        failure = _check(route, role, want, status, text)
        if failure:
            failures.append(failure)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("route", ROUTES, ids=_id)
async def test_distributed(route: RouteDef, tmp_path, aiohttp_client) -> None:  # noqa: ANN001
    # every service "lives" on a port where nothing listens: what passes the gateway's policy gets 502
    urls = {name: "http://127.0.0.1:9" for name in available_services()}
    settings = _settings(tmp_path, services="none", service_urls=json.dumps(urls))
    client = await aiohttp_client(create_app(settings))
    failures = []
    for role, headers, want in _outcomes(settings, route):
        status, text = await _status(client, route, headers)
        failure = _check(route, role, want, status, text, allowed_status={502, 504})
        if failure:
            failures.append(failure)
    assert not failures, "\n".join(failures)


def test_every_route_declares_a_known_policy() -> None:
    assert ROUTES, "the route table is empty"
    for r in ROUTES:
        assert r.policy.kind in ("public", "authenticated", "roles"), r.path
        unknown = r.policy.roles - ROLES
        assert not unknown, f"{r.method} {r.path} names unknown roles {sorted(unknown)}: nobody could call it"
    seen = [(r.method, r.path) for r in ROUTES]
    assert len(seen) == len(set(seen)), "a route is declared twice"


def test_a_route_without_a_policy_is_refused() -> None:
    router = Router("demo")
    for kw in ({}, {"public": True, "authenticated": True}, {"public": True, "roles": {"admin"}}):
        with pytest.raises(ValueError, match="declare exactly one"):
            router.route("GET", "/v1/demo", **kw)
