"""Stats settings, read from the environment with the prefix `STATS_`, and the two tables it reads at start
(the emission factors and the low-value lists; a deployment may name its own files)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

from .domain.flows import local_day

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

    from .domain.factors import FactorTable, LowValueLists

HERE = Path(__file__).parent


class StatsSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="STATS_", case_sensitive=False, extra="forbid")

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


SETTINGS: Port[StatsSettings] = Port("stats.settings")
FACTORS: Port[FactorTable] = Port("stats.factors")
LOW_VALUE: Port[LowValueLists] = Port("stats.low_value")


def settings_of(rt: ServiceRuntime) -> StatsSettings:
    return rt.ports.get_or_set(SETTINGS, StatsSettings)


def configure(rt: ServiceRuntime, **overrides: Any) -> StatsSettings:
    """Replace the runtime's stats settings (tests): defaults + environment + `overrides`."""
    s = StatsSettings(**overrides)
    rt.ports[SETTINGS] = s
    rt.ports.pop(FACTORS)
    rt.ports.pop(LOW_VALUE)
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
    return rt.ports.get_or_set(FACTORS, lambda: load_factors(settings_of(rt)))


def low_value_of(rt: ServiceRuntime) -> LowValueLists:
    return rt.ports.get_or_set(LOW_VALUE, lambda: load_low_value(settings_of(rt)))
