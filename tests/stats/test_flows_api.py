"""Flows and carbon through the gateway: figures by region (county → city → province), category and period,
distinct counts over the period asked, the onward flow of trades, and who may read what."""

from __future__ import annotations

from datetime import date

import pytest

from services.stats.replies import CarbonOut, FactorsOut, FlowsOut, MyCarbonOut, PickupCarbonOut

from .support import app_client, firm_owner, publish, regulator, resident, settled, trade

NOV3, NOV4, DEC1 = date(2026, 11, 3), date(2026, 11, 4), date(2026, 12, 1)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


async def _seeded(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    publish(
        platform,
        # 朝阳区 (110105), firm a: u1 twice on two days, u2 once; 海淀区 (110108), firm b; 深圳南山 (440305)
        settled(
            resident="u1",
            firm="fm_a",
            collector="cl_1",
            lines=[("metal.steel", "100.000", 20_000), ("glass.mixed", "50.000", 0)],
            on=NOV3,
        ),
        settled(
            resident="u1", firm="fm_a", collector="cl_2", lines=[("metal.steel", "10.500", 2_100)], on=NOV4
        ),
        settled(
            resident="u2", firm="fm_a", collector="cl_1", lines=[("appliance.fridge", "2", 10_000)], on=NOV4
        ),
        settled(
            resident="u3",
            firm="fm_b",
            collector="cl_9",
            city_code="110108",
            lines=[("paper.cardboard", "40.000", 5_600)],
            on=NOV4,
        ),
        settled(
            resident="u4",
            firm="fm_c",
            collector="cl_5",
            city_code="440305",
            lines=[("metal.steel", "1.000", 200)],
            on=NOV4,
        ),
        # 23:30 on 30 Nov in Shanghai is a November figure (15:30 UTC)
        settled(
            resident="u1",
            firm="fm_a",
            collector="cl_1",
            lines=[("metal.steel", "1.000", 200)],
            on=date(2026, 11, 30),
            hour=23,
            minute=30,
        ),
        settled(resident="u1", firm="fm_a", collector="cl_1", lines=[("metal.steel", "2.000", 400)], on=DEC1),
        *trade(
            seller="fm_a",
            buyer="fm_b",
            category="metal.steel",
            qty_t="0.100",
            delivered_t="0.098",
            price_fen_per_t=200_000,
            on=NOV4,
        ),
    )
    return platform, client


async def test_a_month_of_a_city_rolls_up_its_districts(aiohttp_client, settings):
    _, client = await _seeded(aiohttp_client, settings)
    r = await client.get(
        "/v1/stats/flows?region=110100&from=2026-11-01&to=2026-11-30&granularity=month",
        headers=regulator(settings),
    )
    assert r.status == 200, await r.text()
    body = await r.json()
    FlowsOut.model_validate(body)
    (nov,) = body["items"]
    assert body["region"] == {"code": "110100", "name": "市辖区", "level": "city"}
    # steel 100 + 10.5 + 1 (30 Nov, 23:30) kg, glass 50 kg, fridge 2 × 55 kg (estimated), cardboard 40 kg
    assert nov["collected_t"] == "0.311500" and nov["estimated_t"] == "0.110000"
    assert nov["value_fen"] == 20_000 + 2_100 + 10_000 + 5_600 + 200
    assert (nov["pickups"], nov["residents"], nov["collectors"]) == (5, 3, 3)
    assert nov["low_value_t"] == "0.050000" and nov["low_value_share"] == "0.1605"  # 50 / 311.5
    assert (nov["traded_t"], nov["traded_value_fen"], nov["trades"]) == ("0.098000", 19_600, 1)
    steel = next(c for c in nov["by_category"] if c["category"] == "metal.steel")
    assert (steel["collected_t"], steel["residents"], steel["collectors"], steel["pickups"]) == (
        "0.111500",
        1,
        2,
        3,
    )
    assert body["totals"]["collected_t"] == nov["collected_t"]


async def test_days_count_distinct_members_per_day_and_a_county_is_only_itself(aiohttp_client, settings):
    _, client = await _seeded(aiohttp_client, settings)
    r = await client.get(
        "/v1/stats/flows?region=110105&from=2026-11-03&to=2026-11-04", headers=regulator(settings)
    )
    body = await r.json()
    d3, d4 = body["items"]
    assert (d3["period"], d3["collected_t"], d3["residents"]) == ("2026-11-03", "0.150000", 1)
    assert (d4["period"], d4["collected_t"], d4["residents"], d4["collectors"]) == (
        "2026-11-04",
        "0.120500",
        2,
        2,
    )
    # u1 on both days is one resident of the window
    assert body["totals"]["residents"] == 2 and body["totals"]["pickups"] == 3
    province = await (
        await client.get(
            "/v1/stats/flows?region=440000&from=2026-11-01&to=2026-11-30&granularity=month&category=metal",
            headers=regulator(settings),
        )
    ).json()
    assert province["items"][0]["collected_t"] == "0.001000"


async def test_carbon_counts_collection_once_and_names_each_factor(aiohttp_client, settings):
    _, client = await _seeded(aiohttp_client, settings)
    r = await client.get(
        "/v1/stats/carbon?region=110105&from=2026-11-01&to=2026-11-30&granularity=month&category=metal.steel",
        headers=regulator(settings),
    )
    body = await r.json()
    CarbonOut.model_validate(body)
    (nov,) = body["items"]
    # 111.5 kg steel × 1.6 = 178.4 kg CO2e; the 98 kg traded onwards carry 156.8 kg embodied, not added
    assert nov["avoided_co2e_kg"] == "178.400" and nov["traded_co2e_t"] == "0.156800"
    assert nov["by_category"][0]["factor"]["source"] == "camu_steel"
    assert body["factors_version"]


async def test_a_firm_reads_its_own_figures_and_nobody_elses(aiohttp_client, settings):
    _, client = await _seeded(aiohttp_client, settings)
    q = "/v1/stats/flows?from=2026-11-01&to=2026-11-30&granularity=month"
    own = await (await client.get(q, headers=firm_owner(settings, "fm_b"))).json()
    FlowsOut.model_validate(own)
    assert own["scope"] == {"kind": "firm", "firm_id": "fm_b"}
    assert own["items"][0]["collected_t"] == "0.040000" and own["items"][0]["traded_t"] == "0.000000"
    r = await client.get(q + "&scope=firm&firm_id=fm_a", headers=firm_owner(settings, "fm_b"))
    assert r.status == 403
    r = await client.get(q + "&scope=all", headers=firm_owner(settings, "fm_b"))
    assert r.status == 403 and (await r.json())["reason"] == "scope_not_allowed"
    # the buyer sees what it bought, embodied
    carbon = await (
        await client.get(
            "/v1/stats/carbon?from=2026-11-01&to=2026-11-30&granularity=month",
            headers=firm_owner(settings, "fm_b"),
        )
    ).json()
    CarbonOut.model_validate(carbon)
    assert carbon["items"][0]["bought_t"] == "0.098000" and carbon["items"][0]["bought_co2e_t"] == "0.156800"
    # a regulator may look at any one firm
    r = await client.get(q + "&scope=firm&firm_id=fm_a", headers=regulator(settings))
    assert (await r.json())["items"][0]["traded_t"] == "0.098000"


async def test_a_resident_reads_their_own_pickups_carbon_and_running_total(aiohttp_client, settings):
    platform, client = await _seeded(aiohttp_client, settings)
    mine = await (
        await client.get(
            "/v1/stats/carbon?from=2026-11-01&to=2026-12-31&granularity=month",
            headers=resident(settings, "u1"),
        )
    ).json()
    CarbonOut.model_validate(mine)
    assert mine["scope"] == {"kind": "mine"}
    nov, dec = mine["items"]
    # steel 111.5 kg × 1.6 + glass 50 kg × 0.31
    assert nov["avoided_co2e_kg"] == "193.900" and dec["avoided_co2e_kg"] == "3.200"
    r = await client.get("/v1/stats/carbon?scope=all", headers=resident(settings, "u1"))
    assert r.status == 403
    me = await (await client.get("/v1/stats/carbon/me", headers=resident(settings, "u1"))).json()
    MyCarbonOut.model_validate(me)
    assert (me["pickups"], me["avoided_co2e_kg"]) == (4, "197.100")


async def test_one_pickups_carbon_is_shown_to_its_resident_only(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    first = settled(resident="u1", firm="fm_a", lines=[("metal.steel", "10.000", 2_000)], on=NOV3)
    ev = settled(
        resident="u1",
        firm="fm_a",
        lines=[("metal.aluminium", "2.000", 2_000), ("electronics.phone", "1", 1_000)],
        on=NOV4,
    )
    publish(platform, first, ev)
    r = await client.get(f"/v1/stats/carbon/pickups/{ev.pickup_id}", headers=resident(settings, "u1"))
    assert r.status == 200, await r.text()
    body = await r.json()
    PickupCarbonOut.model_validate(body)
    # aluminium 2 kg × 10.06; one phone of 0.18 kg (an estimated mass) × 0.87
    assert [
        (ln["category"], ln["mass_kg"], ln["mass_estimated"], ln["avoided_co2e_kg"]) for ln in body["lines"]
    ] == [("electronics.phone", "0.180", True, "0.157"), ("metal.aluminium", "2.000", False, "20.120")]
    assert body["avoided_co2e_kg"] == "20.277"
    assert body["running_total"] == body["running_total"] | {"pickups": 2, "avoided_co2e_kg": "36.277"}
    assert body["lines"][0]["factor"]["status"] == "estimate"
    assert (
        await client.get(f"/v1/stats/carbon/pickups/{ev.pickup_id}", headers=resident(settings, "u2"))
    ).status == 403
    assert (
        await client.get(f"/v1/stats/carbon/pickups/{ev.pickup_id}", headers=firm_owner(settings, "fm_a"))
    ).status == 200
    assert (
        await client.get("/v1/stats/carbon/pickups/pk_nope", headers=resident(settings, "u1"))
    ).status == 404


async def test_bad_queries_name_the_field(aiohttp_client, settings):
    _, client = await app_client(aiohttp_client, settings)
    h = regulator(settings)
    for query, field in (
        ("region=123", "region"),
        ("region=999999", "region"),
        ("category=metal.gold", "category"),
        ("from=2026-11-05&to=2026-11-01", "from"),
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        # a regulator asking for two regions at once was answered for the first alone
        ("region=320200&region=440000", "region"),
        ("granularity=day&granularity=month", "granularity"),
    ):
        r = await client.get(f"/v1/stats/flows?{query}", headers=h)
        assert r.status == 400, query
        body = await r.json()
        assert r.content_type == "application/problem+json"
        assert field in [e["field"] for e in body["errors"]], (query, body)
    assert (await client.get("/v1/stats/flows")).status == 401


async def test_a_redelivered_event_counts_once(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    ev = settled(resident="u1", firm="fm_a", lines=[("metal.steel", "10.000", 2_000)], on=NOV3)
    publish(platform, ev, ev)  # the same fact under two envelope ids: the pickup row makes it count once
    awarded, done = trade(
        seller="fm_a", buyer="fm_b", category="metal.steel", qty_t="1.000", price_fen_per_t=100, on=NOV3
    )
    publish(platform, done, awarded, done)  # settled first, the award late, the settlement again
    body = await (
        await client.get("/v1/stats/flows?from=2026-11-03&to=2026-11-03", headers=regulator(settings))
    ).json()
    assert body["items"][0]["collected_t"] == "0.010000" and body["items"][0]["trades"] == 1
    assert body["items"][0]["traded_t"] == "1.000000"


async def test_the_factor_table_is_public_and_names_every_source(aiohttp_client, settings):
    _, client = await app_client(aiohttp_client, settings)
    r = await client.get("/v1/stats/factors")
    assert r.status == 200
    body = FactorsOut.model_validate(await r.json())
    keys = {s.key for s in body.sources}
    assert all(f.source in keys for f in body.factors) and len(body.factors) == 17
    tv = next(f for f in body.factors if f.category == "appliance.tv")
    assert (tv.status, tv.piece_mass_kg) == ("estimate", "15")
