"""Invoicing's settings, read from the environment with the prefix `INVOICING_`.

The tax law itself (rates, thresholds, dates) is not here: it is date-effective configuration in
`tax_rules.toml` and `service_rules.toml` (or a deployment's own files named by `INVOICING_TAX_RULES_FILE` and
`INVOICING_SERVICE_RULES_FILE`). These settings say how the service runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

    from .domain.service_rules import ServiceRuleBook
    from .domain.tax_config import TaxRuleBook


class InvoicingSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="INVOICING_", case_sensitive=False, extra="forbid")

    # invoices are dated in China's time zone: a pickup settled at 23:30 UTC+8 on 30 Nov is a November invoice
    timezone: str = "Asia/Shanghai"
    # a deployment's own rule files ("" = the shipped ones)
    tax_rules_file: str = ""
    service_rules_file: str = ""
    # 三流合一 for pickups: the platform holds the weighing record and booking pays the resident (the seller)
    # into their own verified account, so it holds by construction. Off only for a deployment that pays otherwise.
    pickups_three_flows: bool = True

    # exports: where files go ("{data_dir}" is replaced), who runs them (auto: a background thread in tests,
    # Celery otherwise), how many rows per fetch and per progress update
    export_dir: str = "{data_dir}/exports/invoicing"
    export_runner: Literal["auto", "celery", "thread"] = "auto"
    export_fetch_rows: int = Field(5000, ge=100)
    export_progress_every: int = Field(20000, ge=100)
    # a Celery job still queued this long after it was sent is sent again (its message was lost or went to a
    # broker nobody consumes), a thread job still queued this long is run again (its thread never claimed it); the
    # worker's beat looks every `export_requeue_every_s`
    export_queued_deadline_s: float = Field(120.0, gt=0)
    export_requeue_every_s: float = Field(60.0, gt=0)
    # a Celery job `running` whose heartbeat (written every quarter of this, at most every 30 s) is this old is
    # sent again: its worker died mid-task, and the embedded broker (kombu's SQLAlchemy transport) deleted the
    # message when it was fetched, so nothing else would ever redeliver it; a thread job so silent is run again
    # (its process, on another host, died: one of this host is known dead by its pid at once)
    export_stalled_s: float = Field(600.0, gt=0)
    # download chunk size
    export_chunk_bytes: int = Field(256 * 1024, ge=4096)

    # lists
    list_default_limit: int = Field(50, ge=1)
    list_max_limit: int = Field(500, ge=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_date(self, at: datetime) -> date:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return at.astimezone(self.tz).date()

    def today(self) -> date:
        return self.local_date(datetime.now(UTC))


SETTINGS: Port[InvoicingSettings] = Port("invoicing.settings")
TAX_RULE_BOOK: Port[TaxRuleBook] = Port("invoicing.tax_rule_book")
SERVICE_RULE_BOOK: Port[ServiceRuleBook] = Port("invoicing.service_rule_book")


def settings_of(rt: ServiceRuntime) -> InvoicingSettings:
    return rt.ports.get_or_set(SETTINGS, InvoicingSettings)


def configure(rt: ServiceRuntime, **overrides: Any) -> InvoicingSettings:
    """Replace the runtime's invoicing settings (tests, benchmarks): defaults + environment + `overrides`."""
    s = InvoicingSettings(**overrides)
    rt.ports[SETTINGS] = s
    rt.ports.pop(TAX_RULE_BOOK)
    rt.ports.pop(SERVICE_RULE_BOOK)
    return s


def tax_rule_book(rt: ServiceRuntime) -> TaxRuleBook:
    from .domain.tax_config import load_rule_book

    return rt.ports.get_or_set(TAX_RULE_BOOK, lambda: load_rule_book(settings_of(rt).tax_rules_file or None))


def service_rule_book(rt: ServiceRuntime) -> ServiceRuleBook:
    from .domain.service_rules import load_service_rules

    return rt.ports.get_or_set(
        SERVICE_RULE_BOOK, lambda: load_service_rules(settings_of(rt).service_rules_file or None)
    )


def export_dir(rt: ServiceRuntime) -> Path:
    path = Path(settings_of(rt).export_dir.format(data_dir=rt.settings.data_dir))
    path.mkdir(parents=True, exist_ok=True)
    return path
