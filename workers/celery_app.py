"""The Celery worker's app: every service's declared tasks (`services/<name>/tasks.py`) and beat schedules.

The app is the kernel's (`services.kernel.tasks.celery_app`), so the worker consumes exactly where every other
process publishes. This module registers each declared task on it and installs the worker's task runtime: one
platform per worker process, migrated once. Embedded run: the SQLAlchemy broker on SQLite (no server);
distributed run: Redis (CELERY_BROKER_URL).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from celery import Celery

from services.kernel import tasks
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


def _celery_task(name: str) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        return tasks.execute(name, *args, **kwargs)

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    return run


def make_celery() -> Celery:
    app = tasks.celery_app(get_settings())
    mods = _task_modules()
    schedule: dict = {}
    for m in mods:
        schedule.update(getattr(importlib.import_module(m), "SCHEDULE", {}))
    for name, td in tasks.declared().items():
        if name not in app.tasks:
            app.task(name=name, **td.options)(_celery_task(name))
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


tasks.install_runtime(runtime)
