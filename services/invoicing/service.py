"""The invoicing service: reverse invoices (反向开票), red letters, seller caps, tax exports."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec
from services.kernel.settings import ConfigError

from .api import router
from .consumers import consumers
from .domain.tax_config import TaxConfigError
from .settings import service_rule_book, settings_of, tax_rule_book
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Load both rule books at start (a bad file stops start-up, naming the entry) and check that every location
    class the service rules can give an issuer has a 城市维护建设税 rate on the day it starts to apply."""
    settings_of(rt)
    try:
        taxes, service = tax_rule_book(rt), service_rule_book(rt)
    except TaxConfigError as exc:
        raise ConfigError(f"invoicing rule files: {exc}") from exc
    for entry in service.location_class:
        day = max(entry.effective_from, taxes.regime[0].effective_from)
        known = taxes.rules_for(day).location_classes
        classes = {entry.value.default, *(c for _, c in entry.value.by_city)}
        unknown = classes - known if known else set()
        if unknown:
            raise ConfigError(
                f"service_rules.toml location_class from {entry.effective_from}: unknown classes "
                f"{sorted(unknown)} (tax_rules.toml has {sorted(known)})"
            )


def _fail_interrupted_exports(rt: ServiceRuntime) -> None:
    """An export run in a thread of a process of this host that is gone will never finish: say so (the user
    requests it again). Celery jobs are left alone: their task is redelivered (acks_late)."""
    import os
    import socket
    from datetime import UTC, datetime

    from sqlalchemy import select, update

    from services.kernel.db import UnitOfWork

    from .store import exports

    host = socket.gethostname()
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        for job_id, worker in s.execute(
            select(exports.c.id, exports.c.worker).where(
                exports.c.runner == "thread", exports.c.status.in_(("queued", "running"))
            )
        ).all():
            name, _, pid = (worker or "").rpartition(":")
            if name != host or not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
                continue  # still alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            s.execute(
                update(exports)
                .where(exports.c.id == job_id)
                .values(
                    status="failed",
                    error="interrupted: the process running it stopped; request the export again",
                    finished_at=datetime.now(UTC),
                )
            )


def setup_and_recover(rt: ServiceRuntime) -> None:
    setup(rt)
    _fail_interrupted_exports(rt)


SERVICE = ServiceSpec(
    name="invoicing", metadata=metadata, router=router, consumers=consumers, setup=setup_and_recover
)
