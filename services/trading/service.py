"""The trading service: B2B scrap lots, auctions, awards, weighbridge delivery and settlement, chain of custody."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .consumers import consumers
from .settings import settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    settings_of(rt)  # a bad TRADING_* setting stops start-up


SERVICE = ServiceSpec(name="trading", metadata=metadata, router=router, consumers=consumers, setup=setup)
