"""When a day is published (发布时间), and which days a catch-up owes: pure date arithmetic, no I/O.

Day D is published at the methodology's publication time, in its time zone, on D + publication lag (at least one
day: a day's window must have closed). A day whose publication instant has not come is never computed by the
scheduled jobs, even if its window has closed. Days are compared by instant, not by wall clock, so a
publication time that falls in a daylight-saving gap or repeat still gives each day exactly one instant and
the days' instants one order.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .methodology import Specification


def publication_lag(spec: Specification) -> int:
    return max(spec.publication_lag_days, 1)


def publication_instant(day: date, spec: Specification) -> datetime:
    """The moment day `day` is published, in UTC. (Python compares two datetimes of the same zone by wall
    clock, which is wrong across a daylight-saving change: instants are compared in UTC.)"""
    hour, minute = (int(x) for x in spec.publication_time.split(":"))
    local = day + timedelta(days=publication_lag(spec))
    return datetime.combine(local, time(hour, minute), ZoneInfo(spec.timezone)).astimezone(UTC)


def latest_published_day(now: datetime, spec: Specification) -> date:
    """The newest day whose publication instant is at or before `now`."""
    if now.tzinfo is None:
        raise ValueError("now must be time-zone aware")
    now = now.astimezone(UTC)
    day = now.astimezone(ZoneInfo(spec.timezone)).date() - timedelta(days=publication_lag(spec) - 1)
    # D's instant is on D + lag at the publication time: a step or two back (a gap moves it later)
    while publication_instant(day, spec) > now:
        day -= timedelta(days=1)
    return day


def days_to_catch_up(
    now: datetime,
    spec: Specification,
    *,
    effective_from: date,
    horizon_days: int,
    computed: Collection[date],
) -> list[date]:
    """The days published within the last `horizon_days` publications (on or after `effective_from`) that have
    no computation yet, oldest first (a family index chain-links over the days before it)."""
    if horizon_days <= 0:
        return []
    latest = latest_published_day(now, spec)
    first = max(latest - timedelta(days=horizon_days - 1), effective_from)
    days = (first + timedelta(days=i) for i in range((latest - first).days + 1))
    return [d for d in days if d not in computed]
