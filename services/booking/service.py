"""The booking service: doorstep pickups, time slots, dispatch, weighing, settlement and the resident's payout."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .consumers import consumers
from .feed import feed_of
from .seed import seed
from .settings import price_cache, settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    settings_of(rt)
    price_cache(rt)
    feed_of(rt)


SERVICE = ServiceSpec(
    name="booking", metadata=metadata, router=router, consumers=consumers, seed=seed, setup=setup
)
