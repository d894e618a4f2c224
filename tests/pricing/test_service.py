"""The pricing service on its public API: inputs from settled pickups (through the bus) and firms' reports, the
daily computation, quotes with fallbacks, restatements with notices, and booking's copy of the prices.

Given/when/then on one Beijing scenario (day D = two days ago, Shanghai time):

- 朝阳区 (110105), 废钢: four settled pickups bought by firms a, b, c (200, 202, 204, 198 fen/kg, 100 kg each), one
  collector buying from their own resident account (150, related party), firm d's documented trade (206, a
  verified deal) and firm e's quote (300). Four transactions miss the quorum of five, so the verified deal is
  added: value = (200 + 202 + 204 + 198 + 206) / 5 = 202; the quote is disclosed as "lower tier not needed".
- 海淀区 (110108), 废钢: two transactions (210, 212) by firms b and f: below quorum, so the city is published
  with Beijing's value, flagged stale. Beijing (110000) has six transactions from four firms:
  (200 + 202 + 204 + 198 + 210 + 212) / 6 = 204.33 → 204; national is the same.
- 废铜: one pickup line only: insufficient data everywhere; quotes fall back to the seeded reference price.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from services.booking.prices import current_price
from services.pricing.handlers import run_daily
from services.pricing.settings import settings_of
from services.pricing.store import restatement_queue

from .support import (
    CITY,
    CITY2,
    OTHER_CITY,
    PROVINCE,
    admin,
    app_client,
    at,
    day_ago,
    firm,
    observation,
    outbox_events,
    publish,
    settled,
    today,
)

STEEL = "metal.steel"


async def _given_day_d(platform, client, settings):  # noqa: ANN001, ANN202
    d = day_ago(2)
    publish(
        platform,
        settled(firm_id="fm_a", day=d, lines=[(STEEL, "100", 200), ("glass.mixed", "30", 0)]),
        settled(firm_id="fm_a", day=d, lines=[(STEEL, "100", 202)]),
        settled(firm_id="fm_b", day=d, lines=[(STEEL, "100", 204)]),
        settled(firm_id="fm_c", day=d, lines=[(STEEL, "100", 198), ("metal.copper", "2", 4600)]),
        settled(
            firm_id="fm_c",
            day=d,
            lines=[(STEEL, "100", 150)],
            resident_id="us_self",
            collector_user_id="us_self",
        ),
        settled(firm_id="fm_b", day=d, lines=[(STEEL, "100", 210)], city_code=CITY2),
        settled(firm_id="fm_f", day=d, lines=[(STEEL, "100", 212)], city_code=CITY2),
    )
    r = await client.post(
        "/v1/prices/observations", json=observation(day=d, price=206), headers=firm(settings, "fm_d")
    )
    assert r.status == 201, await r.text()
    trade = await r.json()
    assert trade["tier"] == "verified_deal" and trade["day"] == d.isoformat() and not trade["related_party"]
    r = await client.post(
        "/v1/prices/observations",
        json=observation(day=d, price=300, kind="quote"),
        headers=firm(settings, "fm_e"),
    )
    assert r.status == 201 and (await r.json())["tier"] == "quote"
    return d


async def _compute(client, settings, day, reason=None):  # noqa: ANN001, ANN202
    body = {"date": day.isoformat()} | ({"reason": reason} if reason else {})
    r = await client.post("/v1/admin/prices/compute", json=body, headers=admin(settings))
    assert r.status == 200, await r.text()
    return await r.json()


def _series(reply: dict, code: str, region: str) -> dict:
    return next(s for s in reply["series"] if s["code"] == code and s["region"] == region)


async def _flow(aiohttp_client, settings) -> None:  # noqa: ANN001
    platform, client = await app_client(aiohttp_client, settings)
    d = await _given_day_d(platform, client, settings)

    # when: the daily computation runs for D (on demand)
    reply = await _compute(client, settings, d)

    # then: the series of D, with fallbacks and insufficient data
    assert reply["date"] == d.isoformat() and reply["methodology_version"] == "2026.1"
    assert reply["n_observations"] == 10  # 7 steel + 1 copper from pickups (glass skipped), 2 from firms
    city = _series(reply, STEEL, CITY)
    assert (city["value"], city["unit_price_fen"], city["status"], city["stale"], city["n_obs"]) == (
        "202",
        202,
        "published",
        False,
        5,
    )
    hd = _series(reply, STEEL, CITY2)
    assert (hd["value"], hd["status"], hd["stale"], hd["source_region"], hd["n_obs"]) == (
        "204",
        "fallback",
        True,
        PROVINCE,
        2,
    )
    assert _series(reply, STEEL, PROVINCE)["value"] == "204"
    assert _series(reply, STEEL, "000000")["value"] == "204"
    copper = _series(reply, "metal.copper", "000000")
    assert copper["value"] is None and copper["status"] == "insufficient_data"
    assert not any(s["code"] == "glass.mixed" for s in reply["series"])  # a 0 paid by booking is no price
    steel_index = _series(reply, "steel", "000000")
    assert steel_index["kind"] == "index" and steel_index["value"] == "102.00"  # 100 × 204 / 200 (base price)
    assert all(s["new_version"] and s["version"] == 1 for s in reply["series"])

    # the disclosure says what was excluded and why, never who
    r = await client.get(
        "/v1/prices/disclosure", params={"code": STEEL, "region": CITY, "date": d.isoformat()}
    )
    assert r.status == 200
    disc = await r.json()
    assert disc["excluded_by_reason"] == {"lower_tier_not_needed": 1, "related_party": 1}
    assert disc["disclosure"]["tiers_used"] == ["transaction", "verified_deal"]
    assert disc["disclosure"]["counterparties"] == 4 and disc["disclosure"]["volume"] == "500.000"
    assert disc["disclosure"]["band_fen"] == {"median": "202", "low": "191.9", "high": "212.1"}

    # IndexPublished for every series, through the outbox; booking keeps its copy from them
    published = outbox_events(platform, "pricing", "index.published.v1")
    computed = [e for e in published if not e["reference"]]
    assert len(computed) == len(reply["series"])
    ev = next(e for e in computed if e["series_key"] == f"{STEEL}@{CITY}")
    assert (ev["value"], ev["unit_price_fen"], ev["version"], ev["n_obs"], ev["n_excluded"]) == (
        "202",
        202,
        1,
        5,
        2,
    )
    platform.drain()
    with platform["booking"].db.session() as s:
        q = current_price(s, STEEL, CITY)
        assert (q.unit_price_fen, q.stale, q.as_of) == (202, False, d)
        q = current_price(s, STEEL, CITY2)
        assert (q.unit_price_fen, q.stale) == (204, True)

    # quotes: own value, the province's (stale), national (stale), the reference price as the last resort
    async def quote(category: str, city: str) -> dict:
        r = await client.get("/v1/prices/quote", params={"category": category, "city_code": city})
        assert r.status == 200, await r.text()
        return await r.json()

    q = await quote(STEEL, CITY)
    assert (q["unit_price_fen"], q["as_of"], q["source_region"], q["stale"], q["reference"]) == (
        202,
        d.isoformat(),
        CITY,
        False,
        False,
    )
    q = await quote(STEEL, CITY2)
    assert (q["unit_price_fen"], q["source_region"], q["stale"]) == (204, PROVINCE, True)
    q = await quote(STEEL, OTHER_CITY)
    assert (q["unit_price_fen"], q["source_region"], q["stale"]) == (204, "000000", True)
    q = await quote("metal.copper", CITY)
    assert (q["unit_price_fen"], q["source_region"], q["stale"], q["reference"], q["as_of"]) == (
        4500,
        "000000",
        True,
        True,
        "2026-01-01",
    )

    # when: a late, documented trade for D arrives (firm f, 212), and the daily job runs the next morning
    r = await client.post(
        "/v1/prices/observations", json=observation(day=d, price=212), headers=firm(settings, "fm_f")
    )
    assert r.status == 201
    with platform["pricing"].db.session() as s:
        assert s.execute(select(restatement_queue.c.day, restatement_queue.c.late_inputs)).all() == [(d, 1)]
    runs = run_daily(platform["pricing"], now=at(today(), 10))
    # the never-computed days of the catch-up horizon, the due day, then the restatement
    missed = [day_ago(n) for n in range(settings_of(platform["pricing"]).catchup_days, 2, -1)]
    assert [(r_["date"], r_["trigger"]) for r_ in runs] == [(x, "catch_up") for x in missed] + [
        (day_ago(1), "schedule"),
        (d, "schedule"),
    ]

    # then: a new version with a correction notice; the old version stays readable
    r = await client.get(
        "/v1/prices/indices",
        params={"code": STEEL, "region": CITY, "from": d.isoformat(), "to": d.isoformat()},
    )
    assert r.status == 200
    (item,) = (await r.json())["items"]
    # (200 + 202 + 204 + 198 + 206 + 212) / 6 = 203.67 → 204
    assert (item["date"], item["value"], item["version"], item["stale"], item["n_obs"]) == (
        d.isoformat(),
        "204",
        2,
        False,
        6,
    )
    r = await client.get("/v1/prices/indices", params={"code": STEEL, "region": CITY, "version": "1"})
    (old,) = (await r.json())["items"]
    assert (old["value"], old["version"], old["superseded"]) == ("202", 1, True)
    r = await client.get("/v1/prices/indices", params={"code": STEEL, "region": CITY, "all_versions": "true"})
    assert [(i["version"], i["value"], i["superseded"]) for i in (await r.json())["items"]] == [
        (1, "202", True),
        (2, "204", False),
    ]
    r = await client.get("/v1/prices/notices", params={"code": STEEL, "region": CITY})
    (notice,) = (await r.json())["items"]
    assert (
        notice["date"],
        notice["old_version"],
        notice["new_version"],
        notice["old_value"],
        notice["new_value"],
    ) == (d.isoformat(), 1, 2, "202", "204")
    assert "late data: +1 input(s)" in notice["reason"]
    ev = [
        e
        for e in outbox_events(platform, "pricing", "index.published.v1")
        if e["series_key"] == f"{STEEL}@{CITY}" and e["version"] == 2
    ]
    assert ev and ev[0]["restates_version"] == 1 and ev[0]["previous_value"] == "202"
    platform.drain()
    with platform["booking"].db.session() as s:
        assert current_price(s, STEEL, CITY).unit_price_fen == 204

    # recomputing an unchanged day publishes nothing
    again = await _compute(client, settings, d)
    assert again["n_new_versions"] == 0 and _series(again, STEEL, CITY)["version"] == 2

    # every input was announced (without its contributor)
    recorded = outbox_events(platform, "pricing", "observation.recorded.v1")
    assert len(recorded) == 11 and {e["input_source"] for e in recorded} == {"booking.pickup", "api"}

    # no output names a contributor (firm ids, residents, collectors)
    texts = [json.dumps(reply), json.dumps(again), json.dumps(published), json.dumps(recorded)]
    for path, params in (
        ("/v1/prices/indices", {"code": STEEL, "region": CITY, "all_versions": "true"}),
        ("/v1/prices/notices", {}),
        ("/v1/prices/disclosure", {"code": STEEL, "region": CITY, "date": d.isoformat()}),
        ("/v1/prices/indices.csv", {"code": STEEL, "region": PROVINCE}),
    ):
        texts.append(await (await client.get(path, params=params)).text())
    texts.append(
        await (
            await client.get(
                "/v1/admin/prices/audit",
                params={"code": STEEL, "region": CITY, "date": d.isoformat()},
                headers=admin(settings),
            )
        ).text()
    )
    for text in texts:
        for secret in ("fm_a", "fm_b", "fm_c", "fm_d", "fm_e", "fm_f", "us_self", "firm:"):
            assert secret not in text


async def test_inputs_daily_values_quotes_and_restatements_sqlite(aiohttp_client, sqlite_settings):
    await _flow(aiohttp_client, sqlite_settings)


@pytest.mark.postgres
async def test_inputs_daily_values_quotes_and_restatements_postgres(aiohttp_client, pg_settings):
    await _flow(aiohttp_client, pg_settings)


async def test_a_redelivered_settlement_records_nothing_twice(aiohttp_client, sqlite_settings):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    d = day_ago(3)
    ev = settled(firm_id="fm_a", day=d, lines=[(STEEL, "100", 200)])
    publish(platform, ev)
    publish(platform, ev)  # a new envelope of the same settlement (e.g. re-published by an operator)
    reply = await _compute(client, sqlite_settings, d)
    assert reply["n_observations"] == 1


async def test_an_input_from_a_settlement_names_the_event_it_came_from(aiohttp_client, sqlite_settings):
    """The consumer hands its handler the typed event; the event's id still reaches the input as provenance."""
    from services.kernel.bus.port import Record
    from services.kernel.events import Envelope
    from services.pricing.store import observations

    platform, _ = await app_client(aiohttp_client, sqlite_settings)
    env = Envelope.wrap(settled(firm_id="fm_a", day=day_ago(3), lines=[(STEEL, "100", 200)]))
    platform.bus.publish([Record(topic="booking.pickup", key=env.subject, value=env.to_bytes())])
    platform.drain()
    with platform["pricing"].db.session(readonly=True) as s:
        assert s.execute(select(observations.c.source_event_id)).scalars().all() == [env.id]
