"""The payments service: its tables, routes, consumers, and the provider chosen by configuration."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .adapters import make_provider
from .api import router
from .consumers import consumers
from .handlers import PAYMENTS, Payments
from .hold_requests import HOLD_REQUESTS, HoldRequests
from .settings import settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Build the port: the ledger over this service's database, with the provider `PAYMENTS` names."""
    cfg = settings_of(rt)
    rt.ports[PAYMENTS] = Payments(rt.db, make_provider(rt.settings, cfg.webhook_tolerance_s), cfg)
    rt.ports[HOLD_REQUESTS] = HoldRequests(rt.ports[PAYMENTS])


SERVICE = ServiceSpec(name="payments", metadata=metadata, router=router, consumers=consumers, setup=setup)
