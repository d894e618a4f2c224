"""The Celery app: schedules, retries, exports. Each service may have a `tasks.py` with tasks and a `SCHEDULE`.

Embedded run: the SQLAlchemy broker on SQLite (no server). Distributed run: Redis (CELERY_BROKER_URL).
Unit tests may set `task_always_eager`; integration tests run a real worker.
"""

from __future__ import annotations

import functools
import importlib

from celery import Celery

from services.kernel.runtime import SERVICE_NAMES, ServiceRuntime
from services.kernel.settings import get_settings


def _task_modules() -> list[str]:
    mods = []
    for name in SERVICE_NAMES:
        try:
            importlib.import_module(f"services.{name}.tasks")
        except ModuleNotFoundError as exc:
            if exc.name == f"services.{name}.tasks" or exc.name == f"services.{name}":
                continue
            raise
        mods.append(f"services.{name}.tasks")
    return mods


def make_celery() -> Celery:
    s = get_settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("recycle", broker=s.fmt(s.celery_broker_url), backend=s.fmt(s.celery_result_backend))
    app.conf.update(
        task_acks_late=True,  # a worker that dies mid-task leaves it to be redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="Asia/Shanghai",
        enable_utc=True,
        broker_connection_retry_on_startup=True,
    )
    mods = _task_modules()
    app.conf.include = mods
    schedule: dict = {}
    for m in mods:
        schedule.update(getattr(importlib.import_module(m), "SCHEDULE", {}))
    app.conf.beat_schedule = schedule
    return app


celery_app = make_celery()


@functools.cache
def _platform():  # noqa: ANN202
    from services.bootstrap import Platform

    return Platform(get_settings()).prepare()


def runtime(service: str) -> ServiceRuntime:
    """The runtime of a service inside a worker process (migrated once, cached)."""
    return _platform()[service]
