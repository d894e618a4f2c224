"""Random histories after an award: the clock moves, the seller declares defaults (early or late), the deadline job
runs (twice at times), offerees accept or decline, the seller delivers, buyers pay late or not at all, payments'
reports come twice. The real service functions on SQLite, times given through their `now`.

Checked after every step, for the lot of the example:
- at most one round is live (awarded, delivered, disputed, offered or settled); a returned lot has none;
- the rounds go to the bidders at or above reserve in the order of the close (best price, then earliest), each firm
  once, at its own price; the lot names the last round;
- the lot is returned exactly when every such bidder has had it and every round ended; its intake is free then only;
- a settled trade never defaulted and was paid; a defaulted one kept no payment and defaulted no earlier than the
  rules allow;
- a deposit is captured only from a buyer that defaulted while it was held, and asked once; each default, offer and
  end of an offer is published once.
"""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from services.contracts.payments import HoldAuthorised, HoldCaptured, HoldOpened
from services.kernel.auth import Principal
from services.kernel.errors import DomainError
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t
from services.kernel.settings import Settings
from services.trading import defaults, handlers, trades
from services.trading.closing import run_due
from services.trading.deposits import request_deposit
from services.trading.domain import defaults as rules_d
from services.trading.domain import model as m
from services.trading.domain.commands import ListLot, PlaceBid, RecordDelivery
from services.trading.store import bids, deposits, lot_sources, lots
from services.trading.store import trades as trades_t

from .support import firm_events, firm_principal, lot_body, platform_for, publish, settled_intake
from .test_money import hold_held

BIDDERS = ["fm_p", "fm_q", "fm_r", "fm_s"]
SELLER = "fm_v"
RESERVE = 250_000
DEPOSIT = 100_000
LIVE = {m.AWARDED, m.DELIVERED, m.DISPUTED, m.OFFERED, m.SETTLED}
ENDED = {m.DEFAULTED, m.DECLINED, m.LAPSED}
_lots = itertools.count(1)


@pytest.fixture(scope="module")
def shared_platform():
    d = tempfile.mkdtemp(prefix="trading-default-")
    s = Settings(
        env="test",
        data_dir=Path(d),
        bus="dblog",
        jwt_secret="test-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )
    platform = platform_for(s)
    publish(
        platform,
        *[e for f in [SELLER, *BIDDERS] for e in firm_events(f)],
        settled_intake(SELLER, "10000000", when=datetime(2026, 1, 2, tzinfo=UTC)),
    )
    yield platform
    platform.stop()


def _events(platform, suffix: str, keys: set[str]) -> list[dict]:
    """Trading's published events of a type about `keys` (trade or hold request ids: the events' keys)."""
    with platform["trading"].db.session(readonly=True) as s:
        rows = s.execute(
            select(outbox_t.c.payload).where(
                outbox_t.c.key.in_(sorted(keys)), outbox_t.c.type.like(f"%{suffix}")
            )
        ).scalars()
        return [Envelope.from_bytes(p).data for p in rows]


class DefaultMachine(RuleBasedStateMachine):
    platform = None

    @initialize(
        offers=st.lists(
            st.tuples(st.booleans(), st.sampled_from([240_000, 250_000, 260_000, 270_000])),
            min_size=len(BIDDERS),
            max_size=len(BIDDERS),
        )
    )
    def award(self, offers):
        self.rt = self.platform["trading"]
        # every example in its own stretch of time, later than any before it
        k = next(_lots)
        self.t0 = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(days=400 * k)
        self.lot = handlers.list_lot(
            self.rt,
            firm_principal(SELLER),
            ListLot(**self._sealed_body()),
            now=self.t0,
        )["id"]
        for i, (bids_, price) in enumerate(zip([o[0] for o in offers], [o[1] for o in offers], strict=True)):
            if not bids_:
                continue
            firm = BIDDERS[i]
            hold = request_deposit(self.rt, firm_principal(firm), self.lot, None, now=self.t0)[
                "hold_request_id"
            ]
            hold_held(self.platform, hold, self.lot, DEPOSIT)
            handlers.place_bid(
                self.rt,
                firm_principal(firm),
                self.lot,
                PlaceBid(price_fen_per_t=price),
                now=self.t0 + timedelta(minutes=i),
            )
        self.now = self.t0 + timedelta(hours=1)
        run_due(self.rt, self.now)
        self.platform.drain()
        self.held_before_default: dict[str, bool] = {}

    def _sealed_body(self) -> dict:
        body = lot_body(
            auction="sealed",
            reserve_price_fen_per_t=RESERVE,
            deposit_fen=DEPOSIT,
            ends_at=(self.t0 + timedelta(hours=1)).isoformat(),
        )
        body.pop("min_increment_fen_per_t")
        return body

    # --- helpers --------------------------------------------------------------------------------------------------

    def current(self):
        with self.rt.db.session(readonly=True) as s:
            trade_id = s.execute(select(lots.c.trade_id).where(lots.c.id == self.lot)).scalar()
            return (
                None
                if trade_id is None
                else s.execute(select(trades_t).where(trades_t.c.id == trade_id)).one()
            )

    def _deposit_status(self, firm: str) -> str | None:
        with self.rt.db.session(readonly=True) as s:
            return s.execute(
                select(deposits.c.status).where(deposits.c.lot_id == self.lot, deposits.c.firm_id == firm)
            ).scalar()

    def _try(self, fn, *args, **kwargs):
        t = self.current()
        before = None if t is None else (t.id, t.status, t.version)
        if t is not None:
            self.held_before_default.setdefault(t.id, self._deposit_status(t.buyer_firm_id) == "held")
        try:
            return fn(*args, **kwargs)
        except DomainError:
            after = self.current()
            assert before == (None if after is None else (after.id, after.status, after.version)), (
                "a refusal wrote"
            )
            return None
        finally:
            self.platform.drain()

    # --- rules -----------------------------------------------------------------------------------------------------

    @rule(hours=st.sampled_from([1, 25, 73, 24 * 8]))
    def time_passes(self, hours):
        self.now += timedelta(hours=hours)

    def _then(self, answer: bool | None) -> None:
        """The offeree of a fresh second-chance offer answers at once (or not: then the clock may run it out)."""
        t = self.current()
        if answer is not None and t is not None and t.status == m.OFFERED:
            self._try(
                defaults.answer_offer, self.rt, firm_principal(t.buyer_firm_id), t.id, answer, now=self.now
            )

    @rule(twice=st.booleans(), then=st.sampled_from([None, True, False]))
    def deadline_job(self, twice, then):
        t = self.current()
        if t is not None:
            self.held_before_default.setdefault(t.id, self._deposit_status(t.buyer_firm_id) == "held")
        first = defaults.run_deadlines(self.rt, self.now)
        if twice:
            assert defaults.run_deadlines(self.rt, self.now) == {"defaulted": 0, "lapsed": 0}, first
        self.platform.drain()
        self._then(then)

    @rule(then=st.sampled_from([None, True, False]), by_admin=st.booleans())
    def seller_declares(self, then, by_admin):
        """The seller (or an admin arbitrating) declares the buyer in default, whenever it likes."""
        t = self.current()
        if t is not None:
            who = Principal("u_admin", frozenset({"admin"})) if by_admin else firm_principal(SELLER)
            self._try(defaults.declare_default, self.rt, who, t.id, "买方违约", now=self.now)
            self._then(then)

    @rule(accept=st.booleans())
    def offeree_answers(self, accept):
        t = self.current()
        if t is not None:
            self._try(
                defaults.answer_offer, self.rt, firm_principal(t.buyer_firm_id), t.id, accept, now=self.now
            )

    @rule(kg=st.sampled_from(["20.000", "20.300", "21.000"]))
    def seller_delivers(self, kg):
        t = self.current()
        if t is not None:
            self._try(
                trades.record_delivery,
                self.rt,
                firm_principal(SELLER),
                t.id,
                RecordDelivery(weighbridge_ticket_no=f"WB-{kg}", delivered_qty_t=kg),
                now=self.now,
            )

    @rule()
    def buyer_accepts_weight(self):
        t = self.current()
        if t is not None:
            self._try(trades.accept_delivery, self.rt, firm_principal(t.buyer_firm_id), t.id, now=self.now)

    @rule(captured=st.booleans(), twice=st.booleans())
    def buyer_pays(self, captured, twice):
        """Payments' reports on the buyer's payment, whatever trading made of the trade meanwhile (late, twice)."""
        t = self.current()
        if t is None or t.payment_request_id is None:
            return
        hr = t.payment_request_id
        evs = [
            HoldOpened(
                hold_request_id=hr,
                payment_id=hr,
                amount_fen=t.amount_fen,
                reference_id=t.id,
                opened_at=self.now,
            ),
            HoldAuthorised(
                hold_request_id=hr,
                hold_id="ho_" + hr,
                amount_fen=t.amount_fen,
                reference_id=t.id,
                authorised_at=self.now,
            ),
        ]
        if captured:
            evs.append(
                HoldCaptured(
                    hold_request_id=hr,
                    hold_id="ho_" + hr,
                    reference_id=t.id,
                    captured_fen=t.amount_fen,
                    fee_fen=t.fee_fen,
                    released_fen=t.amount_fen - t.fee_fen,
                    payout_id="po_" + hr,
                    captured_at=self.now,
                )
            )
        publish(self.platform, *(evs * (2 if twice else 1)))

    @rule()
    def forfeited_deposits_are_captured(self):
        with self.rt.db.session(readonly=True) as s:
            holds = set(
                s.execute(select(deposits.c.hold_request_id).where(deposits.c.lot_id == self.lot)).scalars()
            )
        for c in _events(self.platform, "hold.capture_requested.v1", holds):
            publish(
                self.platform,
                HoldCaptured(
                    hold_request_id=c["hold_request_id"],
                    hold_id="ho_" + c["hold_request_id"],
                    reference_id=self.lot,
                    captured_fen=DEPOSIT,
                    fee_fen=c["fee_fen"],
                    released_fen=DEPOSIT - c["fee_fen"],
                    payout_id="po_" + c["hold_request_id"],
                    captured_at=self.now,
                ),
            )

    # --- invariants ------------------------------------------------------------------------------------------------

    @invariant()
    def rounds_follow_the_rules(self):
        with self.rt.db.session(readonly=True) as s:
            lot = s.execute(select(lots).where(lots.c.id == self.lot)).one()
            rounds = s.execute(
                select(trades_t).where(trades_t.c.lot_id == self.lot).order_by(trades_t.c.round)
            ).all()
            all_bids = s.execute(select(bids).where(bids.c.lot_id == self.lot)).all()
            deps = {
                r.firm_id: r for r in s.execute(select(deposits).where(deposits.c.lot_id == self.lot)).all()
            }
            released = (
                s.execute(select(lot_sources.c.released).where(lot_sources.c.lot_id == self.lot))
                .scalars()
                .all()
            )
        ranking = []  # the firms at or above reserve in the order of the close
        for b in sorted(all_bids, key=lambda b: (-b.price_fen_per_t, b.placed_at, b.seq)):
            if b.price_fen_per_t >= RESERVE and b.firm_id not in ranking:
                ranking.append(b.firm_id)
        assert [r.round for r in rounds] == list(range(1, len(rounds) + 1))
        assert [r.buyer_firm_id for r in rounds] == ranking[: len(rounds)]
        best = {f: max(b.price_fen_per_t for b in all_bids if b.firm_id == f) for f in ranking}
        assert [r.price_fen_per_t for r in rounds] == [best[r.buyer_firm_id] for r in rounds]
        live = [r for r in rounds if r.status in LIVE]
        assert len(live) <= 1, [(r.round, r.status) for r in rounds]
        assert all(r.status in ENDED for r in rounds if r is not rounds[-1]) if rounds else True
        if not ranking:
            assert lot.status == m.LOT_UNSOLD and not rounds
            return
        assert lot.trade_id == rounds[-1].id
        everyone_had_it = len(rounds) == len(ranking) and rounds[-1].status in ENDED
        assert (lot.status == m.LOT_RETURNED) == everyone_had_it
        assert all(released) == (lot.status == m.LOT_RETURNED) and (any(released) == all(released))

        for r in rounds:
            if r.status == m.SETTLED:
                assert r.defaulted_at is None and r.payment_status == "captured"
            if r.status == m.DEFAULTED:
                assert r.payment_status in (None, "cancelled")
                assert r.default_reason in ("payment_overdue", "declared_by_seller", "declared_by_admin")
                earliest = [r.awarded_at + timedelta(days=7)]
                if r.delivered_at is not None:
                    earliest.append(r.delivered_at + timedelta(hours=72))
                assert r.defaulted_at >= min(earliest)
            dep = deps.get(r.buyer_firm_id)
            if dep is not None and dep.status in ("forfeit_requested", "forfeited"):
                assert r.status == m.DEFAULTED and r.round == 1 and self.held_before_default.get(r.id, True)
                assert r.deposit_forfeited_fen == DEPOSIT
            elif r.status == m.DEFAULTED:
                assert (r.deposit_forfeited_fen or 0) == 0

        ids = {r.id for r in rounds}
        for suffix, expected in (
            ("trade.defaulted.v1", sum(r.status == m.DEFAULTED for r in rounds)),
            ("trade.offered.v1", len(rounds) - 1),
            ("trade.offer_ended.v1", sum(r.status in (m.DECLINED, m.LAPSED) for r in rounds)),
        ):
            got = [e["trade_id"] for e in _events(self.platform, suffix, ids)]
            assert len(got) == len(set(got)) == expected, suffix
        holds = {d.hold_request_id for d in deps.values()}
        captures = [c["hold_request_id"] for c in _events(self.platform, "hold.capture_requested.v1", holds)]
        assert (
            len(captures)
            == len(set(captures))
            == sum(d.status in ("forfeit_requested", "forfeited") for d in deps.values())
        )


def test_random_histories_after_an_award_keep_the_default_rules(shared_platform):
    DefaultMachine.platform = shared_platform
    run_state_machine_as_test(
        DefaultMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


def test_the_rules_of_declaring(shared_platform):  # noqa: ARG001 - the pure rules, on their own
    d = rules_d.Deadlines(payment_deadline_s=72 * 3600, collect_deadline_s=7 * 86400, offer_deadline_s=86400)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    awarded = rules_d.TradeFacts(status=m.AWARDED, awarded_at=t0)
    assert rules_d.may_declare_default(awarded, t0 + timedelta(days=7) - timedelta(seconds=1), d).reason == (
        "deadline_not_passed"
    )
    assert rules_d.may_declare_default(awarded, t0 + timedelta(days=7), d) is None
    assert not rules_d.payment_overdue(
        awarded, t0 + timedelta(days=30), d
    )  # collecting: only the seller says
    owes = rules_d.TradeFacts(
        status=m.DELIVERED,
        awarded_at=t0,
        payment_status="declined",
        payment_requested_at=t0 + timedelta(days=1),
    )
    assert not rules_d.payment_overdue(owes, t0 + timedelta(days=4) - timedelta(seconds=1), d)
    assert rules_d.payment_overdue(owes, t0 + timedelta(days=4), d)
    paid = rules_d.TradeFacts(status=m.DELIVERED, awarded_at=t0, payment_status="authorised")
    assert rules_d.may_declare_default(paid, t0 + timedelta(days=99), d).reason == "not_in_default"
    disputed = rules_d.TradeFacts(status=m.DISPUTED, awarded_at=t0, delivered_at=t0)
    assert rules_d.may_declare_default(disputed, t0 + timedelta(days=99), d).reason == "not_in_default"
    assert rules_d.forfeit_fee_fen(100_000, 50) == 500 and rules_d.forfeit_fee_fen(99, 50) == 0
    assert rules_d.forfeit_fee_fen(100, 50) == 1  # 0.5 half-up
