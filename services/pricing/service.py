"""The pricing service: price observations, daily indices and their restatements, the published methodology."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .consumers import consumers
from .reference import seed_reference_prices
from .settings import settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    settings_of(rt)


SERVICE = ServiceSpec(
    name="pricing",
    metadata=metadata,
    router=router,
    consumers=consumers,
    seed=seed_reference_prices,
    setup=setup,
)
