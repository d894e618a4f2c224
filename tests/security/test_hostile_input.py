"""Fixes 5-10: hostile input refused cleanly (problem+json naming the field), and no leaks, in both runs.

These probe the shared rules of services/kernel/inputs.py through a few real routes; test_owasp.py applies the
same probes to every route of the table.
"""

from __future__ import annotations

import json

from tests.security.flows import firm_body, pending_firm
from tests.security.harness import Api

PROBLEM = "application/problem+json"


def _is_problem(r, status: int) -> None:  # noqa: ANN001
    assert r.status == status, r
    assert r.headers["Content-Type"].startswith(PROBLEM), r.headers
    assert r.body["status"] == status and r.body["title"] and r.body["type"], r.body


# --- 5: depth bombs ------------------------------------------------------------------------------------------


async def test_a_depth_bomb_is_refused_before_parsing(api: Api) -> None:
    user = await api.login()
    bomb = ("[" * 5000 + "]" * 5000).encode()  # 10 KB, 5,000 levels
    for path, who in (("/v1/firms", user), ("/v1/auth/otp", None)):
        r = await api.call("POST", path, who, data=bomb, headers={"Content-Type": "application/json"})
        _is_problem(r, 400)
        assert r.body["errors"][0]["field"] == "body" and "nested deeper" in r.body["errors"][0]["message"]
    # a handler reading an optional body of its own gets the same rules (booking: cancel with a reason)
    r = await api.call(
        "POST", "/v1/pickups/pk_missing/cancel", user, data=bomb, headers={"Content-Type": "application/json"}
    )
    _is_problem(r, 400)
    nested = {"phone": "13800000000"}
    for _ in range(40):
        nested = {"x": nested}
    r = await api.call("POST", "/v1/auth/otp", json=nested)
    _is_problem(r, 400)


# --- 6: content type --------------------------------------------------------------------------------------------


async def test_json_sent_as_something_else_is_415(api: Api) -> None:
    user = await api.login()
    body = json.dumps(firm_body()).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = await api.call("POST", "/v1/firms", user, data=body, headers=headers)
        _is_problem(r, 415)
        assert r.body["errors"][0]["field"] == "Content-Type"
    r = await api.call(
        "POST", "/v1/firms", user, data=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status == 201, r


# --- 7: control characters, normalisation, URLs -----------------------------------------------------------------


async def test_control_and_bidi_characters_are_refused(api: Api) -> None:
    user = await api.login()
    for field, value in (
        ("name", "绿环\x00回收"),
        ("address", "建国路\u202e1号"),
        ("recycler_filing_no", "京商\u2066备"),
        ("name", "绿\u200b环"),
        ("recycler_filing_no", "京商备\u200d001"),
    ):
        r = await api.call("POST", "/v1/firms", user, json=firm_body() | {field: value})
        _is_problem(r, 400)
        assert r.body["errors"][0]["field"] == field, r.body
    r = await api.call("POST", "/v1/firms", user, json=firm_body() | {"ev\x00il": "x"})
    _is_problem(r, 400)


async def test_identifiers_are_normalised(api: Api) -> None:
    user = await api.login()
    r = await api.call(
        "POST", "/v1/firms", user, json=firm_body() | {"recycler_filing_no": "京商备２０２４ＡＢ"}
    )
    assert r.status == 201 and r.body["recycler_filing_no"] == "京商备2024AB", r


async def test_only_http_urls_are_accepted(api: Api) -> None:
    from services.kernel.inputs import http_url

    for bad in (
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/html,x",
        "//evil.example",
        "http://",
        "https://user:pw@evil.example/x",
        "https://e.example/a b",
    ):
        try:
            http_url(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    assert http_url("https://files.example.cn/p/1.jpg") == "https://files.example.cn/p/1.jpg"


# --- 8: strict numbers ------------------------------------------------------------------------------------------


async def test_numbers_are_strict(api: Api) -> None:
    user = await api.login()
    area = {"lat": 39.9, "lng": 116.4, "radius_km": 5}
    base = {
        "real_name": "张三",
        "id_number": "11010519491231002X",
        "firm_id": "fm_missing",
        "area": area,
        "categories": ["metal.copper"],
    }
    for bad_area, field in (({"lat": True}, "area.lat"), ({"radius_km": "5"}, "area.radius_km")):
        r = await api.call("POST", "/v1/collectors", user, json=base | {"area": area | bad_area})
        _is_problem(r, 400)
        assert field in [e["field"] for e in r.body["errors"]], r.body
    r = await api.call("GET", "/v1/admin/verifications?limit=2_0", await api.admin())
    _is_problem(r, 400)
    r = await api.call("GET", "/v1/admin/verifications?limit=%EF%BC%92", await api.admin())  # full-width 2
    _is_problem(r, 400)
    r = await api.call(
        "POST", "/v1/auth/otp", data=b'{"phone": NaN}', headers={"Content-Type": "application/json"}
    )
    _is_problem(r, 400)


def test_quantities_and_decimals_are_plain() -> None:
    from decimal import Decimal

    from services.kernel.inputs import decimal_str
    from services.kernel.money import parse_qty

    for bad in ("２_１", "2_1", "1E2", "1e2", " 7", "+7", "NaN", "Infinity", "0x10", "", "7.", ".5", True):
        for parse in (parse_qty, decimal_str):
            try:
                parse(bad)  # type: ignore[arg-type]
            except ValueError:
                continue
            raise AssertionError(f"{parse.__name__} accepted {bad!r}")
    assert parse_qty("12.345") == Decimal("12.345") and parse_qty(21) == Decimal("21.000")
    assert decimal_str("-0.5") == Decimal("-0.5")


# --- 9: ids: shape and existence ----------------------------------------------------------------------------------


async def test_ids_are_checked_for_shape_and_existence(api: Api) -> None:
    admin = await api.admin()
    big = "fm_" + "a" * 100_000
    r = await api.call(
        "POST", "/v1/admin/invoicing/tax-unpaid", admin, json={"firm_id": big, "period": "2026-10"}
    )
    _is_problem(r, 400)
    assert r.body["errors"][0]["field"] == "firm_id" and len(json.dumps(r.body)) < 2000
    r = await api.call(
        "POST",
        "/v1/admin/invoicing/tax-unpaid",
        admin,
        json={"firm_id": "fm_doesnotexist", "period": "2026-10"},
    )
    _is_problem(r, 404)
    r = await api.call("GET", "/v1/firms/" + "x" * 5000, admin)
    _is_problem(r, 404)
    assert len(json.dumps(r.body)) < 1000, "the 404 must not echo the whole id"


# --- 10: leaks ------------------------------------------------------------------------------------------------------


async def test_no_version_banner(api: Api) -> None:
    for path in ("/healthz", "/v1/me", "/nope"):
        r = await api.call("GET", path)
        assert r.headers.get("Server") == "recycle", r.headers.get("Server")


async def test_metrics_are_not_public(api: Api) -> None:
    r = await api.call("GET", "/metrics")
    assert r.status in (401, 404) and r.headers["Content-Type"].startswith(PROBLEM)
    assert "http_requests_total" not in str(r.body)


async def test_an_oversized_header_is_431_without_echo(api: Api) -> None:
    marker = "SECRETMARKER"
    r = await api.call("GET", "/v1/me", headers={"X-Big": marker + "x" * 20_000})
    _is_problem(r, 431)
    assert marker not in json.dumps(r.body)
    assert r.headers.get("Server") == "recycle"


async def test_a_pending_firm_is_its_owners_and_admins_only(api: Api) -> None:
    owner, other = await api.login(), await api.login()
    fid = await pending_firm(api, owner)
    assert (await api.call("GET", f"/v1/firms/{fid}", owner)).status == 200
    assert (await api.call("GET", f"/v1/firms/{fid}", await api.admin())).status == 200
    r = await api.call("GET", f"/v1/firms/{fid}", other)
    _is_problem(r, 403)
    assert owner.user_id not in json.dumps(r.body)
