"""A service at run time: its database, its routes, its relay and consumers.

The embedded run hosts every service in one process; the distributed run hosts one per process. Either way a
service is started the same way: migrate, seed, then the outbox relay and its consumer groups in threads.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import MetaData

from . import migrations
from .bus.port import EventBus
from .consumer import ConsumerRunner, ConsumerSpec
from .db import Database, check_reachable
from .http import Router
from .outbox import Relay
from .ports import Ports
from .settings import Settings

log = logging.getLogger(__name__)

# Every service of the platform, in start order. A module `services.<name>.service` defines `SERVICE`.
SERVICE_NAMES = [
    "accounts",
    "pricing",
    "payments",
    "booking",
    "invoicing",
    "trading",
    "stats",
    "wipe",
    "listings",
]


@dataclass
class ServiceSpec:
    name: str
    metadata: MetaData
    router: Router | None = None
    consumers: Callable[[ServiceRuntime], list[ConsumerSpec]] = lambda rt: []
    seed: Callable[[ServiceRuntime], None] | None = None
    # builds the adapters kept in runtime.ports (payment provider, search index, ...): see kernel/ports.py
    setup: Callable[[ServiceRuntime], None] | None = None


def load_spec(name: str) -> ServiceSpec:
    return importlib.import_module(f"services.{name}.service").SERVICE


def available_services() -> list[str]:
    out = []
    for name in SERVICE_NAMES:
        try:
            importlib.import_module(f"services.{name}.service")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"services.{name}"):
                continue
            raise
        out.append(name)
    return out


@dataclass
class ServiceRuntime:
    spec: ServiceSpec
    settings: Settings
    bus: EventBus
    db: Database = field(init=False)
    ports: Ports = field(default_factory=Ports)
    runners: list[ConsumerRunner] = field(default_factory=list)
    relay: Relay = field(init=False)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = Database(
            self.settings.db_url(self.spec.name),
            schema=self.settings.db_schema(self.spec.name),
            pool_size=self.settings.db_pool_size,
            max_overflow=self.settings.db_max_overflow,
        )
        self.relay = Relay(
            self.db,
            self.bus,
            self.spec.name,
            batch_size=self.settings.relay_batch_size,
            idle_sleep_s=self.settings.relay_idle_sleep_s,
            max_attempts=self.settings.relay_max_attempts,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def prepare(self) -> None:
        """Fail fast on an unreachable database, migrate, build adapters, seed."""
        check_reachable(self.db.engine, self.name)
        migrations.upgrade(self.name, self.db)
        if self.spec.setup:
            self.spec.setup(self)
        if self.spec.seed:
            self.spec.seed(self)
        self.runners = [
            ConsumerRunner(
                c,
                self.db,
                self.bus,
                self.settings.consumer_max_attempts,
                self.settings.consumer_retry_backoff_s,
            )
            for c in self.spec.consumers(self)
        ]

    def consumer_groups(self) -> list[str]:
        return [r.spec.group for r in self.runners]

    def start_background(self, stop: threading.Event) -> None:
        workers: list[tuple[str, Callable[[threading.Event], None]]] = [
            (f"relay-{self.name}", self.relay.run)
        ]
        workers += [(f"consumer-{r.spec.group}", r.run) for r in self.runners]
        for tname, target in workers:
            t = threading.Thread(target=target, args=(stop,), name=tname, daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)

    def drain(self, rounds: int = 50) -> None:
        """Tests: relay everything pending and let every consumer catch up (no threads needed)."""
        for _ in range(rounds):
            moved = self.relay.relay_once()
            for r in self.runners:
                moved += r.run_once(timeout_s=0.0)
            if not moved:
                return
