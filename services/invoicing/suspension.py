"""Issuer suspension for unpaid tax: a month's tax recorded as unpaid suspends the issuer from the day after its
filing deadline (15th of the next month by default, `service_rules.toml` [[filing_deadline]]) until it is
recorded as paid. While suspended, new reverse invoices are blocked with reason `issuer_suspended`; red letters
are still possible (they only reduce tax)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from services.kernel import idempotency
from services.kernel.db import UnitOfWork
from services.kernel.errors import Conflict, NotFound
from services.kernel.runtime import ServiceRuntime

from .ledger import parse_period
from .settings import service_rule_book, settings_of
from .store import issuers, tax_unpaid
from .views import issuer_status


def record_tax_status(
    rt: ServiceRuntime,
    *,
    firm_id: str,
    period: str,
    status: str,
    by: str,
    amount_fen: int | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record period `period` (YYYY-MM) of `firm_id` as unpaid, or as paid again. Returns the issuer's status."""
    year, month = parse_period(period)
    period = f"{year:04d}-{month:02d}"
    now = now or datetime.now(UTC)
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        if s.execute(select(issuers.c.firm_id).where(issuers.c.firm_id == firm_id)).first() is None:
            raise NotFound(
                f"no verified firm {firm_id} is known to invoicing",
                errors=[{"field": "firm_id", "message": "must name a verified firm"}],
            )
        row = s.execute(
            select(tax_unpaid)
            .where(tax_unpaid.c.firm_id == firm_id, tax_unpaid.c.period == period)
            .with_for_update()
        ).one_or_none()
        idempotency.made(firm_id)
        if status == "unpaid":
            values = dict(
                amount_fen=amount_fen, note=note, recorded_at=now, recorded_by=by, paid_at=None, paid_by=None
            )
            if row is None:
                s.execute(tax_unpaid.insert().values(firm_id=firm_id, period=period, **values))
            else:
                s.execute(
                    update(tax_unpaid)
                    .where(tax_unpaid.c.firm_id == firm_id, tax_unpaid.c.period == period)
                    .values(**values)
                )
        else:
            if row is None:
                raise Conflict(
                    f"the tax of {period} of firm {firm_id} was never recorded as unpaid",
                    current_state="none",
                )
            if row.paid_at is None:
                s.execute(
                    update(tax_unpaid)
                    .where(tax_unpaid.c.firm_id == firm_id, tax_unpaid.c.period == period)
                    .values(paid_at=now, paid_by=by, note=note if note is not None else row.note)
                )
    return status_of(rt, firm_id)


def status_of(rt: ServiceRuntime, firm_id: str) -> dict[str, Any]:
    with UnitOfWork(rt.db, readonly=True) as uow:
        return issuer_status(uow.session, firm_id, settings_of(rt).today(), service_rule_book(rt))
