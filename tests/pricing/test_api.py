"""Pricing API rules: bad input names the field, roles, the methodology page, history reads, CSV, the audit view."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest

from services.pricing.domain.methodology import load_methodology, render_methodology_markdown

from .support import CITY, admin, app_client, auth, day_ago, firm, observation, publish, settled, today

ROOT = Path(__file__).resolve().parents[2]
STEEL = "metal.steel"


@pytest.fixture
async def api(aiohttp_client, sqlite_settings):  # noqa: ANN001, ANN201
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    return platform, client, sqlite_settings


def _fields(problem: dict) -> set[str]:
    return {e["field"] for e in problem.get("errors", [])}


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"unit_price_fen": "200"}, "unit_price_fen"),
        ({"unit_price_fen": -1}, "unit_price_fen"),
        ({"unit_price_fen": 2.5}, "unit_price_fen"),
        ({"qty": "0"}, "qty"),
        ({"qty": "1.2345"}, "qty"),
        ({"qty": "lots"}, "qty"),
        ({"city_code": "999999"}, "city_code"),
        ({"city_code": "000000"}, "city_code"),
        ({"category": "metal.gold"}, "category"),
        ({"kind": "ask"}, "kind"),
        ({"observed_at": "2026-11-20T09:00:00"}, "observed_at"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_malformed_observations_are_400_naming_the_field(api, change, field) -> None:  # noqa: ANN001
    _, client, settings = api
    r = await client.post(
        "/v1/prices/observations",
        json=observation(day=day_ago(1), price=200) | change,
        headers=firm(settings, "fm_a"),
    )
    assert r.status == 400 and r.content_type == "application/problem+json"
    problem = await r.json()
    assert field in _fields(problem), problem


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (lambda: observation(day=day_ago(40), price=200), "too_late", "observed_at"),
        (
            lambda: observation(day=today() + __import__("datetime").timedelta(days=2), price=200),
            "observed_in_future",
            "observed_at",
        ),
        (
            lambda: observation("electronics.phone", day=day_ago(1), price=900),
            "category_not_indexed",
            "category",
        ),
    ],
)
async def test_rule_violations_are_422_naming_the_field(api, body, reason, field) -> None:  # noqa: ANN001
    _, client, settings = api
    r = await client.post("/v1/prices/observations", json=body(), headers=firm(settings, "fm_a"))
    assert r.status == 422, await r.text()
    problem = await r.json()
    assert problem["reason"] == reason and field in _fields(problem)


async def test_an_ask_cannot_come_in_as_evidence_of_a_quote(api) -> None:  # noqa: ANN001
    _, client, settings = api
    body = observation(day=day_ago(1), price=200, kind="quote") | {
        "evidence": {"kind": "invoice", "number": "N1"}
    }
    r = await client.post("/v1/prices/observations", json=body, headers=firm(settings, "fm_a"))
    assert r.status == 400


async def test_tiers_and_self_dealing_of_firm_reports(api) -> None:  # noqa: ANN001
    _, client, settings = api

    async def post(body: dict, headers: dict) -> dict:
        r = await client.post("/v1/prices/observations", json=body, headers=headers)
        assert r.status == 201, await r.text()
        return await r.json()

    d = day_ago(1)
    assert (await post(observation(day=d, price=200, evidence=False), firm(settings, "fm_a")))[
        "tier"
    ] == "quote"
    assert (await post(observation(day=d, price=200), firm(settings, "fm_a")))["tier"] == "verified_deal"
    # a firm reporting a deal with itself, or with another firm its reporter acts for
    own = await post(observation(day=d, price=200, counterparty_firm_id="fm_a"), firm(settings, "fm_a"))
    assert own["related_party"]
    two = auth(settings, "us_two", "firm", firms=("fm_x", "fm_y"))
    sister = await post(observation(day=d, price=200, firm_id="fm_x", counterparty_firm_id="fm_y"), two)
    assert sister["related_party"]
    arm = await post(observation(day=d, price=200, counterparty_firm_id="fm_z"), firm(settings, "fm_a"))
    assert not arm["related_party"]
    # acting for several firms: say which; not yours: 403
    r = await client.post("/v1/prices/observations", json=observation(day=d, price=200), headers=two)
    assert r.status == 400 and "firm_id" in _fields(await r.json())
    r = await client.post(
        "/v1/prices/observations",
        json=observation(day=d, price=200, firm_id="fm_q"),
        headers=firm(settings, "fm_a"),
    )
    assert r.status == 403


async def test_bad_queries_name_the_field(api) -> None:  # noqa: ANN001
    _, client, settings = api
    for path, params, field in (
        ("/v1/prices/quote", {"category": "metal.gold", "city_code": CITY}, "category"),
        ("/v1/prices/quote", {"category": STEEL, "city_code": "12345"}, "city_code"),
        ("/v1/prices/quote", {"category": STEEL}, "city_code"),
        ("/v1/prices/indices", {"code": "nope"}, "code"),
        ("/v1/prices/indices", {"code": STEEL, "region": "999999"}, "region"),
        ("/v1/prices/indices", {"code": STEEL, "from": "2026-02-02", "to": "2026-02-01"}, "body"),
        ("/v1/prices/indices", {"code": STEEL, "from": "yesterday"}, "from"),
        ("/v1/prices/indices", {"code": STEEL, "cursor": "x"}, "cursor"),
        ("/v1/prices/notices", {"region": "abc"}, "region"),
    ):
        r = await client.get(path, params=params)
        assert r.status == 400, (path, params, await r.text())
        assert field in _fields(await r.json()), (path, params)
    for day, reason in ((today(), "window_open"), ("2025-12-31", "before_methodology")):
        r = await client.post("/v1/admin/prices/compute", json={"date": str(day)}, headers=admin(settings))
        assert r.status == 422 and (await r.json())["reason"] == reason and "date" in _fields(await r.json())
    r = await client.post("/v1/admin/prices/compute", json={"date": "soon"}, headers=admin(settings))
    assert r.status == 400 and "date" in _fields(await r.json())


# --------------------------------------------------------------------------------------------- roles


async def test_writes_need_their_role_reads_are_public(api) -> None:  # noqa: ANN001
    _, client, settings = api
    body = observation(day=day_ago(1), price=200)
    assert (await client.post("/v1/prices/observations", json=body)).status == 401
    for role in ("resident", "collector", "admin", "accountant"):
        r = await client.post("/v1/prices/observations", json=body, headers=auth(settings, "us_x", role))
        assert r.status == 403, role
    assert (
        await client.post("/v1/prices/observations", json=body, headers=firm(settings, "fm_a"))
    ).status == 201

    compute = {"date": day_ago(1).isoformat()}
    assert (await client.post("/v1/admin/prices/compute", json=compute)).status == 401
    assert (
        await client.post("/v1/admin/prices/compute", json=compute, headers=firm(settings, "fm_a"))
    ).status == 403
    assert (
        await client.post("/v1/admin/prices/compute", json=compute, headers=admin(settings))
    ).status == 200
    audit = {"code": STEEL, "region": CITY, "date": day_ago(1).isoformat()}
    assert (await client.get("/v1/admin/prices/audit", params=audit)).status == 401
    assert (
        await client.get("/v1/admin/prices/audit", params=audit, headers=firm(settings, "fm_a"))
    ).status == 403

    for path, params in (
        ("/v1/prices/quote", {"category": STEEL, "city_code": CITY}),
        ("/v1/prices/indices", {"code": "all"}),
        ("/v1/prices/indices.csv", {"code": "all"}),
        ("/v1/prices/notices", {}),
        ("/v1/prices/methodology", {}),
    ):
        assert (await client.get(path, params=params)).status == 200, path


# --------------------------------------------------------------------------------------------- methodology


async def test_the_methodology_page_is_what_the_computation_uses(api) -> None:  # noqa: ANN001
    platform, client, settings = api
    m = load_methodology()
    r = await client.get("/v1/prices/methodology")
    assert r.status == 200 and r.content_type == "text/markdown"
    page = await r.text()
    assert page == render_methodology_markdown(m)
    assert f"methodology {m.version}" in page and r.headers["X-Methodology-Version"] == m.version
    assert f"max({m.outliers.k} × {m.outliers.mad_scale} × MAD, {m.outliers.min_band_pct} % × |m|)" in page
    assert f"at least **{m.min_observations}** observations" in page
    assert f"at least **{m.min_counterparties}** distinct counterparties" in page

    r = await client.get("/v1/prices/methodology", headers={"Accept": "application/json"})
    assert r.content_type == "application/json"
    cfg = await r.json()
    # the numbers the computation runs with are the page's numbers
    steel = m.series_config(STEEL)
    assert cfg["version"] == m.version == steel.methodology_version
    assert Decimal(cfg["outliers"]["k"]) == steel.outliers.k
    assert Decimal(cfg["outliers"]["min_band_pct"]) == steel.outliers.min_band_pct
    assert cfg["quorum"]["min_observations"] == steel.quorum.min_observations
    assert cfg["quorum"]["min_counterparties"] == steel.quorum.min_counterparties
    assert Decimal(cfg["quorum"]["min_volume"][STEEL]) == steel.quorum.min_volume
    assert list(cfg["inputs"]["tiers"]) == list(steel.tiers)

    # and every computed value names that version
    d = day_ago(1)
    for i, price in enumerate((200, 201, 202, 203, 204)):
        publish(platform, settled(firm_id=f"fm_{i % 3}", day=d, lines=[(STEEL, "100", price)]))
    reply = await (
        await client.post("/v1/admin/prices/compute", json={"date": d.isoformat()}, headers=admin(settings))
    ).json()
    assert reply["methodology_version"] == m.version
    r = await client.get(
        "/v1/prices/disclosure", params={"code": STEEL, "region": CITY, "date": d.isoformat()}
    )
    assert (await r.json())["methodology_version"] == m.version


def test_the_generated_methodology_document_is_current() -> None:
    doc = (ROOT / "docs" / "methodology.md").read_text(encoding="utf-8")
    assert doc.rstrip("\n") == render_methodology_markdown(load_methodology()).rstrip("\n"), (
        "run `recycle pricing methodology --out docs/methodology.md`"
    )


# --------------------------------------------------------------------------------------------- reads


async def test_insufficient_data_is_published_never_yesterdays_value(api) -> None:  # noqa: ANN001
    platform, client, settings = api
    d1, d2 = day_ago(3), day_ago(2)
    for i, price in enumerate((200, 201, 202, 203, 204)):
        publish(platform, settled(firm_id=f"fm_{i % 3}", day=d1, lines=[(STEEL, "100", price)]))
    publish(platform, settled(firm_id="fm_0", day=d2, lines=[(STEEL, "100", 300)]))
    for d in (d1, d2):
        assert (
            await client.post(
                "/v1/admin/prices/compute", json={"date": d.isoformat()}, headers=admin(settings)
            )
        ).status == 200
    r = await client.get("/v1/prices/indices", params={"code": STEEL, "region": CITY})
    items = (await r.json())["items"]
    assert [(i["date"], i["value"], i["status"], i["n_obs"]) for i in items] == [
        (d1.isoformat(), "202", "published", 5),
        (d2.isoformat(), None, "insufficient_data", 1),
    ]
    # the quote skips a region whose newest value is insufficient: the marked reference price answers
    q = await (await client.get("/v1/prices/quote", params={"category": STEEL, "city_code": CITY})).json()
    assert q["reference"] and q["stale"] and q["as_of"] == "2026-01-01"

    # CSV: the same history, every version
    r = await client.get(
        "/v1/prices/indices.csv", params={"code": STEEL, "region": CITY, "all_versions": "true"}
    )
    assert r.status == 200 and r.content_type == "text/csv"
    assert 'filename="metal.steel_110105.csv"' in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert [(x["date"], x["value"], x["version"], x["status"]) for x in rows] == [
        (d1.isoformat(), "202", "1", "published"),
        (d2.isoformat(), "", "1", "insufficient_data"),
    ]

    # paging: limit and cursor
    r = await client.get("/v1/prices/indices", params={"code": STEEL, "region": CITY, "limit": "1"})
    page = await r.json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    r = await client.get(
        "/v1/prices/indices",
        params={"code": STEEL, "region": CITY, "limit": "1", "cursor": page["next_cursor"]},
    )
    page2 = await r.json()
    assert [i["date"] for i in page2["items"]] == [d2.isoformat()] and page2["next_cursor"] is None

    # the admin's audit view reproduces the value from its inputs
    r = await client.get(
        "/v1/admin/prices/audit",
        params={"code": STEEL, "region": CITY, "date": d1.isoformat()},
        headers=admin(settings),
    )
    assert r.status == 200
    audit = await r.json()
    used = [i for i in audit["inputs"] if i["reason"] == "used"]
    assert len(used) == 5 and all(i["tier"] == "transaction" for i in used)
    total = sum(i["unit_price_fen"] * Decimal(i["qty"]) for i in used) / sum(Decimal(i["qty"]) for i in used)
    assert round(total) == 202
    assert not re.search(r"fm_\d", await r.text())


async def test_a_family_index_reads_like_a_series(api) -> None:  # noqa: ANN001
    platform, client, settings = api
    d = day_ago(2)
    for i, price in enumerate((300, 300, 300, 300, 300)):
        publish(platform, settled(firm_id=f"fm_{i % 3}", day=d, lines=[(STEEL, "100", price)]))
    await client.post("/v1/admin/prices/compute", json={"date": d.isoformat()}, headers=admin(settings))
    r = await client.get("/v1/prices/indices", params={"code": "steel"})
    (item,) = (await r.json())["items"]
    assert (item["kind"], item["value"], item["region"], item["n_obs"]) == ("index", "150.00", "000000", 5)
    r = await client.get("/v1/prices/disclosure", params={"code": "steel", "date": d.isoformat()})
    comp = (await r.json())["disclosure"]["components"]
    assert comp == {STEEL: {"date": d.isoformat(), "version": 1, "value_fen": 300}}
    r = await client.get("/v1/prices/indices", params={"code": "all"})
    (item,) = (await r.json())["items"]
    assert item["value"] is None and item["status"] == "insufficient_data"  # most components have no value
