"""The payments service: its tables, routes, consumers, and the provider chosen by configuration."""

from __future__ import annotations

from services.contracts.payments import HoldCancelRequested, HoldCaptureRequested, HoldRequested
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .adapters import make_provider
from .api import router
from .domain.events import PayoutRequested, WithdrawalRequested
from .handlers import Payments
from .hold_requests import HoldRequests
from .settings import settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Build the port: the ledger over this service's database, with the provider `PAYMENTS` names."""
    cfg = settings_of(rt)
    rt.ports["payments"] = Payments(rt.db, make_provider(rt.settings, cfg.webhook_tolerance_s), cfg)
    rt.ports["hold_requests"] = HoldRequests(rt.ports["payments"])


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    payments: Payments = rt.ports["payments"]
    holds: HoldRequests = rt.ports["hold_requests"]
    return [
        ConsumerSpec(
            "payments.payouts",
            ["payments.payout"],
            {
                PayoutRequested.type: payments.when_payout_requested_pay,
                WithdrawalRequested.type: payments.when_withdrawal_requested_send,
            },
        ),
        # holds other services ask for (escrow of listings' orders, deposits)
        group(
            "payments.holds",
            {
                HoldRequested: holds.when_hold_requested_open,
                HoldCaptureRequested: holds.when_hold_capture_requested_settle,
                HoldCancelRequested: holds.when_hold_cancel_requested_release,
            },
        ),
    ]


SERVICE = ServiceSpec(name="payments", metadata=metadata, router=router, consumers=consumers, setup=setup)
