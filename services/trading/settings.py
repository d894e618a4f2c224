"""Trading's settings, read from the environment with the prefix `TRADING_` (e.g. `TRADING_TOLERANCE_PCT=1.5`).

The runtime builds one at start (`ports[SETTINGS]`); tests pass their own with `configure(rt, ...)`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

from .domain.rules import AuctionRules

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime


class TradingSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="TRADING_", case_sensitive=False, extra="forbid")

    # --- auctions -------------------------------------------------------------------------------------------
    # anti-sniping (延时): a bid this close to the end of an ascending lot moves the end to `extension_s` after it
    extension_window_s: int = Field(120, ge=0)
    extension_s: int = Field(300, ge=0)
    default_min_increment_fen_per_t: int = Field(1000, ge=1)  # when an ascending lot names none
    min_duration_s: int = Field(60, ge=1)  # a lot runs at least this long ...
    max_duration_days: int = Field(30, ge=1)  # ... and at most this long
    max_qty_t: int = Field(100_000, ge=1)

    # --- delivery and settlement ----------------------------------------------------------------------------
    tolerance_pct: Decimal = Field(Decimal("2"), ge=0, le=100)  # delivered weight within ±2 % of the declared
    fee_bps: int = Field(50, ge=0, le=10_000)  # the platform's fee, from what the seller is paid (0.5 %)
    # a weighbridge weight further than this from the lot's tonnage is refused, not offered to the buyer to accept
    max_delivery_deviation_pct: Decimal = Field(Decimal("50"), gt=0, le=100)

    # --- buyer default (违约) and second-chance offers -------------------------------------------------------------
    # the buyer has this long to pay once its payment is requested (the delivered weight stands); the deadline
    # job then declares it in default
    payment_deadline_s: int = Field(72 * 3600, ge=1)
    # the seller may declare the buyer in default when it has not come to load this long after the award
    collect_deadline_s: int = Field(7 * 24 * 3600, ge=1)
    # the next-best bidder has this long to accept a second-chance offer
    offer_deadline_s: int = Field(24 * 3600, ge=1)
    deadline_interval_s: float = Field(60.0, gt=0)  # Celery beat period of the deadline scan

    # --- the closing job --------------------------------------------------------------------------------------
    close_interval_s: float = Field(5.0, gt=0)  # Celery beat period of the scan
    close_batch: int = Field(100, ge=1)

    # --- lists ----------------------------------------------------------------------------------------------
    list_default_limit: int = Field(50, ge=1)
    list_max_limit: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _extension(self) -> TradingSettings:
        self.rules  # noqa: B018 - raises when the extension is shorter than its window
        if self.max_delivery_deviation_pct < self.tolerance_pct:
            raise ValueError("max_delivery_deviation_pct must be at least tolerance_pct")
        return self

    @property
    def rules(self) -> AuctionRules:
        return AuctionRules(
            extension_window_s=self.extension_window_s,
            extension_s=self.extension_s,
            default_min_increment_fen_per_t=self.default_min_increment_fen_per_t,
        )


SETTINGS: Port[TradingSettings] = Port("trading.settings")


def settings_of(rt: ServiceRuntime) -> TradingSettings:
    return rt.ports.get_or_set(SETTINGS, TradingSettings)


def configure(rt: ServiceRuntime, **overrides: Any) -> TradingSettings:
    """Replace the runtime's trading settings (tests, benchmarks): defaults + environment + `overrides`."""
    s = TradingSettings(**overrides)
    rt.ports[SETTINGS] = s
    return s
