"""Property tests of the auction rules (pure): ascending with anti-sniping extensions, sealed with ties and reserve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.trading.domain import rules
from services.trading.domain.model import ASCENDING, LOT_OPEN, SEALED

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
BIDDER = rules.BidderFacts("fm_b", verified=True, related_to_seller=False, deposit_held=True)

auction_rules = st.builds(
    lambda w, extra, inc: rules.AuctionRules(w, w + extra, inc),
    st.integers(0, 600),
    st.integers(0, 600),
    st.integers(1, 5000),
)


def _lot(auction: str, reserve: int, inc: int, ends_at: datetime, best: int | None = None) -> rules.LotFacts:
    return rules.LotFacts("lot_1", "fm_s", LOT_OPEN, auction, reserve, inc, ends_at, best, 0)


@settings(max_examples=300, deadline=None)
@given(
    auction_rules,
    st.integers(1, 10**6),
    st.integers(1, 5000),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 2 * 10**6)), max_size=40),
)
def test_ascending_sequence(cfg, reserve, inc, offers):
    """Replay offers (seconds after the previous one, price) against one lot: every accepted bid beats the best by the
    increment (the first reaches reserve), every refusal says why truthfully, every late bid extends exactly once,
    and no bid after the (possibly extended) end is taken. The best is the last accepted price."""
    ends = T0 + timedelta(hours=1)
    best: int | None = None
    at = T0
    accepted = []
    for dt, price in offers:
        at = at + timedelta(seconds=dt)
        lot = _lot(ASCENDING, reserve, inc, ends, best)
        v = rules.judge_bid(lot, BIDDER, price, at, cfg)
        floor = reserve if best is None else best + inc
        if at >= ends:
            assert isinstance(v, rules.Refusal) and v.reason == "lot_closed"
            continue
        if price < floor:
            assert isinstance(v, rules.Refusal)
            assert v.reason == ("below_reserve" if price < reserve else "below_best_plus_increment")
            continue
        assert isinstance(v, rules.BidAccepted) and v.becomes_best
        late = ends - at <= timedelta(seconds=cfg.extension_window_s)
        assert v.extended == late
        if late:
            assert v.ends_at == max(ends, at + timedelta(seconds=cfg.extension_s))
            assert v.ends_at - at >= timedelta(seconds=cfg.extension_window_s)  # always time to answer
        else:
            assert v.ends_at == ends
        ends, best = v.ends_at, price
        accepted.append(price)
    assert accepted == sorted(accepted) and all(b - a >= inc for a, b in zip(accepted, accepted[1:]))
    won = rules.winner(
        [rules.BidFacts(f"b{i}", f"f{i}", p, T0 + timedelta(seconds=i), i) for i, p in enumerate(accepted)],
        reserve,
    )
    assert (won.price_fen_per_t if won else None) == best


bids = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 100), st.integers(0, 30)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(bids, st.integers(1, 50))
def test_sealed_winner_highest_at_or_above_reserve_earliest_on_ties(raw, reserve):
    facts = [
        rules.BidFacts(f"b{i}", f"f{i % 7}", price, T0 + timedelta(seconds=sec), i)
        for i, (price, sec, _) in enumerate(raw)
    ]
    won = rules.winner(facts, reserve)
    eligible = [b for b in facts if b.price_fen_per_t >= reserve]
    if not eligible:
        assert won is None
        return
    top = max(b.price_fen_per_t for b in eligible)
    assert won.price_fen_per_t == top
    tied = [b for b in eligible if b.price_fen_per_t == top]
    assert all((won.placed_at, won.seq) <= (b.placed_at, b.seq) for b in tied)
    assert rules.losers(facts, won) == {b.firm_id for b in facts} - {won.firm_id}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(0, 10**6))
def test_sealed_bids_accepted_below_reserve_never_extend(reserve, price, secs_left):
    ends = T0 + timedelta(seconds=secs_left + 1)
    v = rules.judge_bid(_lot(SEALED, reserve, 0, ends), BIDDER, price, T0, rules.AuctionRules())
    assert isinstance(v, rules.BidAccepted)
    assert (
        v.below_reserve == (price < reserve) and not v.extended and v.ends_at == ends and not v.becomes_best
    )


@given(
    st.sampled_from([ASCENDING, SEALED]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 1000),
)
def test_who_may_bid(auction, own, verified, related, deposit_held, deposit_fen):
    lot = rules.LotFacts(
        "lot_1", "fm_s", LOT_OPEN, auction, 100, 10, T0 + timedelta(hours=1), None, deposit_fen
    )
    bidder = rules.BidderFacts("fm_s" if own else "fm_b", verified, related, deposit_held)
    v = rules.judge_bid(lot, bidder, 500, T0, rules.AuctionRules())
    expected = (
        "own_lot"
        if own
        else "firm_unverified"
        if not verified
        else "related_firm"
        if related
        else "deposit_required"
        if deposit_fen > 0 and not deposit_held
        else None
    )
    assert (v.reason if isinstance(v, rules.Refusal) else None) == expected


@given(
    st.integers(1, 10**8),
    st.integers(1, 10**8),
    st.integers(1, 10**7),
    st.decimals(min_value=0, max_value=10, places=2),
    st.integers(0, 1000),
)
def test_delivery_amount_and_tolerance(declared, delivered, price, tol, fee_bps):
    o = rules.delivery_outcome(
        declared_kg=declared,
        delivered_kg=delivered,
        price_fen_per_t=price,
        tolerance_pct=tol,
        fee_bps=fee_bps,
    )
    exact = Decimal(price) * delivered / 1000
    assert abs(o.amount_fen - exact) <= Decimal("0.5")
    assert 0 <= o.fee_fen <= o.amount_fen
    assert o.within_tolerance == (abs(Decimal(delivered - declared)) / declared * 100 <= tol)


@given(
    st.integers(1, 10**8),
    st.decimals(min_value=Decimal("0.01"), max_value=100, places=2),
    st.integers(-(10**9), 10**9),
)
def test_delivery_range_is_exactly_the_weights_within_the_deviation(declared, pct, offset):
    """A weight is in the range iff it is positive and at most `pct` % off the declared one: the ends are exact
    (whole kilograms, inclusive), so a weight just outside is refused and one just inside is taken."""
    low, high = rules.delivery_range_kg(declared, pct)
    kg = declared + offset

    def within(w: int) -> bool:
        return w > 0 and abs(w - declared) * 100 <= pct * declared

    assert (low <= kg <= high) == within(kg)
    assert within(low) and within(high) and within(declared)
    assert not within(high + 1) and (low == 1 or not within(low - 1))


@given(st.lists(st.integers(0, 10**6), max_size=20), st.integers(1, 10**7))
def test_intake_allocation_oldest_first_exact(avail, need):
    lines = [rules.IntakeLine(f"pk{i}", 0, a) for i, a in enumerate(avail)]
    taken = rules.allocate_intake(lines, need)
    if sum(avail) < need:
        assert taken is None
        return
    assert sum(g for _, g in taken) == need
    assert all(g <= line.available_g and g > 0 for line, g in taken)
    # oldest first: every line before the last one taken is used up
    for line, g in taken[:-1]:
        assert g == line.available_g
