"""Stats settings, read from the environment with the prefix `STATS_`, and the two tables it reads at start
(the emission factors and the low-value lists; a deployment may name its own files)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .domain.flows import local_day

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

    from .domain.factors import FactorTable, LowValueLists

HERE = Path(__file__).parent


class StatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STATS_", case_sensitive=False, extra="ignore")

    # figures are by calendar day in China: a pickup settled at 23:30 on 30 Nov (UTC+8) is a November figure
    timezone: str = "Asia/Shanghai"
    factors_file: str = ""  # "" = the shipped carbon_factors.toml
    low_value_file: str = ""  # "" = the shipped low_value.toml
    # the widest range one request may ask for (days); a monthly report is one month
    max_days: int = Field(3700, ge=31)
    # rebuild: records read from the log per batch (one transaction each)
    rebuild_batch: int = Field(500, ge=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_date(self, at: datetime) -> date:
        return local_day(at, self.tz)


def settings_of(rt: ServiceRuntime) -> StatsSettings:
    s = rt.ports.get("stats_settings")
    if s is None:
        s = rt.ports["stats_settings"] = StatsSettings()
    return s


def configure(rt: ServiceRuntime, **overrides: Any) -> StatsSettings:
    """Replace the runtime's stats settings (tests): defaults + environment + `overrides`."""
    s = StatsSettings(**overrides)
    rt.ports["stats_settings"] = s
    rt.ports.pop("stats_factors", None)
    rt.ports.pop("stats_low_value", None)
    return s


def load_factors(settings: StatsSettings) -> FactorTable:
    from services.kernel.taxonomy import leaves

    from .domain.factors import parse_factor_table

    path = Path(settings.factors_file) if settings.factors_file else HERE / "carbon_factors.toml"
    return parse_factor_table(path.read_text(encoding="utf-8"), leaves())


def load_low_value(settings: StatsSettings) -> LowValueLists:
    from services.kernel.taxonomy import leaves

    from .domain.factors import parse_low_value

    path = Path(settings.low_value_file) if settings.low_value_file else HERE / "low_value.toml"
    return parse_low_value(path.read_text(encoding="utf-8"), leaves())


def factors_of(rt: ServiceRuntime) -> FactorTable:
    table = rt.ports.get("stats_factors")
    if table is None:
        table = rt.ports["stats_factors"] = load_factors(settings_of(rt))
    return table


def low_value_of(rt: ServiceRuntime) -> LowValueLists:
    lists = rt.ports.get("stats_low_value")
    if lists is None:
        lists = rt.ports["stats_low_value"] = load_low_value(settings_of(rt))
    return lists
