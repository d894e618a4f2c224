"""Booking's settings: service hours, slots and capacity, cancel rules, timers, the payout saga.

Read from the environment with the prefix `BOOKING_` (e.g. `BOOKING_SLOT_CAPACITY=30`,
`BOOKING_INVOICING_ENABLED=false`); the values here are the defaults of DOMAIN_RULES.md "Pickups".
The runtime builds one at start (`ports[SETTINGS]`); tests pass their own with `configure(rt, ...)`.
"""

from __future__ import annotations

import functools
from datetime import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

    from .prices import PriceCache


class BookingSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_", case_sensitive=False, extra="forbid")

    # --- time windows (预约时段) -------------------------------------------------------------------
    timezone: str = "Asia/Shanghai"  # of the service hours and the windows' days
    service_opens: time = time(8, 0)  # windows lie between these local times ...
    service_closes: time = time(18, 0)  # ...
    slot_minutes: int = Field(30, ge=5, le=240)  # windows start and end on these slots
    max_window_slots: int = Field(4, ge=1)  # a window spans 1..4 slots (30 min .. 2 h)
    min_lead_minutes: int = Field(30, ge=0)  # earliest start: now + lead
    max_days_ahead: int = Field(14, ge=1)  # latest start: this many days from today

    # --- capacity per area (geohash cell) and slot ---------------------------------------------------
    area_precision: int = Field(5, ge=3, le=7)  # 5 ≈ 4.9 km × 4.9 km
    slot_capacity: int = Field(20, ge=0)  # pickups per area per slot; a window takes one place in each slot

    # --- where we collect ------------------------------------------------------------------------------
    # the service area: lat_min,lng_min,lat_max,lng_max boxes separated by ';' (default: mainland China)
    service_area: str = "18.0,73.0,53.6,135.1"
    # an address must lie within this distance of its city_code's seat (0 disables; doubled for prefecture codes)
    max_km_from_region_seat: float = Field(150.0, ge=0)
    max_qty_per_line: int = 5000  # kg or pieces
    min_order_fen: int = Field(0, ge=0)  # a minimum quote total (0: only the per-category minimums apply)

    # --- lifecycle rules -------------------------------------------------------------------------------
    resident_cancel_cutoff_minutes: int = Field(
        60, ge=0
    )  # an accepted pickup can be cancelled until start − this
    expiry_escalation_minutes: int = Field(30, ge=0)  # unaccepted: escalate this long before the window opens
    no_show_wait_minutes: int = Field(15, ge=0)  # the collector waits this long after arriving / the start
    collector_no_show_grace_minutes: int = Field(30, ge=0)  # accepted, not arrived by window end + grace
    weigh_reason_threshold_pct: int = Field(
        10, ge=0
    )  # a weighed line this far from its estimate needs a reason

    # --- the payout saga -------------------------------------------------------------------------------
    # None = enabled when the invoicing service exists in this code base
    invoicing_enabled: bool | None = None
    invoice_timeout_minutes: int = Field(30, ge=0)  # no invoicing answer by then: pay gross
    # a payout still `requested` this long after it was (last) requested is requested again, under the same
    # payout id (payments pays an id at most once): a request or its answer lost on the way never strands it
    payout_rerequest_minutes: int = Field(10, ge=1)

    # --- timers, dispatch, live feed -------------------------------------------------------------------
    timer_interval_s: float = 60.0  # Celery beat period of the timer scan
    timer_batch: int = 500  # due pickups per scan
    price_cache_s: float = Field(5.0, ge=0)  # how long a process reuses the price copy it read for a city
    # GET /v1/jobs and the feed look at most this far (and within the collector's own radius)
    jobs_max_radius_km: float = 50.0
    feed_poll_interval_s: float = 0.2  # the feed's pump reads the topic this often while nothing new comes
    feed_heartbeat_s: float = 15.0  # an idle stream gets a comment line this often (proxies keep it open)
    # frames one listener may lag behind; past it, its stream is closed (the client reconnects)
    feed_queue_size: int = 256

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)
        return v

    @field_validator("service_area")
    @classmethod
    def _area(cls, v: str) -> str:
        _parse_boxes(v)
        return v

    @model_validator(mode="after")
    def _hours(self) -> BookingSettings:
        if self.service_opens >= self.service_closes:
            raise ValueError("service_opens must be before service_closes")
        for t in (self.service_opens, self.service_closes):
            if (t.hour * 60 + t.minute) % self.slot_minutes or t.second or t.microsecond:
                raise ValueError("service hours must fall on slot boundaries")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def area_boxes(self) -> list[tuple[float, float, float, float]]:
        return _parse_boxes(self.service_area)

    def in_service_area(self, lat: float, lng: float) -> bool:
        return any(a <= lat <= c and b <= lng <= d for a, b, c, d in self.area_boxes)

    @property
    def invoicing_on(self) -> bool:
        if self.invoicing_enabled is not None:
            return self.invoicing_enabled
        return _invoicing_exists()


@functools.lru_cache(maxsize=32)
def _parse_boxes(value: str) -> list[tuple[float, float, float, float]]:
    boxes = []
    for part in value.split(";"):
        if not part.strip():
            continue
        nums = [float(x) for x in part.split(",")]
        if len(nums) != 4 or nums[0] >= nums[2] or nums[1] >= nums[3]:
            raise ValueError(f"service area box {part!r}: give lat_min,lng_min,lat_max,lng_max")
        boxes.append((nums[0], nums[1], nums[2], nums[3]))
    if not boxes:
        raise ValueError("the service area needs at least one box")
    return boxes


@functools.lru_cache(maxsize=1)
def _invoicing_exists() -> bool:
    from services.kernel.runtime import available_services

    return "invoicing" in available_services()


SETTINGS: Port[BookingSettings] = Port("booking.settings")
PRICE_CACHE: Port[PriceCache] = Port("booking.price_cache")


def settings_of(rt: ServiceRuntime) -> BookingSettings:
    return rt.ports.get_or_set(SETTINGS, BookingSettings)


def configure(rt: ServiceRuntime, **overrides: Any) -> BookingSettings:
    """Replace the runtime's booking settings (tests, benchmarks): defaults + environment + `overrides`."""
    s = BookingSettings(**overrides)
    rt.ports[SETTINGS] = s
    rt.ports.pop(PRICE_CACHE)
    return s


def price_cache(rt: ServiceRuntime) -> PriceCache:
    from .prices import PriceCache

    return rt.ports.get_or_set(PRICE_CACHE, lambda: PriceCache(settings_of(rt).price_cache_s))
