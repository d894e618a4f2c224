"""Rebuilding from the event log: replaying booking.pickup and trading.trade from offset 0 gives exactly the
tables and the figures the live consumer groups built (same handlers, facts idempotent on their own ids), also
from the CLI; a new factor table restates the carbon; a log that lost its start is refused."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from services.booking.domain.events import PickupCancelled
from services.kernel.errors import RuleViolated
from services.stats.rebuild import rebuild
from services.stats.settings import configure
from services.stats.store import FACT_TABLES

from .support import app_client, platform_for, publish, regulator, settled, trade

NOV3, NOV20, DEC2 = date(2026, 11, 3), date(2026, 11, 20), date(2026, 12, 2)
QUERIES = [
    "/v1/stats/flows?from=2026-11-01&to=2026-12-31&granularity=month",
    "/v1/stats/flows?region=320000&from=2026-11-01&to=2026-12-31",
    "/v1/stats/carbon?from=2026-11-01&to=2026-12-31&granularity=month",
    "/v1/stats/carbon?region=110105&from=2026-11-01&to=2026-12-31&category=metal",
]


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


def history() -> list:
    pickup = settled(resident="u1", firm="fm_a", lines=[("metal.steel", "12.345", 2_469)], on=NOV3)
    awarded, done = trade(
        seller="fm_a",
        buyer="fm_b",
        category="metal.steel",
        qty_t="5.000",
        delivered_t="4.950",
        price_fen_per_t=210_000,
        on=NOV20,
        city_code="320214",
    )
    lonely_award, _ = trade(
        seller="fm_b",
        buyer="fm_a",
        category="paper.cardboard",
        qty_t="1.000",
        price_fen_per_t=1_500,
        on=NOV20,
    )
    return [
        pickup,
        pickup,  # a redelivered fact
        settled(
            resident="u2",
            firm="fm_a",
            collector="cl_2",
            city_code="320214",
            lines=[("paper.cardboard", "30.000", 4_200), ("appliance.tv", "1", 2_000)],
            on=NOV20,
        ),
        settled(
            resident="u3",
            firm="fm_b",
            collector="cl_3",
            city_code="320205",
            lines=[("lowvalue.mixed", "8.000", 160), ("plastic.pet", "3.500", 875)],
            on=NOV20,
            hour=23,
        ),
        settled(resident="u1", firm="fm_a", lines=[("metal.aluminium", "2.000", 2_000)], on=DEC2),
        PickupCancelled(
            pickup_id="pk_other",
            by="resident",
            previous_status="requested",
            geohash="wx4g0ec",
            cancelled_at=datetime(2026, 11, 3, 1, 0),
        ),  # same topic, a type stats ignores
        done,
        awarded,
        lonely_award,
    ]


def snapshot(db) -> dict:
    out = {}
    with db.session(readonly=True) as s:
        for t in FACT_TABLES:
            cols = [c for c in t.c if c.name != "recorded_at"]
            out[t.name] = sorted(tuple(str(v) for v in row) for row in s.execute(select(*cols)).all())
    return out


async def replies(client, settings) -> list:
    return [await (await client.get(q, headers=regulator(settings))).json() for q in QUERIES]


async def test_replay_from_offset_zero_gives_the_live_figures(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    publish(platform, *history())
    rt = platform["stats"]
    live_tables, live_replies = snapshot(rt.db), await replies(client, settings)
    assert live_tables["pickups"] and live_tables["trades"]
    assert live_replies[0]["items"][0]["collected_t"] != "0.000000"

    progress = []
    result = rebuild(
        rt.db,
        platform.bus,
        [r.spec for r in rt.runners],
        batch=3,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert result.handled == 8 and result.skipped == 1
    assert progress[0] == (0, 9) and progress[-1] == (9, 9)
    assert snapshot(rt.db) == live_tables
    assert await replies(client, settings) == live_replies
    # and again: a rebuild of a rebuild changes nothing
    rebuild(rt.db, platform.bus, [r.spec for r in rt.runners])
    assert snapshot(rt.db) == live_tables


def test_the_cli_rebuilds_with_progress_and_a_new_factor_table_restates_carbon(sqlite_settings, tmp_path):
    from services.stats.cli import cli

    platform = platform_for(sqlite_settings)
    publish(platform, *history())
    live = snapshot(platform["stats"].db)
    platform.stop()
    env = {
        "ENV": "test",
        "DATA_DIR": str(sqlite_settings.data_dir),
        "PII_KEY": sqlite_settings.pii_key,
        "JWT_SECRET": sqlite_settings.jwt_secret,
        "BUS": "dblog",
    }
    result = CliRunner().invoke(cli, ["rebuild"], env=env)
    assert result.exit_code == 0, result.output
    assert "9 records read, 8 counted, 1 of other types" in result.output

    platform = platform_for(sqlite_settings)
    assert snapshot(platform["stats"].db) == live
    # steel doubled: every steel figure's CO2e doubles after the rebuild, nothing else moves
    from services.stats.settings import HERE

    text = (HERE / "carbon_factors.toml").read_text(encoding="utf-8")
    doubled = text.replace('t_co2e_per_t = "1.6"', 't_co2e_per_t = "3.2"').replace(
        'version = "', 'version = "test-doubled-steel-'
    )
    path = tmp_path / "factors.toml"
    path.write_text(doubled, encoding="utf-8")
    rt = platform["stats"]
    configure(rt, factors_file=str(path))
    rt.runners.clear()
    rt.runners.extend(_runners(rt))
    rebuild(rt.db, platform.bus, [r.spec for r in rt.runners])
    after = snapshot(rt.db)
    assert after["pickup_lines"] != live["pickup_lines"]
    with rt.db.session(readonly=True) as s:
        from services.stats.store import pickup_lines

        steel = s.execute(
            select(pickup_lines.c.co2e_g).where(pickup_lines.c.category == "metal.steel")
        ).scalar()
    assert steel == 39_504  # 12.345 kg × 3.2
    platform.stop()


def _runners(rt):
    from services.kernel.consumer import ConsumerRunner
    from services.stats.consumers import consumers

    return [ConsumerRunner(c, rt.db, rt.bus) for c in consumers(rt)]


def test_a_log_that_lost_its_start_is_refused(sqlite_settings):
    platform = platform_for(sqlite_settings)
    publish(platform, *history())
    rt = platform["stats"]
    before = snapshot(rt.db)
    # as retention would: the first record of every booking.pickup partition is gone
    from sqlalchemy import delete

    from services.kernel.bus.dblog import log_t

    with platform.bus.db.engine.begin() as conn:
        conn.execute(delete(log_t).where(log_t.c.topic == "booking.pickup", log_t.c.offset == 0))
    with pytest.raises(RuleViolated) as err:
        rebuild(rt.db, platform.bus, [r.spec for r in rt.runners])
    assert err.value.extra["reason"] == "log_truncated"
    assert snapshot(rt.db) == before  # refused before touching anything
    platform.stop()
