"""Listings' settings, from the environment with the prefix `LISTINGS_`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.contracts.payments import HOLD_VALID_DAYS
from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

DEFAULT_PROHIBITED_WORDS = (
    # weapons and dangerous goods
    "枪支",
    "仿真枪",
    "气枪",
    "弹药",
    "子弹",
    "管制刀具",
    "弩",
    "炸药",
    "烟花爆竹",
    # drugs and prescription medicine
    "毒品",
    "冰毒",
    "大麻",
    "摇头丸",
    "处方药",
    # counterfeits
    "高仿",
    "a货",
    "假货",
    "复刻",
    "仿牌",
    # personal data and identity documents sold as such
    "身份证",
    "银行卡",
    "公民信息",
    "个人信息",
    "实名手机卡",
    "数据包",
    "通讯录",
)


class ListingsSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="LISTINGS_", case_sensitive=False, extra="forbid")

    # second-hand categories file ("" = the shipped categories.toml)
    categories_file: str = ""
    prohibited_categories: list[str] = Field(default_factory=lambda: ["hazardous.battery"])
    prohibited_words: list[str] = Field(default_factory=lambda: list(DEFAULT_PROHIBITED_WORDS))

    # the embedded search index ("{data_dir}" is replaced)
    search_path: str = "{data_dir}/listings-search.db"
    elasticsearch_index: str = "listings"
    # relevance: past this many hits, BM25 scores only the most recently indexed ones (0 = score every hit)
    search_rank_window: int = Field(5000, ge=0)
    # queries whose hits (rowids and ranks) the embedded index keeps until its next write (0 = no cache)
    search_cache_entries: int = Field(256, ge=0)

    # orders with escrow
    payment_minutes: int = Field(30, ge=1)  # unpaid orders expire after this
    # paid orders not shipped this long after the buyer's authorisation are cancelled and the hold released: the
    # seller ships (and the money is captured into escrow) while the authorisation still stands
    ship_days: float = Field(3, gt=0)
    auto_confirm_days: float = Field(10, gt=0)  # shipped orders are confirmed for the buyer after this
    platform_fee_bps: int = Field(100, ge=0, le=5000)  # 1 %
    min_fee_fen: int = Field(0, ge=0)
    # POST /v1/orders waits this long for payments to open the payment (so the reply carries it); 0 = do not wait
    payment_wait_s: float = Field(2.0, ge=0)

    # timers (Celery beat) and lists
    timer_interval_s: int = Field(30, ge=1)
    timer_batch: int = Field(200, ge=1)
    search_max_limit: int = Field(
        100, ge=1
    )  # the largest `limit` of GET /v1/listings/search (a page of hits)

    @field_validator("ship_days")
    @classmethod
    def _ship_before_the_hold_lapses(cls, v: float) -> float:
        if v >= HOLD_VALID_DAYS:
            raise ValueError(
                f"LISTINGS_SHIP_DAYS must be below {HOLD_VALID_DAYS} days, the time a card authorisation stays "
                "capturable at the payment provider: an order shipped later could not be captured into escrow"
            )
        return v


SETTINGS: Port[ListingsSettings] = Port("listings.settings")


def settings_of(rt: ServiceRuntime) -> ListingsSettings:
    return rt.ports.get_or_set(SETTINGS, ListingsSettings)


def configure(rt: ServiceRuntime, **overrides: Any) -> ListingsSettings:
    """Replace the runtime's listings settings (tests, benchmarks): defaults + environment + `overrides`."""
    s = ListingsSettings(**overrides)
    rt.ports[SETTINGS] = s
    return s
