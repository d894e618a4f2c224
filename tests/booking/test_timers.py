"""Timers: escalation and expiry of unaccepted pickups, collector no-shows, the invoice time-out; across restarts;
and the Celery task that runs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.booking import handlers, queries, timers
from services.booking.domain.commands import BookPickup, WeighPickup
from services.booking.settings import configure
from services.booking.store import pickups
from services.bootstrap import Platform
from services.contracts.invoicing import InvoiceIssued
from services.kernel.errors import Conflict
from services.kernel.outbox import outbox_t

from .support import BOOKING_ONLY, booking_body, platform_for, principal, publish, uid, verify_collector
from .test_flow import payout_requests


def _book(rt, resident: str, **kw) -> dict:  # noqa: ANN001
    return handlers.book(rt, principal(resident, "resident"), BookPickup.model_validate(booking_body(**kw)))


def _start(view: dict) -> datetime:
    return datetime.fromisoformat(view["window"]["start"]).astimezone(UTC)


def _events(rt, pickup_id: str, kind: str) -> list:  # noqa: ANN001
    with rt.db.session() as s:
        return s.execute(
            select(outbox_t.c.event_id).where(
                outbox_t.c.key == pickup_id, outbox_t.c.type == f"cn.recycle.booking.pickup.{kind}.v1"
            )
        ).all()


def test_escalation_then_expiry_then_capacity_is_back(sqlite_settings):
    platform = platform_for(sqlite_settings, slot_capacity=1, expiry_escalation_minutes=30)
    rt = platform["booking"]
    view = _book(rt, uid("res"))
    pid, start = view["id"], _start(view)

    assert timers.run_due(rt, start - timedelta(minutes=31))["escalated"] == 0
    assert timers.run_due(rt, start - timedelta(minutes=30))["escalated"] == 1
    assert timers.run_due(rt, start - timedelta(minutes=10)) == {
        "escalated": 0,
        "expired": 0,
        "collector_no_show": 0,
        "invoice_timed_out": 0,
        "payout_rerequested": 0,
    }
    assert len(_events(rt, pid, "expiry_escalated")) == 1
    with pytest.raises(Exception) as exc:  # the slot is full (capacity 1)
        _book(rt, uid("res"))
    assert getattr(exc.value, "extra", {}).get("reason") == "slot_full"

    assert timers.run_due(rt, start)["expired"] == 1
    assert timers.run_due(rt, start + timedelta(minutes=5))["expired"] == 0
    got = queries.get(rt, principal("x", "admin"), pid)
    assert got["status"] == "expired" and got["closed"]["by"] == "system"
    assert len(_events(rt, pid, "expired")) == 1
    _book(rt, uid("res"))  # the place in the slot was given back


def test_accepting_after_the_window_opened_expires_the_job(sqlite_settings):
    platform = platform_for(sqlite_settings)
    rt = platform["booking"]
    col = uid("col")
    verify_collector(platform, col)
    view = _book(rt, uid("res"))
    with pytest.raises(Conflict) as exc:
        handlers.accept(rt, principal(col, "collector"), view["id"], now=_start(view) + timedelta(minutes=1))
    assert exc.value.extra["current_state"] == "expired"
    assert queries.get(rt, principal("x", "admin"), view["id"])["status"] == "expired"


def test_collector_who_never_came_is_a_no_show(sqlite_settings):
    platform = platform_for(sqlite_settings, collector_no_show_grace_minutes=30)
    rt = platform["booking"]
    col = uid("col")
    verify_collector(platform, col)
    view = _book(rt, uid("res"))
    handlers.accept(rt, principal(col, "collector"), view["id"])
    end = datetime.fromisoformat(view["window"]["end"]).astimezone(UTC)
    assert timers.run_due(rt, end + timedelta(minutes=29))["collector_no_show"] == 0
    assert timers.run_due(rt, end + timedelta(minutes=30))["collector_no_show"] == 1
    got = queries.get(rt, principal("x", "admin"), view["id"])
    assert got["status"] == "no_show" and got["closed"]["no_show_party"] == "collector"


def _settled(platform: Platform) -> tuple[str, str, datetime]:
    rt = platform["booking"]
    res, col = uid("res"), uid("col")
    verify_collector(platform, col)
    view = _book(rt, res)
    pid = view["id"]
    c = principal(col, "collector")
    handlers.accept(rt, c, pid)
    handlers.arrive(rt, c, pid)
    handlers.weigh(
        rt,
        c,
        pid,
        WeighPickup.model_validate(
            {
                "lines": [
                    {"category": "paper.cardboard", "qty": "12.5"},
                    {"category": "metal.copper", "qty": "1.2"},
                ]
            }
        ),
    )
    now = datetime.now(UTC)
    handlers.settle(rt, principal(res, "resident"), pid, now=now)
    return pid, res, now


def test_a_payout_stuck_in_requested_is_requested_again_under_the_same_id(sqlite_settings):
    """Fix 11: the request (or payments' answer) was lost on the way; a timer asks again, same payout id, so
    payments still pays it at most once."""
    platform = platform_for(sqlite_settings, invoicing_enabled=False, payout_rerequest_minutes=10)
    rt = platform["booking"]
    pid, _, settled_at = _settled(platform)
    platform.drain()
    [first] = payout_requests(platform.bus, pid)
    assert timers.run_due(rt, settled_at + timedelta(minutes=9))["payout_rerequested"] == 0
    assert timers.run_due(rt, settled_at + timedelta(minutes=10))["payout_rerequested"] == 1
    assert timers.run_due(rt, settled_at + timedelta(minutes=15))["payout_rerequested"] == 0  # asked at +10
    assert timers.run_due(rt, settled_at + timedelta(minutes=20))["payout_rerequested"] == 1
    platform.drain()
    requests = payout_requests(platform.bus, pid)
    assert len(requests) == 3 and {r["payout_id"] for r in requests} == {first["payout_id"]}
    assert {r["amount_fen"] for r in requests} == {first["amount_fen"]}


def test_invoice_time_out_pays_gross_and_a_late_invoice_is_kept_for_reconciliation(sqlite_settings):
    platform = platform_for(
        sqlite_settings, invoicing_enabled=True, invoice_timeout_minutes=30, payout_rerequest_minutes=600
    )
    rt = platform["booking"]
    pid, res, settled_at = _settled(platform)
    assert timers.run_due(rt, settled_at + timedelta(minutes=29))["invoice_timed_out"] == 0
    platform.drain()
    assert payout_requests(platform.bus, pid) == []
    assert timers.run_due(rt, settled_at + timedelta(minutes=30))["invoice_timed_out"] == 1
    assert timers.run_due(rt, settled_at + timedelta(minutes=60))["invoice_timed_out"] == 0
    platform.drain()
    [req] = payout_requests(platform.bus, pid)
    assert req["amount_fen"] == 7150 and req["payout_id"] == "po_" + pid
    # invoicing answers after all: no second payout; what it withheld is kept for reconciliation
    publish(
        platform,
        InvoiceIssued(
            invoice_id="inv_late",
            number="9",
            pickup_id=pid,
            issuer_firm_id="fm_test",
            seller_id=res,
            kind="blue",
            total_fen=7150,
            vat_fen=70,
            surcharges_fen=0,
            iit_fen=36,
            withheld_fen=106,
            issued_at=datetime.now(UTC),
        ),
    )
    assert len(payout_requests(platform.bus, pid)) == 1
    got = queries.get(rt, principal(res, "resident"), pid)
    assert got["invoice"] == {"status": "issued_late", "id": "inv_late"}
    assert got["withheld_fen"] == 0 and got["reconcile_fen"] == 106 and got["payout"]["amount_fen"] == 7150


def test_timers_survive_a_restart(sqlite_settings):
    platform = platform_for(sqlite_settings, invoicing_enabled=True)
    rt = platform["booking"]
    unaccepted = _book(rt, uid("res"), win=None)
    pid, _, settled_at = _settled(platform)
    start = _start(unaccepted)
    # the invoice times out 10 minutes before the window opens: after the first scan, before the second
    timeout = int((start - settled_at).total_seconds() // 60) - 10
    configure(rt, invoicing_enabled=True, invoice_timeout_minutes=timeout)
    due = timers.run_due(rt, start - timedelta(minutes=20))
    assert due["escalated"] == 1 and due["invoice_timed_out"] == 0
    platform.stop()

    # a new process: nothing in memory, everything in the database
    again = Platform(sqlite_settings, services=BOOKING_ONLY).prepare()
    rt2 = again["booking"]
    configure(rt2, invoicing_enabled=True, invoice_timeout_minutes=timeout)
    due = timers.run_due(rt2, start + timedelta(minutes=1))
    assert due["escalated"] == 0 and due["expired"] == 1 and due["invoice_timed_out"] == 1
    with rt2.db.session() as s:
        status = dict(s.execute(select(pickups.c.id, pickups.c.status)).all())
    assert status[unaccepted["id"]] == "expired" and status[pid] == "settled"
    again.drain()
    assert len(payout_requests(again.bus, pid)) == 1
    again.stop()


def test_celery_task_runs_the_timers(sqlite_settings, monkeypatch):
    """The beat schedule names the task, and the task runs the scan in a worker's own platform."""
    import workers.celery_app as celery_mod
    from services.kernel.settings import get_settings

    assert celery_mod.celery_app.conf.beat_schedule["booking-timers"]["task"] == "booking.run_timers"
    assert "booking.run_timers" in celery_mod.celery_app.tasks
    s = sqlite_settings
    for k, v in {
        "DATA_DIR": str(s.data_dir),
        "JWT_SECRET": s.jwt_secret,
        "PII_KEY": s.pii_key,
        "ENV": "test",
        "BOOKING_INVOICING_ENABLED": "false",
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    celery_mod.forget_platform()
    try:
        rt = celery_mod.runtime("booking")
        past = datetime.now(UTC) - timedelta(days=1)
        view = handlers.book(
            rt,
            principal(uid("res"), "resident"),
            BookPickup.model_validate(booking_body()),
            now=past - timedelta(days=1),
        )
        # book a window that has already opened by moving "now" back; the worker sees it as due
        with rt.db.session() as ss, ss.begin():
            ss.execute(
                pickups.update()
                .where(pickups.c.id == view["id"])
                .values(window_start=past, window_end=past + timedelta(minutes=30))
            )
        result = celery_mod.celery_app.tasks["booking.run_timers"].apply().get(timeout=30)
        assert result["expired"] == 1
        assert queries.get(rt, principal("x", "admin"), view["id"])["status"] == "expired"
    finally:
        try:
            celery_mod._platform().stop()
        finally:
            get_settings.cache_clear()
            celery_mod.forget_platform()
