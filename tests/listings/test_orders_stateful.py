"""Random histories of one order with escrow, on the real listings and payments services (sandbox provider, SQLite,
the embedded bus): the buyer pays (or is declined), the seller ships, the buyer confirms or cancels, the seller or
an admin cancels (a refund once shipped), listings' timers run at a clock that jumps hours or days, the provider's
own clock lets old authorisations lapse, an issuer drops the authorisation in the moment between the seller's ship
(or the buyer's paying again) and payments' escrow capture, and every request and report of the order is delivered
again (the same record, and the same request in a new envelope).

Checked after every step, for the order of the example (and after the timers ran: nothing due left behind):
- the payments ledger balances (every entry, every account on its side);
- paid: the hold is authorised and the ship deadline is `ship_days` after the authorisation;
- shipped: the whole amount is in escrow (captured, nothing released or refunded): nothing can lapse; or, when the
  authorisation was let go before the capture, nothing is captured, the order says why and waits for the buyer's
  new payment (and neither the buyer nor the timers can complete it);
- completed: released in full from escrow, and the seller has exactly one payout of the price less the fee;
- cancelled after shipping: the escrow was refunded in full, or (the buyer never paid again) nothing was taken;
  the seller paid nothing;
- cancelled or expired before shipping: nothing was captured, the hold (if any) is released;
- every payment the order stopped using (the buyer paid again) holds nothing and took nothing;
- payments reported each authorisation, escrow capture, release and refund at most once per payment.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from services.contracts.payments import AUTHORISATION_LAPSED
from services.kernel.auth import Principal
from services.kernel.bus.port import Record
from services.kernel.errors import Conflict, DomainError
from services.kernel.events import Envelope
from services.kernel.outbox import outbox_t
from services.kernel.settings import Settings
from services.listings import handlers, orders
from services.listings.domain import model as m
from services.listings.store import listings as listings_t
from services.listings.store import orders as orders_t
from services.listings.timers import run_due
from services.payments.domain import ledger as L
from services.payments.handlers import payments_of
from services.payments.hold_requests import hold_requests_of

from .support import book_body, platform_for
from .test_orders import _payouts

SHIP_DAYS = 3
FEE_BPS = 100
# how far the clock jumps: within a deadline, past the ship deadline, past the provider's window, past auto-confirm
HOURS = st.sampled_from([0, 1, 20, 73, 24 * 8, 24 * 11])
_n = itertools.count(1)


@pytest.fixture(scope="module")
def shared_platform():
    d = tempfile.mkdtemp(prefix="listings-escrow-")
    s = Settings(
        env="test",
        data_dir=Path(d),
        bus="dblog",
        jwt_secret="test-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )
    platform = platform_for(s, ship_days=SHIP_DAYS, auto_confirm_days=10, platform_fee_bps=FEE_BPS)
    yield platform
    platform.stop()


def _user(user_id: str, *roles: str) -> Principal:
    return Principal(user_id, frozenset(roles or ("resident",)))


class EscrowMachine(RuleBasedStateMachine):
    platform = None

    @initialize(start=st.sampled_from(["pending_payment", "paid", "shipped", "paying_again"]))
    def order(self, start):
        k = next(_n)
        self.rt = self.platform["listings"]
        self.payments = payments_of(self.platform["payments"])
        self.requests = hold_requests_of(self.platform["payments"])
        self.seller, self.buyer = f"us_sel{k}", f"us_buy{k}"
        lid = handlers.create_listing(self.rt, self.seller, book_body(price_fen=4500 + k))["id"]
        handlers.publish_listing(self.rt, _user(self.seller), lid)
        self.order_id = orders.create_order(self.rt, self.buyer, lid)["id"]
        self.platform.drain()
        self.amount = 4500 + k
        self.now = datetime.now(UTC)
        # most histories worth checking begin after the payment (or after the race): start some there
        if start != m.PENDING_PAYMENT:
            self.requests.confirm(self._hr(), self.buyer, "pm_card_visa")
            self.platform.drain()
        if start == m.SHIPPED:
            orders.ship_order(self.rt, _user(self.seller), self.order_id, None, None)
            self.platform.drain()
        if start == "paying_again":  # shipped as the authorisation dropped: the buyer is asked to pay again
            self.the_authorisation_drops_before_its_escrow_capture("seller_ships", heard_first=False)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _row(self):
        with self.rt.db.session(readonly=True) as s:
            return s.execute(select(orders_t).where(orders_t.c.id == self.order_id)).one()

    def _hr(self) -> str:
        """The payment the order uses now (the buyer may have been asked to pay again)."""
        return self._row().hold_request_id

    def _hrs(self) -> list[str]:
        """Every payment of the order, the first one first."""
        return [m.hold_request_id_for(self.order_id, a) for a in range(1, self._row().payment_attempt + 1)]

    def _try(self, fn, *args):
        """A refused command writes nothing; then the bus delivers (well within the provider's window)."""
        before = self._row()
        try:
            fn(*args)
        except DomainError:
            after = self._row()
            # the one refusal that writes: shipping after the deadline cancels the order (as the timer would)
            assert (after.status, after.version) == (before.status, before.version) or (
                after.cancel_reason == "not_shipped"
            ), "a refusal wrote"
        finally:
            self.platform.drain()

    def _outbox(self, rt, topic: str, hrs: list[str] | None = None) -> list[Envelope]:
        with rt.db.session(readonly=True) as s:
            rows = s.execute(
                select(outbox_t.c.payload)
                .where(outbox_t.c.topic == topic, outbox_t.c.key.in_(hrs or self._hrs()))
                .order_by(outbox_t.c.seq)
            ).all()
        return [Envelope.from_bytes(r.payload) for r in rows]

    def _reports(self, hr: str) -> list[str]:
        return [e.type.split(".")[-2] for e in self._outbox(self.platform["payments"], "payments.hold", [hr])]

    # --- rules ------------------------------------------------------------------------------------------------

    @rule(declined=st.booleans())
    def buyer_pays(self, declined):
        """Pays the order's payment: the first one, or the one asked for again after shipping."""
        method = "pm_card_chargeCustomerFail" if declined else "pm_card_visa"
        self._try(self.requests.confirm, self._hr(), self.buyer, method)

    @rule()
    def seller_ships(self):
        self._try(orders.ship_order, self.rt, _user(self.seller), self.order_id, "顺丰", "SF1")

    @rule()
    def buyer_confirms(self):
        self._try(orders.confirm_receipt, self.rt, _user(self.buyer), self.order_id)

    @rule(who=st.sampled_from(["buyer", "seller", "admin"]))
    def someone_cancels(self, who):
        user = {
            "buyer": _user(self.buyer),
            "seller": _user(self.seller),
            "admin": _user("us_admin", "admin"),
        }[who]
        self._try(orders.cancel_order, self.rt, user, self.order_id)

    @rule(by=st.sampled_from(["seller_ships", "buyer_pays_again"]), heard_first=st.booleans())
    def the_authorisation_drops_before_its_escrow_capture(self, by, heard_first):
        """The race: the seller ships (or the buyer of a shipped order pays again), and before payments captures the
        money into escrow the issuer drops the authorisation (days inside the provider's window). Payments hears of
        it from the provider's event first (`heard_first`) or finds it when the capture fails."""
        try:
            if by == "seller_ships":
                orders.ship_order(self.rt, _user(self.seller), self.order_id, "顺丰", "SF1")
            else:
                self.requests.confirm(self._hr(), self.buyer, "pm_card_visa")
        except DomainError:
            pass
        req = self.requests.get(self._hr(), "", admin=True)
        if req["hold_id"] and str(self.payments.get_hold(req["hold_id"]).status) == "authorised":
            self.payments.provider.expire_authorisation(self.payments.get_hold(req["hold_id"]).provider_ref)
            if heard_first:
                self.payments.pull_provider_events()
        self.platform.drain()
        self.payments.pull_provider_events()
        self.platform.drain()

    @rule(hours=HOURS)
    def time_passes(self, hours):
        self.now += timedelta(hours=hours)

    @rule(hours=HOURS, twice=st.booleans())
    def timers_run(self, hours, twice):
        """Some time passes, then listings' timers run (once or twice at the same moment)."""
        self.now += timedelta(hours=hours)
        run_due(self.rt, self.now)
        if twice:
            assert run_due(self.rt, self.now) == {"expired": 0, "not_shipped": 0, "auto_confirmed": 0}
        self.platform.drain()
        o = self._row()
        # nothing due is left behind: an unpaid order past its time expired, an unshipped one past its deadline
        # cancelled, a shipped one past the auto-confirm window completed
        assert o.status != m.PENDING_PAYMENT or o.expires_at > self.now
        assert o.status != m.PAID or o.ship_by > self.now
        # money not in escrow (the buyer must pay again) is never released by the timer
        assert (
            o.status != m.SHIPPED or o.shipped_at + timedelta(days=10) > self.now or o.payment_failure_reason
        )

    @rule(hours=st.sampled_from([24 * 8, 24 * 11]))
    def providers_clock_runs(self, hours):
        """More than the provider's window passes, then it lets every authorisation older than that lapse and
        tells payments (listings' timers may not have run meanwhile)."""
        self.now += timedelta(hours=hours)
        self.payments.provider.lapse_authorisations(self.now.timestamp())
        self.payments.pull_provider_events()
        self.platform.drain()

    @rule(new_ids=st.booleans(), reports=st.booleans())
    def everything_is_delivered_again(self, new_ids, reports):
        """Listings' requests about the order (or payments' reports about it) once more: the same records (the
        consumers' inbox) or the same facts in new envelopes (their own state)."""
        rt = self.platform["payments" if reports else "listings"]
        envs = self._outbox(rt, "payments.hold")  # about every payment of the order, old ones too
        if new_ids:
            envs = [e.model_copy(update={"id": "ev_again_" + e.id}) for e in envs]
        self.platform.bus.publish(
            [
                Record(topic="payments.hold", key=e.subject, value=e.to_bytes(), headers={"ce_type": e.type})
                for e in envs
            ]
        )
        self.platform.drain()

    # --- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def the_money_is_where_the_order_says(self):
        o = self._row()
        req = self.requests.get(o.hold_request_id, "", admin=True)
        hold = self.payments.get_hold(req["hold_id"]) if req["hold_id"] else None
        payouts = [p for p in _payouts(self.payments, self.seller) if p.reference_id == self.order_id]
        fee = m.platform_fee_fen(self.amount, FEE_BPS)
        state = (o.status, o.payment_status, req["status"], o.payment_attempt, o.payment_failure_reason)
        event(f"{o.status}, payment {o.payment_attempt}")  # --hypothesis-show-statistics: what the runs reach
        # a payment asked for again exists only after shipping, and says why
        assert (o.payment_attempt == 1) == (o.payment_failed_at is None), state
        assert o.payment_attempt == 1 or o.shipped_at is not None, state
        if o.status == m.PENDING_PAYMENT:
            assert hold is None and o.payment_status in ("requires_payment_method", "declined"), state
        elif o.status == m.PAID:
            assert (o.payment_status, str(hold.status)) == ("held", "authorised"), state
            authorised = next(
                json.loads(e.to_bytes())["data"]["authorised_at"]
                for e in self._outbox(self.platform["payments"], "payments.hold")
                if e.type.endswith("hold.authorised.v1")
            )
            assert o.ship_by == datetime.fromisoformat(authorised) + timedelta(days=SHIP_DAYS)
        elif o.status == m.SHIPPED and o.payment_failure_reason is None:
            # the goods left: all of the buyer's money is in escrow, and nothing of it can lapse
            assert (o.payment_status, req["status"]) == ("escrowed", "escrowed"), state
            assert (hold.captured_fen, hold.released_fen, hold.refunded_fen) == (self.amount, 0, 0)
            assert self.payments.account_balance(L.escrow_account(hold.id)) == self.amount
        elif o.status == m.SHIPPED:
            # the authorisation was let go before its capture: nothing taken, the buyer is asked to pay again, and
            # nobody can complete the order meanwhile
            assert o.payment_attempt > 1 and o.payment_failure_reason == AUTHORISATION_LAPSED, state
            assert o.payment_status in ("requires_payment_method", "declined"), state
            assert (req["status"], hold) == ("requires_payment_method", None), state
            with pytest.raises(Conflict, match="not in escrow"):  # refused, nothing written
                orders.confirm_receipt(self.rt, _user(self.buyer), self.order_id)
        elif o.status == m.COMPLETED:
            assert (o.payment_status, req["status"]) == ("captured", "captured"), state
            assert (hold.captured_fen, hold.released_fen, hold.refunded_fen) == (self.amount, self.amount, 0)
            assert [(p.amount_fen, int(o.fee_fen)) for p in payouts] == [(self.amount - fee, fee)]
        elif o.shipped_at is not None and hold is not None and hold.captured_fen:
            # cancelled after shipping: refunded from escrow
            assert (o.status, o.payment_status, req["status"]) == (m.CANCELLED, "refunded", "refunded"), state
            assert (hold.captured_fen, hold.refunded_fen, hold.released_fen) == (self.amount, self.amount, 0)
        elif o.shipped_at is not None:
            # cancelled after shipping while the buyer was to pay again: that payment closed, nothing taken
            assert o.status == m.CANCELLED and o.payment_attempt > 1, state
            assert req["status"] == "cancelled" and o.payment_status == "cancelled", state
            assert hold is None or (str(hold.status), hold.captured_fen) == ("cancelled", 0)
        else:  # cancelled or expired before shipping: nothing taken
            assert o.status in (m.CANCELLED, m.EXPIRED), state
            assert req["status"] == "cancelled" and o.payment_status == "cancelled", state
            assert hold is None or (str(hold.status), hold.captured_fen) == ("cancelled", 0)
        if o.status != m.COMPLETED:
            assert payouts == []
        if hold is not None:
            assert self.payments.account_balance(L.hold_account(hold.id)) == (
                self.amount if str(hold.status) == "authorised" else 0
            )
        # the payments the order no longer uses: let go before their capture, nothing held, nothing taken
        for old in self._hrs()[:-1]:
            gone = self.requests.get(old, "", admin=True)
            assert gone["status"] == "cancelled", (old, gone)
            gone_hold = self.payments.get_hold(gone["hold_id"]) if gone["hold_id"] else None
            if gone_hold is not None:
                assert (str(gone_hold.status), gone_hold.captured_fen) == ("cancelled", 0)
                assert self.payments.account_balance(L.hold_account(gone_hold.id)) == 0
        with self.rt.db.session(readonly=True) as s:
            listing = s.execute(select(listings_t).where(listings_t.c.id == o.listing_id)).one()
        if o.status in m.ACTIVE_ORDER:
            assert listing.status == (m.SOLD if o.status == m.COMPLETED else m.RESERVED)
        else:
            assert listing.status != m.RESERVED or listing.reserved_order_id != o.id

    @invariant()
    def each_fact_is_reported_once(self):
        for hr in self._hrs():
            reports = self._reports(hr)
            for what in ("opened", "authorised", "escrowed", "captured", "refunded"):
                assert reports.count(what) <= 1, (hr, reports)

    @invariant()
    def the_ledger_balances(self):
        assert self.payments.ledger_problems() == []


def test_random_order_histories_keep_the_money_where_the_order_says(shared_platform):
    EscrowMachine.platform = shared_platform
    run_state_machine_as_test(
        EscrowMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
