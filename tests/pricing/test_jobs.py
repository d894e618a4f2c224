"""The daily job's schedule and due days, and the `recycle pricing` commands."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select
from typer.testing import CliRunner

from services.bootstrap import Platform
from services.kernel.settings import get_settings
from services.pricing import tasks
from services.pricing.compute import due_days
from services.pricing.domain.methodology import load_methodology
from services.pricing.handlers import run_daily
from services.pricing.store import computation_runs, published_values, restatement_queue

from .support import at, day_ago, publish, settled, today


def test_the_beat_schedule_runs_at_the_methodologys_publication_time() -> None:
    m = load_methodology()
    entry = tasks.SCHEDULE["pricing-daily-indices"]
    assert entry["task"] == tasks.compute_daily.name == "pricing.compute_daily"
    hour, minute = m.specification.publication_time.split(":")
    cron = entry["schedule"]
    assert cron.hour == {int(hour)} and cron.minute == {int(minute)}
    assert m.specification.timezone == tasks.CELERY_TIMEZONE


def test_due_days_are_the_publication_day_then_late_data_within_the_window(sqlite_settings) -> None:  # noqa: ANN001
    m = load_methodology()
    rt = Platform(sqlite_settings, services=["pricing"]).prepare()["pricing"]
    now = at(today(), 10)
    late, too_old = day_ago(5), day_ago(m.late_data_days + 1)
    with rt.db.session() as s, s.begin():
        for d in (late, too_old):
            s.execute(insert(restatement_queue).values(day=d, late_inputs=1, first_at=now, last_at=now))
    assert due_days(rt.db, m, now) == [day_ago(1), late]


def test_the_daily_job_is_idempotent(sqlite_settings) -> None:  # noqa: ANN001
    platform = Platform(sqlite_settings).prepare()
    d = day_ago(1)
    for i, price in enumerate((200, 201, 202, 203, 204)):
        publish(platform, settled(firm_id=f"fm_{i % 3}", day=d, lines=[("metal.steel", "100", price)]))
    rt = platform["pricing"]
    first = run_daily(rt, now=at(today(), 10))
    second = run_daily(rt, now=at(today(), 10, 5))
    assert [r["date"] for r in first] == [d] and first[0]["n_new_versions"] > 0
    assert second[0]["n_new_versions"] == 0
    with rt.db.session() as s:
        assert s.execute(select(computation_runs.c.trigger)).scalars().all() == ["schedule", "schedule"]


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
