"""Pricing's operational settings (environment prefix `PRICING_`).

The index rules themselves (outlier k, quorum, tiers, baskets, publication time, late-data window) are not
settings: they are the versioned methodology (`methodology.toml`), because changing them changes what is
published. What is here only shapes how the service answers and runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime


class PricingSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="PRICING_", case_sensitive=False, extra="forbid")

    # A quote uses a region's latest published value only if it is at most this many days older than the
    # latest computed day; older values are skipped for the next wider region (and flagged stale when used).
    quote_max_age_days: int = Field(3, ge=0)
    # How far in the future an observation's observed_at may be (clock skew of a reporting firm's system).
    max_clock_skew_s: int = Field(300, ge=0)
    # Lists (indices, notices): default and maximum page size.
    page_default: int = Field(366, ge=1)
    page_max: int = Field(5000, ge=1)
    # The daily job: also recompute queued days with late inputs, at most this many per run.
    max_restatement_days_per_run: int = Field(31, ge=0)
    # The catch-up: every day published within the last this many publications that has no computation (its
    # worker died or was down at the publication time) is computed; 0 turns it off. Checked by beat every
    # `catchup_every_s` seconds and by the daily job before it publishes.
    catchup_days: int = Field(7, ge=0)
    catchup_every_s: float = Field(300.0, gt=0)


SETTINGS: Port[PricingSettings] = Port("pricing.settings")


def settings_of(rt: ServiceRuntime) -> PricingSettings:
    return rt.ports.get_or_set(SETTINGS, PricingSettings)


def configure(rt: ServiceRuntime, **overrides: object) -> PricingSettings:
    """Tests: replace the runtime's settings with these overrides."""
    s = PricingSettings(**overrides)  # type: ignore[arg-type]
    rt.ports[SETTINGS] = s
    return s
