"""Pricing's handlers: one unit of work each (the API, the consumers, the jobs and the CLI call these)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from services.kernel import idempotency
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork
from services.kernel.errors import Forbidden, NotFound, RuleViolated, ValidationFailed
from services.kernel.ids import new_id
from services.kernel.money import qty_str
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import categories

from . import queries
from .compute import CATCH_UP, DayOutcome, compute_day, compute_missing_day, due_days, missing_days
from .domain.commands import (
    ComputeRequest,
    HistoryParams,
    InputsParams,
    NoticesParams,
    RecordObservation,
    ValueParams,
)
from .domain.methodology import load_methodology
from .domain.observations import (
    SOURCE_API,
    ObservationDraft,
    firm_report_is_self_dealing,
    tier_for_firm_report,
)
from .domain.publication import latest_published_day
from .intake import record_observations
from .settings import settings_of
from .store import observations

# --------------------------------------------------------------------------------------------- intake


def _reporting_firm(user: Principal, firm_id: str | None) -> str:
    """The firm a report is made for: the one named (it must be the caller's), else the caller's only firm.

    A firm-role token without firms (older tokens) reports as the user itself."""
    if firm_id is not None:
        if firm_id not in user.firm_ids:
            raise Forbidden(f"you do not act for firm {firm_id}", reason="not_firm_member")
        return firm_id
    if len(user.firm_ids) > 1:
        raise ValidationFailed.field("firm_id", "you act for several firms: say which one reports")
    return next(iter(user.firm_ids), f"user:{user.user_id}")


def record_firm_observation(
    rt: ServiceRuntime, user: Principal, body: RecordObservation, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/prices/observations: a firm's trade or quote, tiered and checked, stored for the index."""
    m = load_methodology()
    now = now or datetime.now(UTC)
    if body.category not in m.categories:
        raise RuleViolated(
            f"category {body.category} is not priced by methodology {m.version}",
            reason="category_not_indexed",
            field="category",
        )
    if body.observed_at > now + timedelta(seconds=settings_of(rt).max_clock_skew_s):
        raise RuleViolated("observed_at is in the future", reason="observed_in_future", field="observed_at")
    if body.observed_at < now - timedelta(days=m.late_data_days):
        raise RuleViolated(
            f"observed_at is more than {m.late_data_days} days ago (the methodology's late-data "
            "window); ask the index administrator for a correction",
            reason="too_late",
            field="observed_at",
        )
    firm = _reporting_firm(user, body.firm_id)
    evidence = f"{body.evidence.kind}:{body.evidence.number}" if body.evidence else None
    draft = ObservationDraft(
        category=body.category,
        city_code=body.city_code,
        unit_price_fen=body.unit_price_fen,
        qty=body.qty,
        kind=body.kind,
        tier=tier_for_firm_report(body.kind, evidence),
        counterparty=f"firm:{firm}",
        related_party=firm_report_is_self_dealing(firm, body.counterparty_firm_id, user.firm_ids),
        source=SOURCE_API,
        source_ref=user.user_id,
        source_key=f"{SOURCE_API}:{new_id('ob')}",
        observed_at=body.observed_at,
        evidence=evidence,
    )
    with UnitOfWork(rt.db) as uow:
        (recorded,) = record_observations(uow, [draft], methodology=m, now=now)
        idempotency.made(str(recorded.id))
    return recorded.view()


def firm_observation_made(
    rt: ServiceRuntime, user: Principal, observation_id: str, body: RecordObservation
) -> dict[str, Any]:
    """`record_firm_observation`'s reply for the input it recorded (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        o = uow.session.execute(
            select(observations).where(
                observations.c.id == int(observation_id),
                observations.c.source == SOURCE_API,
                observations.c.source_ref == user.user_id,
            )
        ).first()
    if o is None:
        raise NotFound(f"no observation of yours with id {observation_id}")
    return dict(
        id=o.id,
        category=o.category,
        city_code=o.city_code,
        unit_price_fen=o.unit_price_fen,
        qty=qty_str(Decimal(o.qty_milli) / 1000),
        kind=o.kind,
        tier=o.tier,
        related_party=o.related_party,
        observed_at=o.observed_at.astimezone(body.observed_at.tzinfo),  # stored in UTC; reported as sent
        day=o.day,
        recorded_at=o.received_at,
    )


# --------------------------------------------------------------------------------------------- computing


def compute(
    rt: ServiceRuntime,
    day: Any,
    *,
    trigger: str,
    requested_by: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> DayOutcome:
    return compute_day(rt.db, day, trigger=trigger, requested_by=requested_by, reason=reason, now=now)


def compute_on_request(
    rt: ServiceRuntime, user: Principal, body: ComputeRequest, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/admin/prices/compute: the daily job for one day, on demand (a restatement if it changed)."""
    return compute(
        rt, body.date, trigger="api", requested_by=user.user_id, reason=body.reason, now=now
    ).view()


def _summary(o: DayOutcome, trigger: str) -> dict[str, Any]:
    return {k: v for k, v in o.view().items() if k not in ("series", "notices")} | {"trigger": trigger}


def catch_up(
    rt: ServiceRuntime, now: datetime | None = None, before: date | None = None
) -> list[dict[str, Any]]:
    """The catch-up timer: compute every day published within `PRICING_CATCHUP_DAYS` that has no computation
    (its worker died or was down at the publication time), oldest first; with `before`, only days before it.
    A day another worker computes meanwhile is skipped, never computed twice."""
    m = load_methodology()
    out = []
    for day in missing_days(rt.db, m, now, settings_of(rt).catchup_days):
        if before is not None and day >= before:
            break
        o = compute_missing_day(
            rt.db, day, trigger=CATCH_UP, reason="not computed at its publication time", now=now
        )
        if o is not None:
            out.append(_summary(o, CATCH_UP))
    return out


def run_daily(rt: ServiceRuntime, now: datetime | None = None) -> list[dict[str, Any]]:
    """The scheduled job: catch up missed earlier days (oldest first, so the day's family indices chain-link
    over them), publish the due day, then recompute days that received late inputs."""
    m = load_methodology()
    publish = latest_published_day(now or datetime.now(UTC), m.specification)
    out = catch_up(rt, now, before=publish)
    for day in due_days(rt.db, m, now, settings_of(rt).max_restatement_days_per_run):
        o = compute(rt, day, trigger="schedule", reason=None if day == publish else "late data", now=now)
        out.append(_summary(o, "schedule"))
    return out


# --------------------------------------------------------------------------------------------- reading


def _page(rt: ServiceRuntime, limit: int | None) -> int:
    s = settings_of(rt)
    return min(limit or s.page_default, s.page_max)


def _check_code(code: str) -> None:
    m = load_methodology()
    if code not in m.categories and code not in m.families and code not in categories():
        raise ValidationFailed.field(
            "code",
            f"unknown series {code!r}: a category code or one of the family indices {', '.join(m.families)}",
        )


def quote(rt: ServiceRuntime, category: str, city_code: str) -> dict[str, Any]:
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.quote(
            uow.session, category, city_code, max_age_days=settings_of(rt).quote_max_age_days
        )


def _history_query(rt: ServiceRuntime, p: HistoryParams) -> queries.HistoryQuery:
    _check_code(p.code)
    return queries.HistoryQuery(
        code=p.code,
        region=p.region,
        date_from=p.from_,
        date_to=p.to,
        version=p.version,
        all_versions=p.all_versions,
        as_of=p.as_of,
        limit=_page(rt, p.limit),
        cursor=p.cursor,
    )


def history(rt: ServiceRuntime, p: HistoryParams) -> dict[str, Any]:
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.history(uow.session, _history_query(rt, p))


def history_csv(rt: ServiceRuntime, p: HistoryParams) -> str:
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.history_csv(uow.session, _history_query(rt, p))


def day_inputs(rt: ServiceRuntime, p: InputsParams) -> dict[str, Any]:
    if p.category and p.category not in categories():
        raise ValidationFailed.field("category", f"unknown category {p.category!r}")
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.day_inputs(
            uow.session,
            p.date,
            category=p.category,
            city_code=p.city_code,
            tier=p.tier,
            limit=p.limit,
            cursor=p.cursor,
        )


def notices(rt: ServiceRuntime, p: NoticesParams) -> dict[str, Any]:
    if p.code:
        _check_code(p.code)
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.notices(
            uow.session,
            code=p.code,
            region=p.region,
            date_from=p.from_,
            date_to=p.to,
            limit=_page(rt, p.limit),
            cursor=p.cursor,
        )


def disclosure(rt: ServiceRuntime, p: ValueParams) -> dict[str, Any]:
    _check_code(p.code)
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.disclosure(uow.session, p.code, p.region, p.date, p.version)


def audit_inputs(rt: ServiceRuntime, p: ValueParams) -> dict[str, Any]:
    _check_code(p.code)
    with UnitOfWork(rt.db, readonly=True) as uow:
        return queries.audit_inputs(uow.session, p.code, p.region, p.date, p.version)
