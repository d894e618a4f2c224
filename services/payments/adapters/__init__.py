"""Provider adapters: the sandbox (embedded default, no network) and Stripe (official SDK).

`make_provider(settings, ...)` picks one from configuration alone (`PAYMENTS=sandbox|stripe`).
"""

from __future__ import annotations

from services.kernel.settings import ConfigError, Settings

from ..ports import PaymentProvider


def make_provider(settings: Settings, webhook_tolerance_s: int = 300) -> PaymentProvider:
    if settings.payments == "sandbox":
        from .sandbox import SandboxProvider

        return SandboxProvider.from_settings(settings)
    if settings.payments == "stripe":
        from .stripe import StripeProvider

        return StripeProvider.from_settings(settings, webhook_tolerance_s=webhook_tolerance_s)
    raise ConfigError(f"PAYMENTS must be 'sandbox' or 'stripe', not {settings.payments!r}")
