"""The daily job's schedule and due days, the catch-up of days never computed, and the `recycle pricing` commands."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from services.bootstrap import Platform
from services.kernel.settings import get_settings
from services.pricing import tasks
from services.pricing.compute import due_days, missing_days
from services.pricing.domain.methodology import load_methodology
from services.pricing.handlers import catch_up, compute, run_daily
from services.pricing.settings import PricingSettings, configure, settings_of
from services.pricing.store import computation_runs, published_values, restatement_queue

from .support import CITY, at, day_ago, outbox_events, publish, settled, today

STEEL = "metal.steel"


def test_the_beat_schedule_runs_at_the_methodologys_publication_time() -> None:
    m = load_methodology()
    entry = tasks.SCHEDULE["pricing-daily-indices"]
    assert entry["task"] == tasks.compute_daily.name == "pricing.compute_daily"
    hour, minute = m.specification.publication_time.split(":")
    cron = entry["schedule"]
    assert cron.hour == {int(hour)} and cron.minute == {int(minute)}
    assert m.specification.timezone == tasks.CELERY_TIMEZONE
    catch_up = tasks.SCHEDULE["pricing-catch-up"]
    assert catch_up["task"] == tasks.catch_up.name == "pricing.catch_up"
    assert catch_up["schedule"] == PricingSettings().catchup_every_s == 300


def test_due_days_are_the_publication_day_then_late_data_within_the_window(sqlite_settings) -> None:  # noqa: ANN001
    m = load_methodology()
    rt = Platform(sqlite_settings, services=["pricing"]).prepare()["pricing"]
    now = at(today(), 10)
    late, too_old = day_ago(5), day_ago(m.late_data_days + 1)
    with rt.db.session() as s, s.begin():
        for d in (late, too_old):
            s.execute(insert(restatement_queue).values(day=d, late_inputs=1, first_at=now, last_at=now))
    assert due_days(rt.db, m, now) == [day_ago(1), late]
    # before the publication time the due day is still the day before's (already published yesterday)
    assert due_days(rt.db, m, at(today(), 9, 59)) == [day_ago(2), late]


def test_the_daily_job_is_idempotent(sqlite_settings) -> None:  # noqa: ANN001
    platform = Platform(sqlite_settings).prepare()
    d = day_ago(1)
    for i, price in enumerate((200, 201, 202, 203, 204)):
        publish(platform, settled(firm_id=f"fm_{i % 3}", day=d, lines=[("metal.steel", "100", price)]))
    rt = platform["pricing"]
    first = run_daily(rt, now=at(today(), 10))
    second = run_daily(rt, now=at(today(), 10, 5))
    horizon = settings_of(rt).catchup_days
    # the first run also catches up the horizon's never-computed days, oldest first, before the due day
    assert [r["date"] for r in first] == [day_ago(n) for n in range(horizon, 0, -1)]
    assert first[-1]["n_new_versions"] > 0
    assert [(r["date"], r["n_new_versions"]) for r in second] == [(d, 0)]
    with rt.db.session() as s:
        triggers = s.execute(select(computation_runs.c.trigger).order_by(computation_runs.c.id)).scalars()
        assert list(triggers) == ["catch_up"] * (horizon - 1) + ["schedule", "schedule"]


def _published_steel_events(platform: Platform, day: date) -> list[dict]:
    return [
        e
        for e in outbox_events(platform, "pricing", "index.published.v1")
        if e["series_key"] == f"{STEEL}@{CITY}" and e["date"] == day.isoformat()
    ]


def _with_trades(settings, *days: date) -> Platform:  # noqa: ANN001
    platform = Platform(settings, services=["pricing"]).prepare()
    for d in days:
        for i, price in enumerate((200, 201, 202, 203, 204)):
            publish(platform, settled(firm_id=f"fm_{i % 3}", day=d, lines=[(STEEL, "100", price)]))
    return platform


def test_the_catch_up_computes_exactly_the_missing_published_days_oldest_first(sqlite_settings) -> None:  # noqa: ANN001
    platform = _with_trades(sqlite_settings, day_ago(3), day_ago(1))
    rt = platform["pricing"]
    configure(rt, catchup_days=7)
    compute(rt, day_ago(4), trigger="test")  # computed already: not missing
    compute(rt, day_ago(12), trigger="test")  # outside the horizon
    early = at(today(), 9, 59)  # day_ago(1)'s window has closed, but it is published at 10:00 only

    done = catch_up(rt, now=early)

    assert [r["date"] for r in done] == [day_ago(n) for n in (8, 7, 6, 5, 3, 2)]
    assert {r["trigger"] for r in done} == {"catch_up"}
    with rt.db.session() as s:
        runs = s.execute(
            select(computation_runs.c.day, computation_runs.c.trigger, computation_runs.c.reason)
            .where(computation_runs.c.trigger == "catch_up")
            .order_by(computation_runs.c.id)
        ).all()
    assert [r.day for r in runs] == [day_ago(n) for n in (8, 7, 6, 5, 3, 2)]
    assert {r.reason for r in runs} == {"not computed at its publication time"}
    (ev,) = _published_steel_events(platform, day_ago(3))
    assert (ev["value"], ev["version"]) == ("202", 1)
    assert _published_steel_events(platform, day_ago(1)) == []  # not computed early

    assert catch_up(rt, now=early) == []  # a second run does nothing
    # at the publication time day_ago(1) is due: computed once, then nothing again
    assert [r["date"] for r in catch_up(rt, now=at(today(), 10))] == [day_ago(1)]
    assert catch_up(rt, now=at(today(), 10, 5)) == []
    assert len(_published_steel_events(platform, day_ago(1))) == 1
    assert len(_published_steel_events(platform, day_ago(3))) == 1
    with rt.db.session() as s:
        per_day = s.execute(
            select(computation_runs.c.day, func.count())
            .group_by(computation_runs.c.day)
            .having(func.count() > 1)
        ).all()
    assert per_day == []
    # 0 turns the catch-up off: tomorrow at 10:00 today is published, yet nothing is computed
    configure(rt, catchup_days=0)
    tomorrow = at(today() + timedelta(days=1), 10)
    assert catch_up(rt, now=tomorrow) == [] and missing_days(rt.db, load_methodology(), tomorrow, 0) == []
    configure(rt, catchup_days=1)
    assert [r["date"] for r in catch_up(rt, now=tomorrow)] == [today()]
    platform.stop()


def _concurrent_catch_ups(settings) -> None:  # noqa: ANN001
    """Two catch-ups at once (two workers, or the timer and the daily job): each day is computed by one of them
    and published once, on the database's own lock."""
    platform = _with_trades(settings, day_ago(3), day_ago(2))
    rt = platform["pricing"]
    configure(rt, catchup_days=3)
    now = at(today(), 10)
    barrier = threading.Barrier(2)
    results: list[list[dict]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(catch_up(rt, now=now))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(r["date"] for rs in results for r in rs) == [day_ago(3), day_ago(2), day_ago(1)]
    with rt.db.session() as s:
        runs = s.execute(select(computation_runs.c.day).order_by(computation_runs.c.day)).scalars().all()
        versions = s.execute(select(func.max(published_values.c.version))).scalar()
    assert runs == [day_ago(3), day_ago(2), day_ago(1)] and versions == 1
    assert len(_published_steel_events(platform, day_ago(3))) == 1
    assert len(_published_steel_events(platform, day_ago(2))) == 1
    platform.stop()


def test_concurrent_catch_ups_compute_each_day_once_sqlite(sqlite_settings) -> None:  # noqa: ANN001
    _concurrent_catch_ups(sqlite_settings)


@pytest.mark.postgres
def test_concurrent_catch_ups_compute_each_day_once_postgres(pg_settings) -> None:  # noqa: ANN001
    _concurrent_catch_ups(pg_settings)


def test_cli_backfills_a_range_with_a_progress_bar(sqlite_settings, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    from workers.cli import app

    for k, v in {
        "DATA_DIR": str(sqlite_settings.data_dir),
        "ENV": "test",
        "JWT_SECRET": sqlite_settings.jwt_secret,
        "PII_KEY": sqlite_settings.pii_key,
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        platform = Platform(get_settings(), services=["pricing"]).prepare()
        start = day_ago(4)
        for i, price in enumerate((200, 201, 202, 203, 204)):
            publish(
                platform, settled(firm_id=f"fm_{i % 3}", day=start, lines=[("metal.steel", "100", price)])
            )
        runner = CliRunner()
        result = runner.invoke(
            app,
            [
                "pricing",
                "compute-index",
                "--date",
                start.isoformat(),
                "--to",
                (start + timedelta(days=2)).isoformat(),
            ],
        )
        assert result.exit_code == 0, result.output
        assert "done" in result.output and "3 day(s)" in result.output
        with platform["pricing"].db.session() as s:
            days = s.execute(
                select(computation_runs.c.day, computation_runs.c.trigger).order_by(computation_runs.c.day)
            ).all()
            steel = s.execute(
                select(published_values.c.value).where(
                    published_values.c.code == "metal.steel",
                    published_values.c.region == "110105",
                    published_values.c.date == start,
                )
            ).scalar()
        assert [(d, t) for d, t in days] == [(start + timedelta(days=i), "cli") for i in range(3)]
        assert steel == "202"

        result = runner.invoke(app, ["pricing", "compute-index", "--date", today().isoformat()])
        assert result.exit_code == 1 and "has not closed yet" in result.output
        result = runner.invoke(app, ["pricing", "compute-index", "--date", "someday"])
        assert result.exit_code != 0

        out = tmp_path / "methodology.md"
        result = runner.invoke(app, ["pricing", "methodology", "--out", str(out)])
        assert result.exit_code == 0 and out.read_text(encoding="utf-8").startswith("# ")
        platform.stop()
    finally:
        get_settings.cache_clear()
