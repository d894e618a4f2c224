"""Property tests of the price-index arithmetic (hypothesis)."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.pricing.domain.index_batch import columns_from_observations, compute_many
from services.pricing.domain.index_math import (
    TIERS,
    Basket,
    ExclusionReason,
    MadOutlierFilter,
    Observation,
    Quorum,
    SeriesConfig,
    chained_index,
    compute_series_value,
)

T0 = datetime(2026, 3, 2, 9, 30)
LOOSE = SeriesConfig("prop", quorum=Quorum(1, 1, Decimal(0)))
DEFAULT = SeriesConfig("prop", quorum=Quorum(5, 3, Decimal(1)))

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Prices mostly clustered (a real market) with the occasional wild one; quantities in grams (3 places).
prices = st.one_of(st.integers(900, 1100), st.integers(950, 1000), st.integers(0, 100_000))
qtys = st.integers(1, 5_000_000).map(lambda milli: Decimal(milli).scaleb(-3))


@st.composite
def observation_lists(
    draw: st.DrawFn,
    min_size: int = 0,
    max_size: int = 40,
    tiers: bool = True,
    related: bool = True,
    price_strategy: st.SearchStrategy[int] = prices,
) -> list[Observation]:
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        out.append(
            Observation(
                category="metal.steel",
                city_code=draw(st.sampled_from(["110000", "440300", "440305"])),
                unit_price_fen=draw(price_strategy),
                qty=draw(qtys),
                counterparty_id=draw(st.sampled_from("ABCDEFGH")),
                tier=draw(st.sampled_from(TIERS)) if tiers else "transaction",
                source_id=f"s{i}",
                observed_at=T0 + timedelta(minutes=i),
                related_party=draw(st.booleans()) if related and draw(st.integers(0, 9)) == 0 else False,
            )
        )
    return out


def _exact_vwap(res_kept: list[Observation]) -> Fraction:
    return sum(Fraction(o.unit_price_fen) * Fraction(o.qty) for o in res_kept) / sum(
        Fraction(o.qty) for o in res_kept
    )


def _kept(observations: list[Observation], res) -> list[Observation]:
    gone = {e.source_id for e in res.exclusions}
    return [o for o in observations if o.source_id not in gone]


@PROPS
@given(observation_lists(), st.randoms(use_true_random=False), st.sampled_from([LOOSE, DEFAULT]))
def test_the_value_does_not_depend_on_the_order_of_observations(observations, rnd, config) -> None:
    shuffled = list(observations)
    rnd.shuffle(shuffled)
    assert compute_series_value(shuffled, config) == compute_series_value(observations, config)


@PROPS
@given(
    observation_lists(min_size=1, related=False, price_strategy=st.integers(1, 100_000)), st.integers(1, 1000)
)
def test_scaling_all_prices_by_c_scales_the_value_by_c(observations, c) -> None:
    scaled = [
        Observation(
            o.category,
            o.city_code,
            o.unit_price_fen * c,
            o.qty,
            o.counterparty_id,
            o.tier,
            o.source_id,
            o.observed_at,
        )
        for o in observations
    ]
    a = compute_series_value(observations, DEFAULT)
    b = compute_series_value(scaled, DEFAULT)
    # The filter is scale-free: the same inputs are kept and excluded, so the status is the same.
    assert a.exclusions == b.exclusions and a.status == b.status
    if a.published:
        exact = _exact_vwap(_kept(observations, a))
        assert abs(b.value_fen - c * exact) <= Fraction(1, 2)  # only the final half-up rounding differs
        assert abs(Fraction(b.value_fen, c) - a.value_fen) <= 1  # within 1 fen in the original units


@PROPS
@given(observation_lists(min_size=2, tiers=False, related=False, price_strategy=st.integers(1, 100_000)))
def test_one_extreme_outlier_moves_the_value_no_more_than_the_filter_allows(observations) -> None:
    top = max(o.unit_price_fen for o in observations)
    spread = top - min(o.unit_price_fen for o in observations)
    # Far beyond any band the original prices allow: the band is at most max(3 × 1.4826 × spread, 5 % × top).
    extreme = 10 * (top + spread) + 1000
    wild = Observation("metal.steel", "110000", extreme, Decimal(10_000), "Z", "transaction", "wild", T0)
    before = compute_series_value(observations, LOOSE)
    after = compute_series_value(observations + [wild], LOOSE)
    assert {e.source_id: e.reason for e in after.exclusions}.get("wild") == ExclusionReason.OUTLIER_HIGH
    assert before.published and after.published
    # The value stays inside the new band (up to the final rounding) and inside the range of genuine prices.
    assert math.floor(after.band_low_fen) <= after.value_fen <= math.ceil(after.band_high_fen)
    assert min(o.unit_price_fen for o in observations) <= after.value_fen <= top
    # ... so it moves by at most the two bands' reach, never towards the outlier's price.
    reach = max(after.band_high_fen, before.band_high_fen) - min(after.band_low_fen, before.band_low_fen)
    assert abs(after.value_fen - before.value_fen) <= math.ceil(reach)


@PROPS
@given(
    observation_lists(min_size=1, related=False, price_strategy=st.integers(1, 100_000)), st.integers(2, 50)
)
def test_multiplying_every_quantity_leaves_the_price_unchanged(observations, factor) -> None:
    bigger = [
        Observation(
            o.category,
            o.city_code,
            o.unit_price_fen,
            o.qty * factor,
            o.counterparty_id,
            o.tier,
            o.source_id,
            o.observed_at,
        )
        for o in observations
    ]
    assert (
        compute_series_value(bigger, LOOSE).value_fen == compute_series_value(observations, LOOSE).value_fen
    )


@PROPS
@given(
    observation_lists(max_size=80, price_strategy=st.one_of(prices, st.integers(-2000, 2000))),
    st.sampled_from(
        [
            LOOSE,
            DEFAULT,
            SeriesConfig(
                "p",
                MadOutlierFilter(Decimal("1.5"), min_band_pct=Decimal(0)),
                Quorum(3, 2, Decimal(5)),
                ("transaction", "quote"),
            ),
        ]
    ),
)
def test_the_vectorised_path_gives_exactly_the_per_series_results(observations, config) -> None:
    cols, keys, sources = columns_from_observations(observations, key=lambda o: o.city_code)
    batch = compute_many(cols, config).to_series_results(sources)
    assert len(batch) == len(keys)
    for sid, key in enumerate(keys):
        expected = compute_series_value([o for o in observations if o.city_code == key], config)
        assert batch[sid] == expected


# ------------------------------------------------------------------------------------------------ indices

components = st.sampled_from(["paper.cardboard", "paper.books", "plastic.pet", "metal.steel", "metal.copper"])
baskets = st.dictionaries(components, st.integers(1, 10_000).map(lambda n: Decimal(n).scaleb(-1)), min_size=1)
price_maps = st.fixed_dictionaries(
    {
        c: st.integers(1, 100_000)
        for c in ["paper.cardboard", "paper.books", "plastic.pet", "metal.steel", "metal.copper"]
    }
)
BASE = date(2026, 1, 1)


@PROPS
@given(baskets, price_maps, st.integers(1, 1000))
def test_index_of_the_base_period_is_100(quantities, base_prices, base_value) -> None:
    points = chained_index({BASE: base_prices}, [Basket(BASE, quantities)])
    assert points[0].value == Decimal("100.00")
    points = chained_index({BASE: base_prices}, [Basket(BASE, quantities)], base_value=base_value)
    assert points[0].value == Decimal(base_value)


@PROPS
@given(baskets, price_maps, st.integers(1, 50))
def test_all_prices_times_c_gives_100_times_c(quantities, base_prices, c) -> None:
    later = {k: v * c for k, v in base_prices.items()}
    points = chained_index({BASE: base_prices, BASE + timedelta(days=1): later}, [Basket(BASE, quantities)])
    assert points[1].value == Decimal(100 * c).quantize(Decimal("0.01"))


@PROPS
@given(baskets, baskets, st.lists(price_maps, min_size=4, max_size=4), st.integers(1, 3))
def test_chain_linking_is_continuous_on_the_link_date(first, second, daily, link_offset) -> None:
    prices = {BASE + timedelta(days=i): p for i, p in enumerate(daily)}
    link = BASE + timedelta(days=link_offset)
    chained = chained_index(prices, [Basket(BASE, first), Basket(link, second)], places=6)
    unchained = chained_index(prices, [Basket(BASE, first)], places=6)
    on_link = {p.day: p for p in chained}[link]
    assert on_link.value == {p.day: p for p in unchained}[link].value  # no jump when the basket changes
    assert [p.value for p in chained if p.day < link] == [p.value for p in unchained if p.day < link]
    assert chained[0].value == Decimal("100.000000")
