"""Every service's periodic jobs are registered with Celery beat, and each scheduled task exists."""

from __future__ import annotations

from workers.celery_app import make_celery


def test_beat_schedule_names_registered_tasks():
    app = make_celery()
    app.loader.import_default_modules()
    for mod in app.conf.include:
        __import__(mod)
    schedule = app.conf.beat_schedule
    for expected in ("pricing-daily-indices", "accounts-purge-expired", "payments-reconcile"):
        assert expected in schedule, sorted(schedule)
    for name, entry in schedule.items():
        assert entry["task"] in app.tasks, f"{name}: task {entry['task']} is not registered"
