"""The stats service: material flows (回收量 by region and category) and carbon savings, from the event log."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec
from services.kernel.settings import ConfigError

from .api import router
from .consumers import consumers
from .domain.factors import FactorTableError
from .settings import factors_of, low_value_of, settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Read both tables at start: a bad file stops start-up, naming the entry."""
    settings_of(rt)
    try:
        factors_of(rt)
        low_value_of(rt)
    except FactorTableError as exc:
        raise ConfigError(f"stats tables: {exc}") from exc


SERVICE = ServiceSpec(name="stats", metadata=metadata, router=router, consumers=consumers, setup=setup)
