"""Background tasks as the services see them: declared here, run by the worker, published from any process.

A service's `tasks.py` declares each task with `@task(name, service=...)`; the function takes the service's
runtime first (`def run_timers(rt: ServiceRuntime) -> ...`) and never looks for it itself. The worker
(`workers/celery_app.py`) registers every declared task on the project's Celery app and installs how a task
finds its runtime (`install_runtime`). Nothing in `services/` imports `workers`.

Publishing (`publish(settings, name, *args)` or `TASK.publish(settings, *args)`) always goes through the
project's Celery configuration for those settings — the configured broker — in every process (gateway, service
processes, background). Celery's own `shared_task(...).delay` from a process where the project's app was never
loaded publishes to Celery's default app (AMQP on localhost:5672), where nobody of ours listens.
Tests run tasks in-process with `run_inline(...)`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from .runtime import ServiceRuntime
    from .settings import Settings

TIMEZONE = "Asia/Shanghai"  # schedules (crontab) are read in this zone


@dataclass(frozen=True)
class TaskDef:
    """A declared task: its Celery name, the service whose runtime it receives, its Celery options."""

    name: str
    service: str
    fn: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, rt: ServiceRuntime, *args: Any, **kwargs: Any) -> Any:
        return self.fn(rt, *args, **kwargs)

    def publish(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        publish(settings, self.name, *args, **kwargs)


_TASKS: dict[str, TaskDef] = {}


def task(name: str, *, service: str, **options: Any) -> Callable[[Callable[..., Any]], TaskDef]:
    """Declare a task. `options` are Celery's task options (acks_late, autoretry_for, max_retries, ...)."""

    def register(fn: Callable[..., Any]) -> TaskDef:
        known = _TASKS.get(name)
        if known is not None and known.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"task {name} is declared twice ({known.fn.__qualname__}, {fn.__qualname__})")
        td = TaskDef(name, service, fn, dict(options))
        _TASKS[name] = td
        return td

    return register


def declared() -> dict[str, TaskDef]:
    return dict(_TASKS)


# ------------------------------------------------------------------------------------------------- runtimes
RuntimeProvider = Callable[[str], "ServiceRuntime"]
_runtime_provider: RuntimeProvider | None = None


def install_runtime(provider: RuntimeProvider | None) -> None:
    """How tasks of this process find a service's runtime (the worker installs its own platform's)."""
    global _runtime_provider
    _runtime_provider = provider


def runtime_of(service: str) -> ServiceRuntime:
    if _runtime_provider is None:
        raise RuntimeError("no task runtime installed in this process (workers/celery_app.py installs one)")
    return _runtime_provider(service)


def execute(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run a declared task here, with its service's runtime (what the worker does for each message)."""
    td = _TASKS[name]
    return td.fn(runtime_of(td.service), *args, **kwargs)


# ---------------------------------------------------------------------------------------------- publishing
Publisher = Callable[[str, tuple, dict], None]
_publisher: Publisher | None = None
_apps: dict[tuple[str, str], Celery] = {}
_apps_lock = threading.Lock()


def celery_app(settings: Settings) -> Celery:
    """The project's Celery app for these settings (one per broker/backend, cached): the worker builds on it and
    every process publishes through it."""
    from celery import Celery

    broker, backend = settings.fmt(settings.celery_broker_url), settings.fmt(settings.celery_result_backend)
    with _apps_lock:
        app = _apps.get((broker, backend))
        if app is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            app = Celery("recycle", broker=broker, backend=backend, set_as_current=False)
            app.conf.update(
                task_acks_late=True,  # a worker that dies mid-task leaves it to be redelivered
                task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1,
                task_serializer="json",
                result_serializer="json",
                accept_content=["json"],
                timezone=TIMEZONE,
                enable_utc=True,
                broker_connection_retry_on_startup=True,
                broker_connection_timeout=5,
                # a publisher gives up after a few seconds instead of hanging a request on a dead broker
                task_publish_retry_policy={
                    "max_retries": 3,
                    "interval_start": 0,
                    "interval_step": 0.5,
                    "interval_max": 1,
                },
            )
            _apps[(broker, backend)] = app
        return app


def install_publisher(publisher: Publisher | None) -> None:
    """Replace how this process publishes tasks (None: through the project's Celery app)."""
    global _publisher
    _publisher = publisher


def publish(settings: Settings, name: str, *args: Any, **kwargs: Any) -> None:
    """Queue task `name` on the configured broker; raises if it cannot be reached (callers choose a fallback)."""
    if _publisher is not None:
        _publisher(name, args, kwargs)
        return
    celery_app(settings).send_task(name, args=list(args), kwargs=kwargs, retry=True)


@contextlib.contextmanager
def run_inline(provider: RuntimeProvider) -> Iterator[list[tuple[str, tuple]]]:
    """Tests: published tasks run at once in this thread against `provider`'s runtimes; yields the calls."""
    calls: list[tuple[str, tuple]] = []
    saved = (_runtime_provider, _publisher)

    def now(name: str, args: tuple, kwargs: dict) -> None:
        calls.append((name, args))
        execute(name, *args, **kwargs)

    install_runtime(provider)
    install_publisher(now)
    try:
        yield calls
    finally:
        install_runtime(saved[0])
        install_publisher(saved[1])
