"""Timers: what happens because time passed. The state is in the pickups table and every scan selects the rows
that are due now, so nothing is lost across restarts and a scan missed while the workers were down is caught up
by the next one. Each row changes in its own unit of work under a conditional UPDATE, so two scans running at
once (or a scan racing a collector's accept) cannot both act.

Run by Celery beat (services/booking/tasks.py) every `timer_interval_s`; tests call `run_due(rt, now)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from services.contracts.payments import PayoutRequested
from services.kernel.runtime import ServiceRuntime
from services.kernel.sweep import each_due

from .domain import model as m
from .domain.events import PickupExpiryEscalated, PickupNoShow
from .handlers import FEED_PRECISION, Tx, expire_row
from .saga import start_payout
from .settings import settings_of
from .store import payouts, pickups

log = logging.getLogger(__name__)


def run_due(rt: ServiceRuntime, now: datetime | None = None) -> dict[str, int]:
    """Escalate, expire, record collector no-shows and time out invoices that are due at `now`."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    soon = now + timedelta(minutes=s.expiry_escalation_minutes)
    return {
        "escalated": _each(
            rt,
            s.timer_batch,
            select(pickups).where(
                pickups.c.status == m.REQUESTED,
                pickups.c.window_start <= soon,
                pickups.c.window_start > now,
                pickups.c.escalated_at.is_(None),
            ),
            lambda uow, row: _escalate(uow, row, now),
        ),
        "expired": _each(
            rt,
            s.timer_batch,
            select(pickups).where(pickups.c.status == m.REQUESTED, pickups.c.window_start <= now),
            lambda uow, row: expire_row(uow, row, now, s),
        ),
        "collector_no_show": _each(
            rt,
            s.timer_batch,
            select(pickups).where(
                pickups.c.status == m.ACCEPTED,
                pickups.c.window_end <= now - timedelta(minutes=s.collector_no_show_grace_minutes),
            ),
            lambda uow, row: _collector_no_show(uow, row, now),
        ),
        "invoice_timed_out": _each(
            rt,
            s.timer_batch,
            select(pickups).where(
                pickups.c.invoice_status == m.INVOICE_AWAITING,
                pickups.c.settled_at <= now - timedelta(minutes=s.invoice_timeout_minutes),
            ),
            lambda uow, row: start_payout(
                uow, row.id, withheld_fen=0, invoice_status=m.INVOICE_TIMED_OUT, invoice_id=None, now=now
            ),
        ),
        "payout_rerequested": rerequest_stuck_payouts(rt, now, s.payout_rerequest_minutes, s.timer_batch),
    }


def rerequest_stuck_payouts(rt: ServiceRuntime, now: datetime, after_minutes: int, batch: int) -> int:
    """Request again every payout still `requested` `after_minutes` after it was last requested: the same payout
    id, so payments pays it at most once; `requested_at` moves to now (the next try is another period away)."""
    cutoff = now - timedelta(minutes=after_minutes)
    with rt.db.session(readonly=True) as s:
        stuck = s.execute(
            select(payouts, pickups.c.resident_id)
            .join(pickups, pickups.c.payout_id == payouts.c.payout_id)
            .where(payouts.c.status == "requested", payouts.c.requested_at <= cutoff)
            .order_by(payouts.c.requested_at)
            .limit(batch)
        ).all()
    done = 0
    for row in stuck:
        try:
            with Tx(rt) as uow:
                claimed = uow.session.execute(
                    update(payouts)
                    .where(
                        payouts.c.payout_id == row.payout_id,
                        payouts.c.status == "requested",
                        payouts.c.requested_at <= cutoff,
                    )
                    .values(requested_at=now)
                ).rowcount
                if claimed != 1:
                    continue  # answered, or re-requested by another scan, meanwhile
                uow.emit(
                    PayoutRequested(
                        payout_id=row.payout_id,
                        payee_user_id=row.payee_user_id,
                        amount_fen=row.amount_fen,
                        purpose="pickup",
                        reference_id=row.pickup_id,
                        requested_by="booking",
                        requested_at=now,
                    )
                )
                done += 1
            log.warning(
                "payout %s of pickup %s still requested; requested again", row.payout_id, row.pickup_id
            )
        except Exception:  # one bad row must not stop the others; the next scan retries it
            log.exception("booking timer failed to re-request payout %s", row.payout_id)
    return done


def _each(rt: ServiceRuntime, batch: int, query: Any, act: Callable[[Tx, Any], bool]) -> int:
    """Apply `act` to every due row, one unit of work each; returns how many changed."""

    def in_own_tx(row: Any) -> bool:
        with Tx(rt) as uow:
            return act(uow, row)

    return each_due(rt.db, query, pickups.c.id, batch, in_own_tx, "booking timer failed on pickup")


def _escalate(uow: Tx, row: Any, now: datetime) -> bool:
    res = uow.session.execute(
        update(pickups)
        .where(pickups.c.id == row.id, pickups.c.status == m.REQUESTED, pickups.c.escalated_at.is_(None))
        .values(escalated_at=now, version=pickups.c.version + 1, updated_at=now)
    )
    if res.rowcount != 1:
        return False
    start = row.window_start
    uow.emit(
        PickupExpiryEscalated(
            pickup_id=row.id,
            city_code=row.city_code,
            district=row.district,
            geohash=row.geohash[:FEED_PRECISION],
            window_start=start,
            minutes_left=max(int((start - now).total_seconds() // 60), 0),
            escalated_at=now,
        )
    )
    return True


def _collector_no_show(uow: Tx, row: Any, now: datetime) -> bool:
    """Accepted, and nobody arrived by the end of the window plus the grace period."""
    res = uow.session.execute(
        update(pickups)
        .where(pickups.c.id == row.id, pickups.c.status == m.ACCEPTED)
        .values(
            status=m.NO_SHOW,
            no_show_party="collector",
            closed_at=now,
            closed_by="system",
            version=pickups.c.version + 1,
            updated_at=now,
        )
    )
    if res.rowcount != 1:
        return False
    uow.emit(
        PickupNoShow(pickup_id=row.id, party="collector", collector_id=row.collector_id, recorded_at=now)
    )
    return True
