"""The closing job as the worker runs it: scheduled by beat, registered on the Celery app, in the worker's platform."""

from __future__ import annotations

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
    celery_mod._platform.cache_clear()
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
            celery_mod._platform.cache_clear()
