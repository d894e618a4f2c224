"""The OWASP API Security Top 10 probes, generated from the route table (`gateway.app.all_routes()`), both runs.

Nothing here is written per route: a route joins by what it declares on its `Router` decorator (docs/security.md,
"Declaring a route"): its policy, `owner=` / `not_owned=` for a path parameter, `example=` for its body.

- API1 broken object-level authorization: every route declaring `owner="<kind>"` is called by an intruder (same
  roles, not theirs) with a record made by the factory of that kind (factories.py): 403 or 404, nothing else.
- API3 broken object-property-level authorization (mass assignment): every body route refuses fields it does
  not declare (owner_user_id, roles, status, ...) with 400 naming them.
- API4/API8 input: every body route refuses a depth bomb (400), a non-JSON content type (415), NUL and bidi
  overrides in any string field (400 naming it); random JSON never gets a 5xx (hypothesis).
- API5 function-level authorization: test_function_level_authz.py (every route x every role x anonymous).
- API2 token revocation: test_revocation.py; API4/API6 SMS pumping: test_sms_pumping.py; leaks: test_hostile_input.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import all_routes
from services.kernel.auth import ROLES, Principal, issue_token
from services.kernel.http import RouteDef
from tests.security.factories import FACTORIES, make
from tests.security.harness import Api, Topology

ROUTES = all_routes()
OWNED = [r for r in ROUTES if r.owner]
BODY_ROUTES = [r for r in ROUTES if r.body is not None]
_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
# fields an attacker adds to a body hoping the handler copies them onto the record
INJECTED = (
    "owner_user_id",
    "user_id",
    "roles",
    "status",
    "verified",
    "is_admin",
    "firm_id",
    "amount_fen",
    "id",
)


def _id(route: RouteDef) -> str:
    return f"{route.method} {route.path}"


def _fill(route: RouteDef, value: str) -> str:
    return _PARAM.sub(value, route.path)


def _superuser(topo: Topology) -> dict[str, str]:
    """A token holding every role (so every policy lets the probe through to the input checks)."""
    p = Principal(
        "us_probe",
        frozenset(ROLES),
        frozenset({"fm_probe"}),
        frozenset({("fm_probe", r) for r in ("owner", "accountant", "collector")}),
    )
    return {"Authorization": "Bearer " + issue_token(topo.settings, p)}


# --- the declarations themselves ----------------------------------------------------------------------------


def test_every_path_parameter_says_whose_record_it_names() -> None:
    missing = [_id(r) for r in ROUTES if "{" in r.path and not (r.owner or r.not_owned)]
    assert not missing, (
        'declare owner="<kind>" (and add a factory in tests/security/factories.py) or '
        f'not_owned="<why>" on these routes (docs/security.md): {missing}'
    )


def test_every_owned_kind_has_a_factory_and_every_owned_body_an_example() -> None:
    no_factory = sorted({r.owner for r in OWNED} - set(FACTORIES))
    assert not no_factory, f"write a factory in tests/security/factories.py for: {no_factory}"
    no_example = [_id(r) for r in OWNED if r.body is not None and r.example is None]
    assert not no_example, f"declare example={{...}} (a valid body) on: {no_example}"
    no_query = [
        _id(r)
        for r in OWNED
        if r.query is not None
        and r.query_example is None
        and any(f.is_required() for f in r.query.model_fields.values())
    ]
    assert not no_query, f"declare query_example={{...}} (valid required parameters) on: {no_query}"
    several = [_id(r) for r in OWNED if len(_PARAM.findall(r.path)) != 1]
    assert not several, f"an owned route names its record with exactly one path parameter: {several}"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.example is not None], ids=_id)
def test_every_example_is_a_valid_body(route: RouteDef) -> None:
    assert route.body is not None, "an example without a body model"
    route.body.model_validate_json(json.dumps(route.example), strict=True, extra="forbid")


# --- API1: object-level authorization ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", OWNED, ids=_id)
async def test_bola_someone_elses_record_is_refused(route: RouteDef, api: Api) -> None:
    made = await make(api, route.owner)  # type: ignore[arg-type]
    kw: dict = {"json": route.example if route.example is not None else {}} if route.body is not None else {}
    if route.query_example:
        kw["params"] = route.query_example
    r = await api.call(route.method, _fill(route, made.id), made.intruder, **kw)
    assert r.status in (403, 404), (
        f"{api.mode}: {made.intruder.roles} reached {route.owner} {made.id} of {made.owner.user_id}: {r}"
    )
    assert r.headers["Content-Type"].startswith("application/problem+json")


# --- API3: mass assignment ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES, ids=_id)
async def test_undeclared_fields_are_refused_by_name(route: RouteDef, api: Api) -> None:
    assert route.body is not None
    injected = {k: "x" for k in INJECTED if k not in route.body.model_fields}
    body = (route.example or {}) | injected
    r = await api.call(route.method, _fill(route, "zz_probe"), headers=_superuser(api.topo), json=body)
    assert r.status == 400, r
    named = {e["field"] for e in r.body["errors"]}
    assert set(injected) <= named, f"not refused by name: {set(injected) - named}"


# --- API4/API8: hostile input -------------------------------------------------------------------------------------


def _string_fields(route: RouteDef) -> list[str]:
    assert route.body is not None
    props = route.body.model_json_schema().get("properties", {})
    out = []
    for name, schema in props.items():
        kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
        if "string" in kinds and "enum" not in schema and "const" not in schema and "format" not in schema:
            out.append(name)
    return out


@pytest.mark.parametrize("route", BODY_ROUTES, ids=_id)
async def test_depth_bombs_content_types_and_control_characters(route: RouteDef, api: Api) -> None:
    path, auth = _fill(route, "zz_probe"), _superuser(api.topo)
    bomb = b'{"a":' * 3000 + b"1" + b"}" * 3000
    r = await api.call(route.method, path, headers=auth | {"Content-Type": "application/json"}, data=bomb)
    assert r.status == 400 and r.body["errors"][0]["field"] == "body", r
    body = json.dumps(route.example or {}).encode()
    r = await api.call(route.method, path, headers=auth | {"Content-Type": "text/plain"}, data=body)
    assert r.status == 415, r
    for field in _string_fields(route):
        for hostile in ("a\x00b", "a\u202eb"):
            r = await api.call(
                route.method, path, headers=auth, json=(route.example or {}) | {field: hostile}
            )
            assert r.status == 400, (field, r)
            assert field in {e["field"] for e in r.body["errors"]}, (field, r.body)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["２_１", "1E2", "\x00", "\u202e", "NaN", "-0", ""]),
)
_json = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


def _post(topo: Topology, route: RouteDef, body: bytes) -> int:
    req = urllib.request.Request(
        topo.url + _fill(route, "zz_probe"),
        data=body,
        method=route.method,
        headers={"Content-Type": "application/json"} | _superuser(topo),
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("route", BODY_ROUTES, ids=_id)
def test_random_json_never_breaks_a_route(route: RouteDef, topology: Topology) -> None:
    fields = st.fixed_dictionaries({}, optional={k: _json for k in route.body.model_fields})  # type: ignore[union-attr]

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(fields, _json))
    def probe(value: object) -> None:
        status = _post(topology, route, json.dumps(value).encode())
        assert status < 500, f"{status} for {json.dumps(value)[:300]}"

    probe()


QUERY_ROUTES = [r for r in ROUTES if r.query is not None]


def _query_fields(route: RouteDef) -> tuple[list[str], list[str]]:
    """(string fields, number fields) of the route's query model, by their wire names."""
    assert route.query is not None
    strings, numbers = [], []
    for name, schema in route.query.model_json_schema().get("properties", {}).items():
        kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
        if "integer" in kinds or "number" in kinds:
            numbers.append(name)
        elif "string" in kinds and "enum" not in schema and "format" not in schema:
            strings.append(name)
    return strings, numbers


@pytest.mark.parametrize("route", QUERY_ROUTES, ids=_id)
async def test_query_parameters_are_strict_too(route: RouteDef, api: Api) -> None:
    path, auth = _fill(route, "zz_probe"), _superuser(api.topo)
    strings, numbers = _query_fields(route)
    base = dict(route.query_example or {})
    for field in strings:
        r = await api.call(route.method, path, headers=auth, params=base | {field: "a\x00b"})
        assert r.status == 400 and field in {e["field"] for e in r.body["errors"]}, (field, r)
    for field in numbers:
        for lenient in ("2_0", "1E2", "２"):
            r = await api.call(route.method, path, headers=auth, params=base | {field: lenient})
            assert r.status == 400 and field in {e["field"] for e in r.body["errors"]}, (field, lenient, r)
