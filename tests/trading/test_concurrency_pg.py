"""Trading on PostgreSQL with real concurrency: 50 firms bidding on one ascending lot at once, and the closing job
killed mid-run and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from services.kernel.errors import DomainError
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t
from services.trading import handlers
from services.trading.domain.commands import ListLot, PlaceBid
from services.trading.store import bids, lots, trades

from .support import firm_events, firm_principal, lot_body, platform_for, publish, settled_intake

pytestmark = pytest.mark.postgres
N_FIRMS = 50
INC = 1_000
RESERVE = 250_000


def test_fifty_firms_bid_at_once_on_one_ascending_lot(pg_settings):
    platform = platform_for(pg_settings, extension_window_s=120, extension_s=120)
    rt = platform["trading"]
    firms = [f"fm_{i:02d}" for i in range(N_FIRMS)]
    publish(
        platform,
        *firm_events("fm_seller"),
        *[e for f in firms for e in firm_events(f)],
        settled_intake("fm_seller", "50000"),
    )
    # the lot ends in 90 s: every bid lands inside the 120 s anti-sniping window
    lot = handlers.list_lot(
        rt,
        firm_principal("fm_seller"),
        ListLot(
            **lot_body(
                ends_at=(datetime.now(UTC) + timedelta(seconds=90)).isoformat(),
                min_increment_fen_per_t=INC,
                reserve_price_fen_per_t=RESERVE,
            )
        ),
    )
    ends_before = (
        datetime.fromisoformat(str(lot["ends_at"])) if isinstance(lot["ends_at"], str) else lot["ends_at"]
    )
    # each firm offers three prices, multiples of the increment, all different across firms; shuffled order
    offers = [(firms[i], RESERVE + INC * (i * 3 + k) * 2) for k in range(3) for i in range(N_FIRMS)]
    offers = offers[::2] + offers[1::2]

    def bid(offer):
        firm, price = offer
        try:
            handlers.place_bid(rt, firm_principal(firm), lot["id"], PlaceBid(price_fen_per_t=price))
            return price, None
        except DomainError as exc:
            return price, exc.extra.get("reason")

    with ThreadPoolExecutor(N_FIRMS) as pool:
        results = list(pool.map(bid, offers))
    accepted = [p for p, reason in results if reason is None]
    refused = [reason for _, reason in results if reason is not None]
    assert accepted and set(refused) <= {"below_best_plus_increment"}

    with rt.db.session() as s:
        row = s.execute(select(lots).where(lots.c.id == lot["id"])).one()
        placed = s.execute(select(bids).where(bids.c.lot_id == lot["id"]).order_by(bids.c.seq)).all()
    # the best price wins: the highest offer (every offer is at least one increment above any lower one)
    top = max(p for _, p in offers)
    assert row.best_fen_per_t == top and top in accepted
    # no accepted bid is below the best before it plus the increment (bids are recorded in lock order)
    prices = [b.price_fen_per_t for b in placed]
    assert len(prices) == len(accepted) == row.bid_count
    assert all(b >= a + INC for a, b in zip(prices, prices[1:]))
    # replayed in lock order, each bid found the end its predecessor left; a late one (within 120 s of it) moved
    # the end once, to 120 s after itself. With the extension as long as the window, every bid here was late.
    ends = ends_before
    for b in placed:
        late = ends - b.placed_at <= timedelta(seconds=120)
        assert b.extended == late
        ends = max(ends, b.placed_at + timedelta(seconds=120)) if late else ends
        assert b.ends_at_after == ends
    assert row.extensions == len(placed) and all(b.extended for b in placed)
    assert row.ends_at == ends
    with rt.db.session() as s:
        changes = s.execute(
            select(func.count())
            .select_from(outbox_t)
            .where(outbox_t.c.type == "cn.recycle.trading.lot.best_bid_changed.v1")
        ).scalar()
    assert changes == len(placed)
    platform.stop()


def _env(settings) -> dict[str, str]:
    return dict(
        os.environ,
        ENV="test",
        DATABASE_URL=settings.database_url,
        EVENT_LOG_URL=settings.event_log_url,
        DB_SCHEMA_PREFIX=settings.db_schema_prefix,
        DATA_DIR=str(settings.data_dir),
        BUS="dblog",
        JWT_SECRET=settings.jwt_secret,
        PII_KEY=settings.pii_key,
    )


def test_closing_job_killed_mid_run_closes_each_lot_exactly_once(pg_settings):
    platform = platform_for(pg_settings)
    rt = platform["trading"]
    publish(platform, *firm_events("fm_seller"), *firm_events("fm_a"), *firm_events("fm_b"))
    listed_at = datetime.now(UTC) - timedelta(hours=3)
    ids = []
    for i in range(120):
        lot = handlers.list_lot(
            rt,
            firm_principal("fm_seller"),
            ListLot(
                **lot_body(
                    ends_at=(listed_at + timedelta(hours=1, seconds=i)).isoformat(),
                    source="purchase",
                    purchase_ref=f"PO-{i}",
                    auction="sealed" if i % 2 else "ascending",
                    min_increment_fen_per_t=None if i % 2 else INC,
                )
            ),
            now=listed_at,
        )
        ids.append(lot["id"])
        if i % 3:  # two lots in three get a bid at reserve; the rest go unsold
            handlers.place_bid(
                rt,
                firm_principal("fm_a" if i % 2 else "fm_b"),
                lot["id"],
                PlaceBid(price_fen_per_t=RESERVE),
                now=listed_at + timedelta(minutes=1),
            )
    now = datetime.now(UTC).isoformat()
    env = _env(pg_settings)
    cmd = [sys.executable, "-m", "tests.trading.close_proc", now]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def closed() -> int:
        with rt.db.session() as s:
            return s.execute(select(func.count()).select_from(lots).where(lots.c.status != "open")).scalar()

    deadline = time.monotonic() + 60
    while closed() < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the job finished before it could be killed: give it more lots"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    part = closed()
    assert 0 < part < len(ids)

    # started again (twice at once, for good measure): it picks up where the killed one stopped
    again = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in again:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    assert closed() == len(ids)
    with rt.db.session() as s:
        rows = s.execute(select(lots.c.id, lots.c.status, lots.c.trade_id)).all()
        n_trades = s.execute(select(func.count()).select_from(trades)).scalar()
        events = s.execute(
            select(outbox_t.c.type, outbox_t.c.payload).where(
                outbox_t.c.topic.in_(("trading.lot", "trading.trade"))
            )
        ).all()
    closed_per_lot: dict[str, int] = {}
    awarded_per_lot: dict[str, int] = {}
    for type_, payload in events:
        data = Envelope.from_bytes(payload).data
        if type_.endswith("lot.closed.v1"):
            closed_per_lot[data["lot_id"]] = closed_per_lot.get(data["lot_id"], 0) + 1
        if type_.endswith("trade.awarded.v1"):
            awarded_per_lot[data["lot_id"]] = awarded_per_lot.get(data["lot_id"], 0) + 1
    assert closed_per_lot == {i: 1 for i in ids}
    expected_awarded = {ids[i] for i in range(len(ids)) if i % 3}
    assert set(awarded_per_lot) == expected_awarded and set(awarded_per_lot.values()) == {1}
    assert n_trades == len(expected_awarded)
    assert {r.id for r in rows if r.status == "awarded"} == expected_awarded
    platform.stop()


def test_deadline_job_killed_mid_run_defaults_each_buyer_exactly_once(pg_settings):
    """80 trades whose buyers never paid: the deadline job is SIGKILLed mid-scan, then run twice at once. Each
    buyer is in default once, each lot offered once to its runner-up, each event published once."""
    from services.trading import trades as trade_handlers
    from services.trading.closing import run_due
    from services.trading.domain.commands import RecordDelivery

    platform = platform_for(pg_settings)
    rt = platform["trading"]
    publish(platform, *firm_events("fm_seller"), *firm_events("fm_a"), *firm_events("fm_b"))
    t0 = datetime.now(UTC) - timedelta(days=10)
    ids = []
    for i in range(80):
        lot = handlers.list_lot(
            rt,
            firm_principal("fm_seller"),
            ListLot(
                **lot_body(
                    ends_at=(t0 + timedelta(hours=1)).isoformat(), source="purchase", purchase_ref=f"PO-{i}"
                )
            ),
            now=t0,
        )["id"]
        for firm, price in (("fm_b", RESERVE), ("fm_a", RESERVE + INC)):
            handlers.place_bid(
                rt, firm_principal(firm), lot, PlaceBid(price_fen_per_t=price), now=t0 + timedelta(minutes=1)
            )
        ids.append(lot)
    assert run_due(rt, t0 + timedelta(hours=1)) == {"awarded": len(ids), "unsold": 0}
    with rt.db.session(readonly=True) as s:
        first = list(s.execute(select(trades.c.id)).scalars())
    for trade_id in first:  # delivered: the payment is requested, and never made
        trade_handlers.record_delivery(
            rt,
            firm_principal("fm_seller"),
            trade_id,
            RecordDelivery(weighbridge_ticket_no=f"WB-{trade_id}", delivered_qty_t="20.000"),  # one per lot
            now=t0 + timedelta(hours=2),
        )
    now = (t0 + timedelta(hours=2 + 72, seconds=1)).isoformat()
    env = _env(pg_settings)
    cmd = [sys.executable, "-m", "tests.trading.close_proc", now, "deadlines"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def defaulted() -> int:
        with rt.db.session(readonly=True) as s:
            return s.execute(
                select(func.count()).select_from(trades).where(trades.c.status == "defaulted")
            ).scalar()

    deadline = time.monotonic() + 60
    while defaulted() < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the job finished before it could be killed: give it more trades"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < defaulted() < len(ids)

    again = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in again:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    with rt.db.session(readonly=True) as s:
        rows = s.execute(
            select(trades.c.lot_id, trades.c.round, trades.c.status, trades.c.buyer_firm_id)
        ).all()
        events = s.execute(
            select(outbox_t.c.type, outbox_t.c.payload).where(outbox_t.c.topic == "trading.trade")
        ).all()
        lot_trade = dict(s.execute(select(lots.c.id, lots.c.trade_id)).all())
    assert sorted((r.round, r.status, r.buyer_firm_id) for r in rows) == sorted(
        [(1, "defaulted", "fm_a")] * len(ids) + [(2, "offered", "fm_b")] * len(ids)
    )
    per_type: dict[str, list[str]] = {}
    for type_, payload in events:
        per_type.setdefault(type_.split(".")[-2], []).append(Envelope.from_bytes(payload).data["lot_id"])
    assert sorted(per_type["defaulted"]) == sorted(ids) and sorted(per_type["offered"]) == sorted(ids)
    assert all(trade_id.endswith("_r2") for trade_id in lot_trade.values())
    platform.stop()
