"""Property tests of the publication calendar: which day is published at a moment, and which days a catch-up
owes (hypothesis, over every time zone, publication time, lag, horizon and set of days already computed)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.pricing.domain.methodology import Specification, load_methodology
from services.pricing.domain.publication import (
    days_to_catch_up,
    latest_published_day,
    publication_instant,
)

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAY = timedelta(days=1)


@st.composite
def specifications(draw: st.DrawFn) -> Specification:
    return dataclasses.replace(
        load_methodology().specification,
        timezone=draw(st.timezones()).key,
        publication_time=f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from((0, 15, 30, 59))):02d}",
        publication_lag_days=draw(st.integers(0, 3)),  # 0 publishes a day later all the same (window closed)
    )


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.timezones()
)


@PROPS
@given(spec=specifications(), now=moments)
def test_the_latest_published_day_is_the_one_whose_publication_came_last(spec: Specification, now) -> None:  # noqa: ANN001
    d = latest_published_day(now, spec)
    assert publication_instant(d, spec) <= now < publication_instant(d + DAY, spec)
    # its window has closed, wherever `now` is written
    assert d < now.astimezone(ZoneInfo(spec.timezone)).date()
    assert latest_published_day(now.astimezone(UTC), spec) == d


@PROPS
@given(spec=specifications(), now=moments, horizon=st.integers(0, 40), data=st.data())
def test_the_catch_up_owes_exactly_the_uncomputed_published_days_of_the_horizon(  # noqa: ANN001
    spec: Specification, now, horizon: int, data: st.DataObject
) -> None:
    latest = latest_published_day(now, spec)
    effective_from = latest - timedelta(days=data.draw(st.integers(-2, 50), "effective_from back"))
    window = [latest - timedelta(days=n) for n in range(-3, 45)]
    computed = set(data.draw(st.lists(st.sampled_from(window), max_size=30), "computed"))

    days = days_to_catch_up(now, spec, effective_from=effective_from, horizon_days=horizon, computed=computed)

    expected = {
        latest - timedelta(days=n) for n in range(horizon) if latest - timedelta(days=n) >= effective_from
    } - computed
    assert set(days) == expected
    assert days == sorted(days) and len(set(days)) == len(days)  # oldest first, each once
    for d in days:  # none early: each one's publication time has come
        assert publication_instant(d, spec) <= now


@given(
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    local=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
)
@PROPS
def test_the_methodologys_own_calendar_publishes_yesterday_from_ten_oclock(hour, minute, local) -> None:  # noqa: ANN001
    spec = load_methodology().specification
    assert (spec.timezone, spec.publication_time, spec.publication_lag_days) == ("Asia/Shanghai", "10:00", 1)
    now = local.replace(hour=hour, minute=minute, tzinfo=ZoneInfo("Asia/Shanghai"))
    today: date = now.date()
    expected = today - DAY if (hour, minute) >= (10, 0) else today - 2 * DAY
    assert latest_published_day(now, spec) == expected


def test_a_publication_time_in_a_daylight_saving_gap_is_one_instant_compared_as_such() -> None:
    # London skips 01:00–02:00 on 29 March 2026: "01:30" that day is read as 01:30 GMT, i.e. 02:30 BST
    spec = dataclasses.replace(
        load_methodology().specification, timezone="Europe/London", publication_time="01:30"
    )
    london = ZoneInfo("Europe/London")
    assert publication_instant(date(2026, 3, 28), spec) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # by the wall clock 02:15 is after 01:30, but the instant has not come
    assert latest_published_day(datetime(2026, 3, 29, 2, 15, tzinfo=london), spec) == date(2026, 3, 27)
    assert latest_published_day(datetime(2026, 3, 29, 2, 30, tzinfo=london), spec) == date(2026, 3, 28)
