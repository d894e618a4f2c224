"""Payments' own settings, read from the environment with the prefix `PAYMENTS_`.

Which provider runs is the platform setting `PAYMENTS=sandbox|stripe` (with `STRIPE_API_KEY`, `STRIPE_API_BASE`,
`STRIPE_WEBHOOK_SECRET`) in `services.kernel.settings.Settings`; what is specific to payments lives here:

- `PAYMENTS_PAYOUT_THRESHOLD_FEN` (default 1000 = 10 yuan): residents' payouts below it stay in their wallet;
- `PAYMENTS_WEBHOOK_TOLERANCE_S` (default 300): how old a signed webhook may be before it counts as a replay;
- `PAYMENTS_OPEN_PAYMENT_SYNC_S` (default 30): how often Celery beat reads the PaymentIntents still waiting for
  their payer (what a webhook did not tell us: a lost delivery, or a server such as localstripe that sends none
  for an authorisation);
- `PAYMENTS_INTENT_REFRESH_S` (default 5): `GET /v1/payments/intents/{id}` of a payment still waiting for a payer
  who pays at the provider (Stripe) reads the PaymentIntent first, at most once per this many seconds per payment
  (per process), so polling clients do not hammer the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

from .domain.rules import DEFAULT_PAYOUT_THRESHOLD_FEN

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime


class PaymentsSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", case_sensitive=False, extra="forbid")

    # a resident's payout below this is credited to their wallet instead of sent (10 yuan)
    payout_threshold_fen: int = Field(DEFAULT_PAYOUT_THRESHOLD_FEN, ge=0)
    webhook_tolerance_s: int = Field(300, ge=1)  # oldest acceptable webhook signature (replay window)
    open_payment_sync_s: int = Field(
        30, ge=1
    )  # Celery beat reads the payments awaiting their payer this often
    # GET /v1/payments/intents/{id} reads a waiting payment from the provider at most once per this many seconds
    # per payment (per process; 0: every poll)
    intent_refresh_s: float = Field(5, ge=0)
    currency: str = "cny"  # of every payment and ledger line


SETTINGS: Port[PaymentsSettings] = Port("payments.settings")


def settings_of(rt: ServiceRuntime) -> PaymentsSettings:
    return rt.ports.get_or_set(SETTINGS, PaymentsSettings)


def configure(rt: ServiceRuntime, **overrides: Any) -> PaymentsSettings:
    """Replace the runtime's payments settings (tests): defaults + environment + `overrides`."""
    s = PaymentsSettings(**overrides)
    rt.ports[SETTINGS] = s
    from .handlers import PAYMENTS

    payments = rt.ports.get(PAYMENTS)
    if payments is not None:
        payments.settings = s
    return s
