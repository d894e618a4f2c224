"""The platform of a process: builds the bus and the runtimes of the services it hosts, runs their background work.

The embedded run hosts every service here; the distributed run builds one `Platform` per service process.
Tests build one too and call `drain()` to run relays and consumers to quiescence without threads or sleeps.
"""

from __future__ import annotations

import logging
import threading

from .bus.factory import declared_topics, durability, make_bus
from .bus.port import EventBus, TopicSpec
from .consumer import dlq_topic, replayed_topic
from .runtime import ServiceRuntime, available_services, load_spec
from .settings import Settings

log = logging.getLogger(__name__)


class Platform:
    def __init__(self, settings: Settings, services: list[str] | None = None, bus: EventBus | None = None):
        self.settings = settings
        self.bus = bus or make_bus(settings)
        names = settings.hosted_services(available_services()) if services is None else services
        self.runtimes: dict[str, ServiceRuntime] = {
            n: ServiceRuntime(load_spec(n), settings, self.bus) for n in names
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __getitem__(self, name: str) -> ServiceRuntime:
        return self.runtimes[name]

    def prepare(self) -> Platform:
        self.bus.ensure_topics(declared_topics(settings=self.settings))
        for rt in self.runtimes.values():
            rt.prepare()
        groups = [g for rt in self.runtimes.values() for g in rt.consumer_groups()]
        # dead letters wait for an operator: kept DLQ_RETENTION_HOURS (30 days by default), not a week
        keep = self.settings.dlq_retention_hours
        rf, isr = durability(self.settings)
        parked = [TopicSpec(dlq_topic(g), self.settings.event_log_partitions, keep, rf, isr) for g in groups]
        parked += [TopicSpec(replayed_topic(g), 1, keep, rf, isr) for g in groups]
        self.bus.ensure_topics(parked)
        return self

    def start(self) -> None:
        self._stop.clear()
        for rt in self.runtimes.values():
            rt.start_background(self._stop)
        if hasattr(self.bus, "apply_retention"):
            t = threading.Thread(target=self._retention_loop, name="bus-retention", daemon=True)
            t.start()
            self._threads.append(t)

    def _retention_loop(self) -> None:
        while not self._stop.wait(600):
            try:
                self.bus.apply_retention()  # type: ignore[attr-defined]
            except Exception:
                log.exception("event log retention failed")

    def stop(self) -> None:
        self._stop.set()
        for rt in self.runtimes.values():
            rt.join()
        for rt in self.runtimes.values():
            rt.db.dispose()
        self.bus.close()

    def drain(self, rounds: int = 200) -> None:
        """Relay every outbox and let every consumer catch up, until nothing moves."""
        for _ in range(rounds):
            moved = 0
            for rt in self.runtimes.values():
                moved += rt.relay.relay_once()
            for rt in self.runtimes.values():
                for r in rt.runners:
                    moved += r.run_once(timeout_s=0.0)
            if not moved:
                return
        raise RuntimeError("events still moving after drain(); a consumer loop?")
