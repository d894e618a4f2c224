"""The daily price publication lost with its Celery worker, caught up by the platform itself.

A worker receives `pricing.compute_daily` and is SIGKILLed while it computes: the test holds the pricing
database's write lock, so the computation (the task's only write) waits on it and can never commit, and the
embedded broker's message is gone with the worker (see test_celery_kill.py). Nothing is published and no later
daily run would compute those days. A second worker, started later with beat, was not there at the publication
time either; its catch-up timer (`pricing.catch_up`, every `PRICING_CATCHUP_EVERY_S`, tuned to 1 s here) computes
every published day of the horizon with no computation, oldest first, and the day's indices appear through the
public API, each published once — without an operator.
"""

from __future__ import annotations

import signal
import sqlite3
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.kernel.outbox import wait_until
from services.kernel.tasks import publish as publish_task
from services.pricing.domain.methodology import load_methodology
from services.pricing.domain.publication import latest_published_day
from services.pricing.store import computation_runs
from tests.pricing.support import CITY, outbox_events, publish, settled
from workers.supervisor import celery_args, free_port

from .test_celery_kill import _stop, _visible_messages
from .test_kill import embedded_env

STEEL = "metal.steel"
HORIZON = 3


def _worker(settings, log_path, *, beat: bool):  # noqa: ANN001, ANN202
    import subprocess

    env = embedded_env(settings.data_dir, free_port())
    env.update(PRICING_CATCHUP_EVERY_S="1", PRICING_CATCHUP_DAYS=str(HORIZON))
    return subprocess.Popen(
        celery_args(settings, beat=beat),
        env=env,
        stdout=open(log_path, "ab"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _log_has(log_path, *parts: str) -> bool:  # noqa: ANN001
    return any(all(p in line for p in parts) for line in log_path.read_text(errors="replace").splitlines())


def _runs(platform: Platform) -> list[tuple[date, str]]:
    with platform["pricing"].db.session(readonly=True) as s:
        rows = s.execute(
            select(computation_runs.c.day, computation_runs.c.trigger).order_by(computation_runs.c.id)
        ).all()
    return [(r.day, r.trigger) for r in rows]


async def _steel(client, first: date, last: date) -> list[tuple[str, str | None, int]]:  # noqa: ANN001
    r = await client.get(
        "/v1/prices/indices",
        params={"code": STEEL, "region": CITY, "from": first.isoformat(), "to": last.isoformat()},
    )
    assert r.status == 200, await r.text()
    return [(i["date"], i["value"], i["version"]) for i in (await r.json())["items"]]


async def test_a_daily_publication_lost_with_its_worker_is_caught_up_after_restart(
    aiohttp_client,  # noqa: ANN001
    sqlite_settings,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
    show_figures,  # noqa: ANN001
) -> None:
    platform = Platform(sqlite_settings).prepare()
    client = await aiohttp_client(create_app_over(platform))
    latest = latest_published_day(datetime.now(UTC), load_methodology().specification)
    days = [latest - timedelta(days=n) for n in range(HORIZON - 1, -1, -1)]  # oldest first
    for d in (days[0], days[-1]):  # trades on the oldest and the newest day; none in between
        for i, price in enumerate((200, 201, 202, 203, 204)):
            publish(platform, settled(firm_id=f"fm_{i % 3}", day=d, lines=[(STEEL, "100", price)]))
    log = tmp_path / "worker.log"
    db_file = sqlite_settings.data_dir / "pricing.db"

    first = _worker(sqlite_settings, log, beat=False)
    try:
        # warm up: the worker builds (and migrates) its platform on a first, harmless task
        publish_task(sqlite_settings, "booking.run_timers")
        assert wait_until(
            lambda: _log_has(log, "booking.run_timers", "succeeded") or first.poll() is not None, 300, 0.1
        ), log.read_text()[-4000:]
        lock = sqlite3.connect(db_file, timeout=30, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the computation's write now waits on us
            publish_task(sqlite_settings, "pricing.compute_daily")  # what beat sends at the publication time
            assert wait_until(
                lambda: _log_has(log, "pricing.compute_daily", "received") or first.poll() is not None,
                300,
                0.05,
            ), log.read_text()[-4000:]
            assert first.poll() is None, log.read_text()[-4000:]
            _stop(first, signal.SIGKILL)
            assert lock.execute("SELECT count(*) FROM computation_runs").fetchone() == (0,)
            lock.execute("ROLLBACK")
        finally:
            lock.close()
    finally:
        _stop(first, signal.SIGKILL)
    # lost: the message left the transport with the killed worker, and nothing was computed or published
    assert _visible_messages(sqlite_settings.data_dir) == 0
    assert _runs(platform) == []
    assert await _steel(client, days[0], days[-1]) == []

    second = _worker(sqlite_settings, log, beat=True)
    try:
        assert wait_until(
            lambda: {d for d, _ in _runs(platform)} >= set(days) or second.poll() is not None, 300, 0.2
        ), log.read_text()[-4000:]
    finally:
        _stop(second)
    runs = [r for r in _runs(platform) if r[0] in days]
    assert runs == [(d, "catch_up") for d in days], runs  # each day once, oldest first
    assert await _steel(client, days[0], days[-1]) == [
        (days[0].isoformat(), "202", 1),
        (days[-1].isoformat(), "202", 1),
    ]
    published = [
        e["date"]
        for e in outbox_events(platform, "pricing", "index.published.v1")
        if e["series_key"] == f"{STEEL}@{CITY}"
    ]
    assert sorted(published) == [days[0].isoformat(), days[-1].isoformat()]  # each published once
    show_figures(f"compute_daily killed mid-computation; the restarted worker's catch-up published {days}")
    platform.stop()
