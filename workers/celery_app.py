"""The Celery worker's app: every service's declared tasks (`services/<name>/tasks.py`) and beat schedules.

The app is the kernel's (`services.kernel.tasks.celery_app`), so the worker consumes exactly where every other
process publishes. This module registers each declared task on it and installs the worker's task runtime: one
platform per worker process, migrated once. Embedded run: the SQLAlchemy broker on SQLite (no server);
distributed run: Redis (CELERY_BROKER_URL).
"""

from __future__ import annotations

import importlib
import threading
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


_platform_lock = threading.Lock()
_platform_built: list = []  # the one platform of this worker process, once built


def _platform():  # noqa: ANN202
    """The worker's one platform. Tasks run in a thread pool and beat fires several at the same tick: the first
    builds (and migrates) it while the others wait, instead of each building and migrating its own at once."""
    with _platform_lock:
        if not _platform_built:
            from services.bootstrap import Platform

            _platform_built.append(Platform(get_settings()).prepare())
        return _platform_built[0]


def forget_platform() -> None:
    """Tests: the next task builds a new platform, from the settings then in force."""
    with _platform_lock:
        _platform_built.clear()


def runtime(service: str) -> ServiceRuntime:
    """The runtime of a service inside a worker process (migrated once, cached)."""
    return _platform()[service]


tasks.install_runtime(runtime)
