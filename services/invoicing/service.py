"""The invoicing service: reverse invoices (反向开票), red letters, seller caps, tax exports."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec
from services.kernel.settings import ConfigError

from .api import router
from .consumers import consumers
from .domain.tax_config import TaxConfigError
from .export_jobs import recover_threads
from .settings import service_rule_book, settings_of, tax_rule_book
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Load both rule books at start (a bad file stops start-up, naming the entry) and check that every location
    class the service rules can give an issuer has a 城市维护建设税 rate on the day it starts to apply."""
    settings_of(rt)
    try:
        taxes, service = tax_rule_book(rt), service_rule_book(rt)
    except TaxConfigError as exc:
        raise ConfigError(f"invoicing rule files: {exc}") from exc
    for entry in service.location_class:
        day = max(entry.effective_from, taxes.regime[0].effective_from)
        known = taxes.rules_for(day).location_classes
        classes = {entry.value.default, *(c for _, c in entry.value.by_city)}
        unknown = classes - known if known else set()
        if unknown:
            raise ConfigError(
                f"service_rules.toml location_class from {entry.effective_from}: unknown classes "
                f"{sorted(unknown)} (tax_rules.toml has {sorted(known)})"
            )


def setup_and_recover(rt: ServiceRuntime) -> None:
    """Set up, then run again here the thread exports a process that is gone left behind (export_jobs.py,
    `recover_threads`): a process of the service starting is how a crashed one comes back. Celery jobs are left
    to beat (`requeue_stale`)."""
    setup(rt)
    recover_threads(rt, starting=True)


SERVICE = ServiceSpec(
    name="invoicing", metadata=metadata, router=router, consumers=consumers, setup=setup_and_recover
)
