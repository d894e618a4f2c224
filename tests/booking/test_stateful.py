"""Random sequences of commands, timer scans and (duplicated, reordered) events from invoicing and payments.

Checked after every step: the pickup only ever moves along the transition table; a refused command leaves it as
it was and names the state it is in; each payout id is requested once; at most one payout of a pickup is live
(requested or paid), so money is paid at most once; nothing is requested before settlement or above the gross.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from services.booking import handlers, timers
from services.booking.domain import model as m
from services.booking.domain.commands import (
    BookPickup,
    CancelPickup,
    DisputePickup,
    ReschedulePickup,
    WeighPickup,
)
from services.booking.store import payouts, pickups
from services.bootstrap import Platform
from services.contracts.invoicing import InvoiceBlocked, InvoiceIssued
from services.contracts.payments import PayoutFailed, PayoutPaid
from services.kernel.errors import Conflict, DomainError
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t
from services.kernel.settings import Settings

from .support import (
    BOOKING_ONLY,
    booking_body,
    platform_for,
    principal,
    publish,
    uid,
    verify_collector,
    window,
)

COLLECTORS = [uid("col"), uid("col")]
WEIGHINGS = [
    {"lines": [{"category": "paper.cardboard", "qty": "12.5"}, {"category": "metal.copper", "qty": "1.2"}]},
    {"lines": [{"category": "metal.copper", "qty": "3"}], "reason": "只有铜"},
    {"lines": [{"category": "paper.books", "qty": "7"}], "reason": "书本纸"},
]


@pytest.fixture(scope="module")
def shared_platform():
    d = tempfile.mkdtemp(prefix="booking-stateful-")
    s = Settings(
        env="test",
        data_dir=Path(d),
        bus="dblog",
        jwt_secret="test-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )
    platform = platform_for(
        s,
        BOOKING_ONLY,
        invoicing_enabled=True,
        slot_capacity=100_000,
        resident_cancel_cutoff_minutes=120,
        no_show_wait_minutes=5,
        invoice_timeout_minutes=30,
    )
    for c in COLLECTORS:
        verify_collector(platform, c)
    yield platform
    platform.stop()


class PickupMachine(RuleBasedStateMachine):
    platform: Platform

    @initialize(head_start=st.integers(0, 4), c=st.sampled_from(COLLECTORS))
    def book(self, head_start: int, c: str) -> None:
        """Book, then walk the happy path `head_start` steps, so later states are explored as often as early ones."""
        self.rt = self.platform["booking"]
        self.resident = uid("res")
        self.now = datetime.now(UTC)
        view = handlers.book(
            self.rt,
            principal(self.resident, "resident"),
            BookPickup.model_validate(booking_body()),
            now=self.now,
        )
        self.pid = view["id"]
        self.status = m.REQUESTED
        self.sent: list[Envelope] = []
        for _ in range(head_start):
            self.progress(c)
            self.moves_along_the_table()

    @rule(c=st.sampled_from(COLLECTORS))
    def progress(self, c: str) -> None:
        """The next step of the happy path, whatever the state (refused where it does not apply)."""
        col = principal(c, "collector")
        step = {
            m.REQUESTED: lambda: handlers.accept(self.rt, col, self.pid, self.now),
            m.ACCEPTED: lambda: handlers.arrive(self.rt, col, self.pid, self.now),
            m.ARRIVED: lambda: handlers.weigh(
                self.rt, col, self.pid, WeighPickup.model_validate(WEIGHINGS[0]), self.now
            ),
            m.DISPUTED: lambda: handlers.weigh(
                self.rt, col, self.pid, WeighPickup.model_validate(WEIGHINGS[1]), self.now
            ),
            m.WEIGHED: lambda: handlers.settle(self.rt, self.user("resident"), self.pid, self.now),
        }
        self.attempt(step.get(self.row().status, lambda: None))

    # --- helpers ---------------------------------------------------------------------------------------
    def row(self):  # noqa: ANN201
        with self.rt.db.session() as s:
            return s.execute(select(pickups).where(pickups.c.id == self.pid)).one()

    def attempt(self, fn, *args) -> None:  # noqa: ANN001
        """Run a command: it succeeds, or it is refused and the pickup stays as it was."""
        before = self.row()
        try:
            fn(*args)
        except Conflict as exc:
            after = self.row()
            assert after.version == before.version, "a refused command changed the pickup"
            assert exc.extra.get("current_state") == after.status
        except DomainError:
            assert self.row().version == before.version, "a refused command changed the pickup"

    def send(self, event, twice: bool = False) -> None:  # noqa: ANN001
        env = Envelope.wrap(event)
        self.sent.append(env)
        publish(self.platform, env, *([env] if twice else []))

    def user(self, who: str):  # noqa: ANN001, ANN201
        return {
            "resident": principal(self.resident, "resident"),
            "admin": principal("adm", "admin"),
            "stranger": principal(uid("res"), "resident"),
        }[who]

    # --- commands --------------------------------------------------------------------------------------
    @rule(c=st.sampled_from(COLLECTORS))
    def accept(self, c: str) -> None:
        self.attempt(handlers.accept, self.rt, principal(c, "collector"), self.pid, self.now)

    @rule(c=st.sampled_from(COLLECTORS))
    def arrive(self, c: str) -> None:
        self.attempt(handlers.arrive, self.rt, principal(c, "collector"), self.pid, self.now)

    @rule(c=st.sampled_from(COLLECTORS), w=st.sampled_from(WEIGHINGS))
    def weigh(self, c: str, w: dict) -> None:
        self.attempt(
            handlers.weigh,
            self.rt,
            principal(c, "collector"),
            self.pid,
            WeighPickup.model_validate(w),
            self.now,
        )

    @rule(who=st.sampled_from(["resident", "stranger"]))
    def settle(self, who: str) -> None:
        self.attempt(handlers.settle, self.rt, self.user(who), self.pid, self.now)

    @rule()
    def dispute(self) -> None:
        self.attempt(
            handlers.dispute, self.rt, self.user("resident"), self.pid, DisputePickup(reason="不对"), self.now
        )

    @rule(hour=st.sampled_from([9, 14, 19]))
    def reschedule(self, hour: int) -> None:
        body = {"window": window(start=time(hour, 0))}
        self.attempt(
            handlers.reschedule,
            self.rt,
            self.user("resident"),
            self.pid,
            ReschedulePickup.model_validate(body),
            self.now,
        )

    @rule(who=st.sampled_from(["resident", "admin", "stranger"]))
    def cancel(self, who: str) -> None:
        self.attempt(handlers.cancel, self.rt, self.user(who), self.pid, CancelPickup(), self.now)

    @rule(c=st.sampled_from(COLLECTORS))
    def no_show(self, c: str) -> None:
        self.attempt(handlers.report_no_show, self.rt, principal(c, "collector"), self.pid, self.now)

    @rule(who=st.sampled_from(["resident", "admin"]))
    def retry_payout(self, who: str) -> None:
        self.attempt(handlers.retry_payout, self.rt, self.user(who), self.pid, self.now)

    @rule(minutes=st.sampled_from([5, 30, 120, 24 * 60, 2 * 24 * 60]))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        timers.run_due(self.rt, self.now)

    # --- other services' answers (possibly duplicated, late or for a stale payout) -------------------------
    @rule(withheld=st.integers(0, 20_000), twice=st.booleans())
    def invoice_issued(self, withheld: int, twice: bool) -> None:
        self.send(
            InvoiceIssued(
                invoice_id=uid("inv"),
                number="1",
                pickup_id=self.pid,
                issuer_firm_id="fm_test",
                seller_id=self.resident,
                kind="blue",
                total_fen=0,
                vat_fen=0,
                surcharges_fen=0,
                iit_fen=0,
                withheld_fen=withheld,
                issued_at=self.now,
            ),
            twice,
        )

    @rule(twice=st.booleans())
    def invoice_blocked(self, twice: bool) -> None:
        self.send(
            InvoiceBlocked(
                invoice_id=uid("inv"),
                pickup_id=self.pid,
                issuer_firm_id="fm_test",
                seller_id=self.resident,
                reason="cap_reached",
                detail="",
                blocked_at=self.now,
            ),
            twice,
        )

    @rule(attempt=st.sampled_from(["current", 1, 2, 3]), paid=st.booleans(), twice=st.booleans())
    def payout_outcome(self, attempt: int | str, paid: bool, twice: bool) -> None:
        """Payments reports on the current payout, or on an older or unknown attempt."""
        payout_id = self.row().payout_id if attempt == "current" else m.payout_id_for(self.pid, attempt)
        if payout_id is None:
            return
        if paid:
            ev = PayoutPaid(
                payout_id=payout_id, reference_id=self.pid, amount_fen=1, provider_ref="p", paid_at=self.now
            )
        else:
            ev = PayoutFailed(
                payout_id=payout_id,
                reference_id=self.pid,
                amount_fen=1,
                reason="bank said no",
                failed_at=self.now,
            )
        self.send(ev, twice)

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """The bus delivers an event again (same id): the inbox drops it."""
        if self.sent:
            publish(self.platform, data.draw(st.sampled_from(self.sent)))

    # --- invariants --------------------------------------------------------------------------------------
    @invariant()
    def moves_along_the_table(self) -> None:
        status = self.row().status
        assert status in m.STATUSES
        assert status == self.status or (self.status, status) in m.EDGES, (self.status, status)
        self.status = status

    @invariant()
    def money_is_paid_at_most_once(self) -> None:
        row = self.row()
        with self.rt.db.session() as s:
            rows = s.execute(select(payouts).where(payouts.c.pickup_id == self.pid)).all()
            requested = (
                s.execute(
                    select(outbox_t.c.key).where(
                        outbox_t.c.type == "cn.recycle.payments.payout.requested.v1",
                        outbox_t.c.key.like(f"po_{self.pid}%"),
                    )
                )
                .scalars()
                .all()
            )
        # the timer may ask again for a payout stuck in `requested`, always under the same id (payments pays an id
        # once): what must hold is one payout row per id requested, never a second id for the same attempt
        assert len(set(requested)) == len(rows), "a payout requested under an id booking does not know"
        live = [p for p in rows if p.status in ("requested", "paid")]
        assert len(live) <= 1, "two payouts of one pickup are live"
        if rows:
            assert row.status == m.SETTLED
            gross = row.weighed_total_fen
            assert all(0 < p.amount_fen <= gross for p in rows)
            assert len({p.amount_fen for p in rows}) == 1, "a retry changed the amount"
            assert row.payout_id == max(rows, key=lambda p: p.attempt).payout_id
            latest = max(rows, key=lambda p: p.attempt)
            assert row.payout_status == {"requested": m.PAYOUT_PENDING}.get(latest.status, latest.status)
        if row.payout_status == m.PAYOUT_PAID:
            assert any(p.payout_id == row.payout_id and p.status == "paid" for p in rows)
        if row.status != m.SETTLED:
            assert row.payout_status is None and not rows


def test_random_histories_keep_the_pickup_legal_and_pay_at_most_once(shared_platform):
    PickupMachine.platform = shared_platform
    run_state_machine_as_test(
        PickupMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
