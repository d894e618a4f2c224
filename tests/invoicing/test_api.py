"""The invoicing API through the gateway: a settled pickup's invoice seen by the firm's accountant and by the seller,
ownership on every route, red letters, retries, the seller's cap ledger and annual statement, issuer suspension."""

from __future__ import annotations

import re
from datetime import date

import pytest

from .support import (
    accountant,
    accountant_added,
    app_client,
    auth,
    issuer_events,
    publish,
    seller_events,
    settled,
)

NOV = date(2026, 11, 10)
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
API_FIELDS = {
    "id",
    "number",
    "issuer_firm_id",
    "seller_id",
    "pickup_id",
    "kind",
    "status",
    "blocked_reason",
    "red_letter_of",
    "issued_at",
    "lines",
    "total_fen",
    "sales_excl_fen",
    "vat_rate",
    "vat_fen",
    "surcharges_fen",
    "iit_fen",
    "withheld_fen",
    "seller",
}
LINE_FIELDS = {"category", "tax_code", "qty", "unit", "unit_price_fen", "amount_fen"}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


async def _setup(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    publish(
        platform,
        *issuer_events("fm_a"),
        *issuer_events("fm_b"),
        *seller_events(settings, "u_seller"),
        *seller_events(settings, "u_other", name="李四", id_number="110105194912310037"),
        accountant_added("fm_a", "u_acc"),
    )
    return platform, client


async def test_a_settled_pickup_is_visible_to_the_firms_accountant_and_to_the_seller(
    aiohttp_client, settings
):
    platform, client = await _setup(aiohttp_client, settings)
    ev = settled("u_seller", "fm_a", [12_000_000], on=NOV)
    publish(platform, ev, settled("u_other", "fm_b", 300_000, on=NOV))
    acc = accountant(settings, "fm_a")
    r = await client.get("/v1/invoices?period=2026-11", headers=acc)
    assert r.status == 200
    page = await r.json()
    (inv,) = page["items"]
    assert page["next_cursor"] is None
    assert set(inv) >= API_FIELDS and set(inv["lines"][0]) >= LINE_FIELDS
    assert (inv["pickup_id"], inv["kind"], inv["status"], inv["blocked_reason"], inv["red_letter_of"]) == (
        ev.pickup_id,
        "blue",
        "issued",
        None,
        None,
    )
    # the hand-computed invoice of docs/invoicing.md: 120,000.00, urban issuer, month-to-date 0
    assert (inv["total_fen"], inv["sales_excl_fen"], inv["vat_rate"], inv["vat_fen"]) == (
        12_000_000,
        11_881_188,
        "0.01",
        118_812,
    )
    assert (inv["surcharges_fen"], inv["iit_fen"], inv["withheld_fen"]) == (
        4_158 + 1_782 + 1_188,
        29_703,
        155_643,
    )
    assert inv["seller"] == {
        "name_masked": "张*",
        "id_number_masked": "110***********002X",
        "id_type": "居民身份证",
    }
    assert inv["lines"][0] == inv["lines"][0] | {
        "category": "metal.steel",
        "qty": "1000.000",
        "unit": "kg",
        "unit_price_fen": 12_000,
        "amount_fen": 12_000_000,
    }
    assert len(inv["number"]) == 20 and inv["number"].startswith("26")
    assert RFC3339.fullmatch(inv["issued_at"]), inv["issued_at"]  # with its offset, on both databases
    assert inv["buyer"]["uscc"] == "91110105MA01ABCD1X" and inv["special_business"] == "报废产品收购"
    # the seller sees it among their own, and in full
    mine = await (await client.get("/v1/invoices", headers=auth(settings, "u_seller", "resident"))).json()
    assert [i["id"] for i in mine["items"]] == [inv["id"]]
    r = await client.get(f"/v1/invoices/{inv['id']}", headers=auth(settings, "u_seller", "resident"))
    detail = await r.json()
    assert r.status == 200 and {e["kind"] for e in detail["evidence"]} >= {
        "weighing",
        "consent",
        "three_flows",
    }
    assert detail["attempts"][0]["outcome"] == "issued"
    assert "张三" not in await r.text() and "11010519491231002X" not in await r.text()


async def test_ownership_on_every_invoice_route(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await _setup(aiohttp_client, settings)
    ev = settled("u_seller", "fm_a", 500_000, on=NOV)
    publish(platform, ev)
    inv = (await (await client.get("/v1/invoices", headers=accountant(settings, "fm_a"))).json())["items"][0]
    other_resident = auth(settings, "u_other", "resident")
    other_accountant = accountant(settings, "fm_b", "u_acc_b")
    collector = auth(settings, "u_col", "collector", firm_roles={"fm_a": ["collector"]})
    owner_only = auth(
        settings, "u_own", "firm", "accountant", firm_roles={"fm_a": ["owner"], "fm_b": ["accountant"]}
    )
    for headers in (other_resident, other_accountant, collector, owner_only):
        r = await client.get(f"/v1/invoices/{inv['id']}", headers=headers)
        assert r.status == 403, await r.text()
    assert (await client.get("/v1/invoices/iv_nope", headers=other_resident)).status == 404
    assert (await client.get("/v1/invoices")).status == 401
    # lists: another resident sees nothing of it; asking for someone else's invoices is refused
    assert (await (await client.get("/v1/invoices", headers=other_resident)).json())["items"] == []
    assert (await client.get("/v1/invoices?seller_id=u_seller", headers=other_resident)).status == 403
    assert (await (await client.get("/v1/invoices?seller_id=u_seller", headers=other_accountant)).json())[
        "items"
    ] == []
    assert (await client.get("/v1/invoices?issuer_firm_id=fm_a", headers=other_accountant)).status == 403
    assert (await (await client.get("/v1/invoices", headers=collector)).json())["items"] == []
    # an accountant named through firm_roles counts
    via_roles = auth(settings, "u_acc2", "accountant", firm_roles={"fm_a": ["accountant"]})
    assert (await client.get(f"/v1/invoices/{inv['id']}", headers=via_roles)).status == 200
    # red letters: only the issuing firm's accountant
    body = {"reason": "开票有误"}
    assert (
        await client.post(f"/v1/invoices/{inv['id']}/red-letter", json=body, headers=other_resident)
    ).status == 403
    assert (
        await client.post(f"/v1/invoices/{inv['id']}/red-letter", json=body, headers=other_accountant)
    ).status == 403
    assert (
        await client.post("/v1/invoices/iv_nope/red-letter", json=body, headers=accountant(settings, "fm_a"))
    ).status == 404
    assert (await client.get("/v1/invoices?period=2026-13", headers=other_resident)).status == 400


async def test_red_letter_through_the_api(aiohttp_client, settings):
    platform, client = await _setup(aiohttp_client, settings)
    ev = settled("u_seller", "fm_a", [9_000_000, 3_000_000], on=NOV)
    publish(platform, ev)
    acc = accountant(settings, "fm_a")
    blue = (await (await client.get("/v1/invoices", headers=acc)).json())["items"][0]
    r = await client.post(
        f"/v1/invoices/{blue['id']}/red-letter",
        headers=acc,
        json={"reason": "销货退回", "lines": [{"line_index": 5, "amount_fen": 1}]},
    )
    assert r.status == 400 and (await r.json())["errors"][0]["field"].startswith("lines[0]")
    r = await client.post(
        f"/v1/invoices/{blue['id']}/red-letter",
        headers=acc | {"Idempotency-Key": "red-1"},
        json={"reason": "销货退回", "lines": [{"line_index": 1, "amount_fen": 3_000_000, "qty": "1000"}]},
    )
    assert r.status == 201, await r.text()
    red = await r.json()
    assert (red["kind"], red["red_letter_of"], red["red_reason"], red["total_fen"]) == (
        "red",
        blue["id"],
        "销货退回",
        -3_000_000,
    )
    assert red["lines"][0]["amount_fen"] == -3_000_000 and red["lines"][0]["blue_line_no"] == 1
    again = await client.post(
        f"/v1/invoices/{blue['id']}/red-letter",
        headers=acc | {"Idempotency-Key": "red-1"},
        json={"reason": "销货退回", "lines": [{"line_index": 1, "amount_fen": 3_000_000, "qty": "1000"}]},
    )
    assert again.status == 201 and (await again.json())["id"] == red["id"]  # replayed, not redone
    r = await client.post(f"/v1/invoices/{blue['id']}/red-letter", headers=acc, json={"reason": "again"})
    assert r.status == 409 and (await r.json())["current_state"] == "red_lettered"
    blue_now = await (await client.get(f"/v1/invoices/{blue['id']}", headers=acc)).json()
    assert blue_now["red_letter_id"] == red["id"]
    seller_view = await (
        await client.get("/v1/invoices", headers=auth(settings, "u_seller", "resident"))
    ).json()
    assert {i["kind"] for i in seller_view["items"]} == {"blue", "red"}


async def test_retry_a_blocked_invoice_once_the_consent_arrives(aiohttp_client, settings):
    platform, client = await _setup(aiohttp_client, settings)
    publish(platform, *seller_events(settings, "u_new", consent=False))
    ev = settled("u_new", "fm_a", 500_000, on=NOV)
    publish(platform, ev)
    acc = accountant(settings, "fm_a")
    (blocked,) = (await (await client.get("/v1/invoices?status=blocked", headers=acc)).json())["items"]
    assert (blocked["blocked_reason"], blocked["number"], blocked["withheld_fen"]) == (
        "consent_missing",
        None,
        0,
    )
    assert blocked["lines"][0]["amount_fen"] == 500_000
    r = await client.post(f"/v1/invoices/{blocked['id']}/retry", headers=acc)
    assert r.status == 422 and (await r.json())["reason"] == "consent_missing"
    assert (
        await client.post(f"/v1/invoices/{blocked['id']}/retry", headers=auth(settings, "u_new", "resident"))
    ).status == 403
    assert (
        await client.post(f"/v1/invoices/{blocked['id']}/retry", headers=accountant(settings, "fm_b", "u_b"))
    ).status == 403
    publish(platform, *seller_events(settings, "u_new", verified=False))
    r = await client.post(f"/v1/invoices/{blocked['id']}/retry", headers=auth(settings, "u_admin", "admin"))
    assert r.status == 200, await r.text()
    issued = await r.json()
    assert (issued["id"], issued["status"], issued["retried"]) == (blocked["id"], "issued", True)
    assert [a["outcome"] for a in issued["attempts"]] == ["blocked", "blocked", "issued"]
    r = await client.post(f"/v1/invoices/{blocked['id']}/retry", headers=acc)
    assert r.status == 409 and (await r.json())["current_state"] == "issued"


async def test_lists_page_with_a_cursor(aiohttp_client, sqlite_settings):
    platform, client = await _setup(aiohttp_client, sqlite_settings)
    publish(platform, *(settled("u_seller", "fm_a", 100_000 + k, on=NOV) for k in range(5)))
    acc = accountant(sqlite_settings, "fm_a")
    seen, cursor = [], None
    while True:
        url = "/v1/invoices?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=acc)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5


async def test_cap_ledger_and_annual_statement(aiohttp_client, settings):
    platform, client = await _setup(aiohttp_client, settings)
    publish(
        platform,
        settled("u_seller", "fm_a", 50_399_000, on=date(2026, 3, 10)),
        settled("u_seller", "fm_b", 2_000_000, on=NOV),
        settled("u_seller", "fm_a", 1_000_000, on=NOV),
    )
    seller = auth(settings, "u_seller", "resident")
    r = await client.get("/v1/sellers/u_seller/cap-ledger?on=2026-11-30", headers=seller)
    ledger = await r.json()
    assert r.status == 200 and ledger["cap_fen"] == 500_000_000 and len(ledger["ledger"]) == 12
    assert ledger["total_sales_excl_fen"] == 49_900_000 + 2_000_000 + 1_000_000
    assert ledger["remaining_fen"] == 500_000_000 - ledger["total_sales_excl_fen"]
    statement = await (
        await client.get("/v1/sellers/u_seller/annual-statement?year=2026", headers=seller)
    ).json()
    assert statement["scope"] == "all_issuers" and statement["invoices_blue"] == 3
    assert statement["total_fen"] == 53_399_000 and statement["filing_due"] == "2027-03-31"
    assert statement["iit_fen"] == 249_500 + 5_000 + 2_500  # March 0.5%; November 0.25% (three flows)
    assert {i["firm_id"] for i in statement["issuers"]} == {"fm_a", "fm_b"}
    # the accountant of fm_a sees the cap (all issuers) and only fm_a's part of the statement
    acc = accountant(settings, "fm_a")
    assert (await client.get("/v1/sellers/u_seller/cap-ledger", headers=acc)).status == 200
    part = await (await client.get("/v1/sellers/u_seller/annual-statement?year=2026", headers=acc)).json()
    assert part["scope"] == "your_firms" and {i["firm_id"] for i in part["issuers"]} == {"fm_a"}
    # others may not look
    for headers in (auth(settings, "u_other", "resident"), accountant(settings, "fm_zz", "u_zz")):
        assert (await client.get("/v1/sellers/u_seller/cap-ledger", headers=headers)).status == 403
        assert (
            await client.get("/v1/sellers/u_seller/annual-statement?year=2026", headers=headers)
        ).status == 403


async def test_recording_unpaid_tax_suspends_the_issuer_until_paid(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    platform, client = await _setup(aiohttp_client, settings)
    acc = accountant(settings, "fm_a")
    body = {"firm_id": "fm_a", "period": "2025-01", "amount_fen": 123_456, "note": "逾期未缴"}
    assert (
        await client.post(
            "/v1/admin/invoicing/tax-unpaid", json=body, headers=accountant(settings, "fm_b", "u_b")
        )
    ).status == 403
    assert (
        await client.post(
            "/v1/admin/invoicing/tax-unpaid", json=body, headers=auth(settings, "u_seller", "resident")
        )
    ).status == 403
    assert (
        await client.post("/v1/admin/invoicing/tax-unpaid", json=body | {"period": "2025-1"}, headers=acc)
    ).status == 400
    r = await client.post("/v1/admin/invoicing/tax-unpaid", json=body, headers=acc)
    assert r.status == 201, await r.text()
    status = await r.json()
    assert status["suspended"] is True and status["tax_periods"][0]["filing_deadline"] == "2025-02-15"
    ev = settled("u_seller", "fm_a", 500_000, on=date.today())
    publish(platform, ev)
    (inv,) = (await (await client.get("/v1/invoices", headers=acc)).json())["items"]
    assert inv["blocked_reason"] == "issuer_suspended"
    r = await client.post(
        "/v1/admin/invoicing/tax-unpaid",
        json=body | {"status": "paid"},
        headers=auth(settings, "u_admin", "admin"),
    )
    assert r.status == 201 and (await r.json())["suspended"] is False
    issuer = await (await client.get("/v1/admin/invoicing/issuers/fm_a", headers=acc)).json()
    assert (
        issuer["verified"] and issuer["qualified"] and not issuer["suspended"] and issuer["issuer_code"] >= 1
    )
    r = await client.post(f"/v1/invoices/{inv['id']}/retry", headers=acc)
    assert r.status == 200 and (await r.json())["status"] == "issued"
