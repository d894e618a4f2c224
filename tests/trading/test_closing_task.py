"""The closing job as the worker runs it: scheduled by beat, registered on the Celery app, in the worker's platform."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from services.trading import handlers
from services.trading.domain.commands import ListLot, PlaceBid

from .support import firm_events, firm_principal, lot_body, publish


def test_celery_task_closes_due_lots(sqlite_settings, monkeypatch):
    import workers.celery_app as celery_mod
    from services.kernel.settings import get_settings

    assert celery_mod.celery_app.conf.beat_schedule["trading-close-lots"]["task"] == "trading.close_due_lots"
    assert "trading.close_due_lots" in celery_mod.celery_app.tasks
    s = sqlite_settings
    for k, v in {
        "DATA_DIR": str(s.data_dir),
        "JWT_SECRET": s.jwt_secret,
        "PII_KEY": s.pii_key,
        "ENV": "test",
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    celery_mod.forget_platform()
    try:
        platform = celery_mod._platform()
        rt = platform["trading"]
        publish(platform, *firm_events("fm_seller"), *firm_events("fm_a"))
        listed = datetime.now(UTC) - timedelta(hours=2)
        lot = handlers.list_lot(
            rt,
            firm_principal("fm_seller"),
            ListLot(
                **lot_body(
                    ends_at=(listed + timedelta(hours=1)).isoformat(), source="purchase", purchase_ref="PO-1"
                )
            ),
            now=listed,
        )
        handlers.place_bid(
            rt,
            firm_principal("fm_a"),
            lot["id"],
            PlaceBid(price_fen_per_t=260_000),
            now=listed + timedelta(minutes=5),
        )
        result = celery_mod.celery_app.tasks["trading.close_due_lots"].apply().get(timeout=30)
        assert result == {"awarded": 1, "unsold": 0}
        assert handlers.get_lot(rt, firm_principal("fm_a"), lot["id"])["status"] == "awarded"
    finally:
        try:
            celery_mod._platform().stop()
        finally:
            get_settings.cache_clear()
            celery_mod.forget_platform()


def test_tasks_fired_at_the_same_tick_on_a_fresh_worker_share_one_platform(sqlite_settings, monkeypatch):
    """Beat fires the closing scan together with other services' scans; the worker's thread pool runs them at once.
    Each used to build and migrate its own platform at the same time, and Alembic's process-wide context made the
    closing task fail with KeyError('config') (seen in the distributed e2e's log)."""
    import workers.celery_app as celery_mod
    from services.kernel.platform import Platform
    from services.kernel.settings import get_settings

    s = sqlite_settings
    for k, v in {
        "DATA_DIR": str(s.data_dir),
        "JWT_SECRET": s.jwt_secret,
        "PII_KEY": s.pii_key,
        "ENV": "test",
    }.items():
        monkeypatch.setenv(k, v)
    built = []
    prepare = Platform.prepare

    def counted(self):  # noqa: ANN001, ANN202
        built.append(self)
        return prepare(self)

    monkeypatch.setattr(Platform, "prepare", counted)
    get_settings.cache_clear()
    celery_mod.forget_platform()
    # the scans beat fires every few seconds, all due at the first tick
    names = [
        "trading.close_due_lots",
        "booking.run_timers",
        "listings.run_timers",
        "invoicing.requeue_stale_exports",
    ]
    start = threading.Barrier(len(names))
    results: dict[str, object] = {}

    def fire(name: str) -> None:
        start.wait()
        try:
            results[name] = celery_mod.celery_app.tasks[name].apply().get(timeout=60, propagate=True)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            results[name] = exc

    threads = [threading.Thread(target=fire, args=(n,)) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not [r for r in results.values() if isinstance(r, BaseException)], results
        assert results["trading.close_due_lots"] == {"awarded": 0, "unsold": 0}
        assert len(built) == 1
    finally:
        try:
            celery_mod._platform().stop()
        finally:
            get_settings.cache_clear()
            celery_mod.forget_platform()
