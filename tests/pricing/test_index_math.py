"""Hand-computed reference cases for the price-index arithmetic and the methodology document.

Every expected number is worked out in the comments next to it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from services.kernel.money import to_fen
from services.pricing.domain.index_batch import (
    ObservationColumns,
    columns_from_observations,
    compute_many,
    series_id_for,
)
from services.pricing.domain.index_math import (
    INSUFFICIENT_DATA,
    PUBLISHED,
    REASON_CODES,
    TIER_CODES,
    USED,
    Basket,
    ChainLinkError,
    ExclusionReason,
    MadOutlierFilter,
    Observation,
    Quorum,
    SeriesConfig,
    SeriesResult,
    chained_index,
    compute_series_value,
    div_half_up,
    laspeyres,
    resolve_with_fallback,
    volume_weighted_average_fen,
)
from services.pricing.domain.methodology import (
    MethodologyError,
    load_methodology,
    parse_methodology,
    render_methodology_markdown,
)

T0 = datetime(2026, 3, 2, 9, 30)
_ids = itertools.count(1)


def obs(
    price: int,
    qty: str | int = "100",
    party: str = "A",
    tier: str = "transaction",
    *,
    related: bool = False,
    city: str = "110000",
    category: str = "metal.steel",
    source: str | None = None,
) -> Observation:
    return Observation(
        category, city, price, Decimal(str(qty)), party, tier, source or f"s{next(_ids)}", T0, related
    )


def parties(n: int) -> list[str]:
    return [f"P{i}" for i in range(n)]


LOOSE = SeriesConfig("test", quorum=Quorum(1, 1, Decimal(0)))  # quorum out of the way for filter tests


def reasons(res: SeriesResult) -> dict[str, str]:
    return {e.source_id: e.reason.value for e in res.exclusions}


# ------------------------------------------------------------------------------------------------ VWAP


def test_vwap_weights_by_quantity() -> None:
    # (1000 × 10 + 1200 × 30) / 40 = (10000 + 36000) / 40 = 1150
    assert volume_weighted_average_fen([(1000, Decimal(10)), (1200, Decimal(30))]) == 1150


def test_vwap_rounds_half_up_like_money() -> None:
    # (100 + 101) / 2 = 100.5 → 101; (-100 - 101) / 2 = -100.5 → -101 (half away from zero, as to_fen)
    assert volume_weighted_average_fen([(100, Decimal(1)), (101, Decimal(1))]) == 101
    assert volume_weighted_average_fen([(-100, Decimal(1)), (-101, Decimal(1))]) == to_fen(Decimal("-100.5"))
    # (100 × 2 + 101 × 1) / 3 = 100.333… → 100
    assert volume_weighted_average_fen([(100, Decimal(2)), (101, Decimal(1))]) == 100


def test_vwap_is_exact_for_gram_quantities() -> None:
    # (333 × 0.001 + 334 × 0.002) / 0.003 = (0.333 + 0.668) / 0.003 = 333.666… → 334
    assert volume_weighted_average_fen([(333, Decimal("0.001")), (334, Decimal("0.002"))]) == 334
    # Mixed places: (250 × 1.5 + 260 × 2) / 3.5 = (375 + 520) / 3.5 = 255.714… → 256
    assert volume_weighted_average_fen([(250, Decimal("1.5")), (260, Decimal(2))]) == 256


def test_vwap_needs_a_positive_volume() -> None:
    with pytest.raises(ValueError):
        volume_weighted_average_fen([(100, Decimal(0))])


def test_div_half_up() -> None:
    assert [div_half_up(n, 4) for n in (1, 2, 3, 6, -2, -6, -1)] == [0, 1, 1, 2, -1, -2, 0]


# -------------------------------------------------------------------------------------- outlier filter


def test_mad_band_reference_case() -> None:
    # prices 100 102 104 106 108 200: median = (104 + 106) / 2 = 105
    # |p − 105| = 5 3 1 1 3 95 → sorted 1 1 3 3 5 95 → MAD = (3 + 3) / 2 = 3
    # half-width = max(3 × 1.4826 × 3, 5 % × 105) = max(13.3434, 5.25) = 13.3434 → band [91.6566, 118.3434]
    band = MadOutlierFilter().band([100, 102, 104, 106, 108, 200])
    assert band.median_fen == Decimal(105) and band.mad_fen == Decimal(3)
    assert band.half_width_fen == Decimal("13.3434")
    assert (band.low_fen, band.high_fen) == (Decimal("91.6566"), Decimal("118.3434"))
    assert [band.classify(p) for p in (100, 108, 118, 119, 91, 92)] == [
        None,
        None,
        None,
        ExclusionReason.OUTLIER_HIGH,
        ExclusionReason.OUTLIER_LOW,
        None,
    ]


def test_series_discloses_each_outlier_with_its_side() -> None:
    # median 105, band [91.6566, 118.3434] as above, plus 20 (far below): with seven prices
    # 20 100 102 104 106 108 200 the median is 104; |p − 104| = 84 4 2 0 2 4 96 → MAD = 4;
    # half-width = max(3 × 1.4826 × 4, 5.2) = 17.7912 → band [86.2088, 121.7912]: 20 low, 200 high.
    res = compute_series_value(
        [obs(20, source="low"), obs(100), obs(102), obs(104), obs(106), obs(108), obs(200, source="high")],
        LOOSE,
    )
    assert reasons(res) == {"low": "outlier_low", "high": "outlier_high"}
    assert res.median_fen == 104 and res.band_low_fen == Decimal("86.2088")
    assert res.n_obs == 5 and res.n_excluded == 2
    assert res.value_fen == 104  # equal quantities: (100 + 102 + 104 + 106 + 108) / 5 = 104
    assert res.exclusion_counts == {"outlier_high": 1, "outlier_low": 1}


def test_zero_mad_falls_back_to_the_percentage_band() -> None:
    # 900 1000 1000 1000 1000 1030 1060: median 1000, deviations 100 0 0 0 0 30 60 → MAD = 0.
    # A pure MAD band would keep only the four 1000s; the 5 % floor gives ±50 → [950, 1050]:
    # 1030 kept, 1060 high, 900 low.
    prices = [900, 1000, 1000, 1000, 1000, 1030, 1060]
    band = MadOutlierFilter().band(prices)
    assert band.mad_fen == 0 and (band.low_fen, band.high_fen) == (Decimal(950), Decimal(1050))
    res = compute_series_value([obs(p, source=str(p) + "-" + str(i)) for i, p in enumerate(prices)], LOOSE)
    assert sorted(reasons(res).values()) == ["outlier_high", "outlier_low"]
    # kept: 1000 × 4 + 1030 = 5030 over 5 → 1006
    assert res.value_fen == 1006


def test_band_bounds_are_inclusive_and_exact() -> None:
    # MAD 0 at median 1000 → ±50: 1050 is inside, 1051 is not.
    assert MadOutlierFilter().band([1000, 1000, 1000, 1050]).classify(1050) is None
    assert MadOutlierFilter().band([1000, 1000, 1000, 1051]).classify(1051) == ExclusionReason.OUTLIER_HIGH
    # 80000 90000 100000 100000 110000 120000 X: median 100000;
    # deviations 20000 10000 0 0 10000 20000 (X − 100000)
    # → MAD = 10000 (4th of 7), half-width = 3 × 1.4826 × 10000 = 44478 exactly (floor 5000 is smaller).
    base = [80000, 90000, 100000, 100000, 110000, 120000]
    assert MadOutlierFilter().band(base + [144478]).classify(144478) is None
    assert MadOutlierFilter().band(base + [144479]).classify(144479) == ExclusionReason.OUTLIER_HIGH


def test_zero_median_and_zero_mad_keep_only_zero() -> None:
    # Glass that pays nothing: 0 0 0 5 → median 0, MAD 0, floor 5 % of 0 = 0 → 5 is excluded.
    band = MadOutlierFilter().band([0, 0, 0, 5])
    assert band.classify(0) is None and band.classify(5) == ExclusionReason.OUTLIER_HIGH


def test_one_or_two_inputs_are_never_outliers() -> None:
    # two prices sit exactly one MAD from their midpoint: (100 + 10000) / 2 = 5050, MAD = 4950
    band = MadOutlierFilter().band([100, 10000])
    assert band.classify(100) is None and band.classify(10000) is None
    assert MadOutlierFilter().band([7]).classify(7) is None


def test_k_comes_from_config() -> None:
    # prices 100 102 104 106 108 200 → MAD 3; with k = 1: max(1.4826 × 3, 5.25) = 5.25 → [99.75, 110.25]
    band = MadOutlierFilter(k=Decimal(1)).band([100, 102, 104, 106, 108, 200])
    assert band.half_width_fen == Decimal("5.25")
    assert band.classify(99) == ExclusionReason.OUTLIER_LOW and band.classify(110) is None


# ------------------------------------------------------------------------------------ quorum and tiers


def test_quorum_needs_count_counterparties_and_volume() -> None:
    q = Quorum(5, 3, Decimal(10))
    assert q.shortfall(5, 3, Decimal(10)) == ()
    assert q.shortfall(4, 2, Decimal("9.5")) == (
        "observations 4 < 5",
        "counterparties 2 < 3",
        "volume 9.5 < 10",
    )


def test_below_quorum_is_insufficient_data_never_a_value() -> None:
    config = SeriesConfig("v", quorum=Quorum(5, 3, Decimal(0)))
    res = compute_series_value([obs(200, party=p) for p in parties(4)], config)
    assert res.status == INSUFFICIENT_DATA and res.value_fen is None
    assert res.shortfall == ("observations 4 < 5",) and res.n_obs == 4


def test_one_party_cannot_make_a_price_alone() -> None:
    config = SeriesConfig("v", quorum=Quorum(5, 3, Decimal(0)))
    res = compute_series_value([obs(200 + i, party="same") for i in range(8)], config)
    assert res.status == INSUFFICIENT_DATA and res.shortfall == ("counterparties 1 < 3",)


def test_minimum_volume_is_in_the_category_unit() -> None:
    config = SeriesConfig("v", quorum=Quorum(5, 3, Decimal(100)))
    few = [obs(200, "19.999", p) for p in parties(5)]  # 5 × 19.999 = 99.995 kg < 100
    assert compute_series_value(few, config).shortfall == ("volume 99.995 < 100",)
    enough = [obs(200, "20", p) for p in parties(5)]  # 100 kg
    assert compute_series_value(enough, config).published


def test_quorum_counts_the_inputs_kept_after_the_outlier_filter() -> None:
    # five inputs but one is far off: only four are kept → insufficient.
    config = SeriesConfig("v", quorum=Quorum(5, 3, Decimal(0)))
    res = compute_series_value(
        [obs(p, party=c) for p, c in zip([200, 201, 202, 203, 900], parties(5), strict=True)], config
    )
    assert res.status == INSUFFICIENT_DATA and res.n_obs == 4 and res.exclusion_counts == {"outlier_high": 1}


def test_transactions_alone_when_they_reach_quorum() -> None:
    config = SeriesConfig("v", quorum=Quorum(5, 3, Decimal(0)))
    tx = [obs(200 + i, party=p) for i, p in enumerate(parties(5))]  # 200..204, equal qty → 202
    quotes = [
        obs(300, party="Q1", tier="quote", source="q1"),
        obs(310, party="Q2", tier="quote", source="q2"),
    ]
    res = compute_series_value(tx + quotes, config)
    assert res.published and res.value_fen == 202 and res.tiers_used == ("transaction",)
    assert reasons(res) == {"q1": "lower_tier_not_needed", "q2": "lower_tier_not_needed"}


def test_lower_tiers_are_added_one_at_a_time() -> None:
    # 3 transactions (< 5) → add verified deals: 3 + 2 = 5 → published; the quote is not needed.
    config = SeriesConfig("v", quorum=Quorum(5, 3, Decimal(0)))
    rows = [
        obs(200, "100", "A"),
        obs(204, "100", "B"),
        obs(202, "200", "C"),
        obs(210, "100", "D", "verified_deal"),
        obs(196, "100", "E", "verified_deal"),
        obs(150, "100", "F", "quote", source="q"),
    ]
    res = compute_series_value(rows, config)
    # (200·100 + 204·100 + 202·200 + 210·100 + 196·100) / 600
    # = (20000 + 20400 + 40400 + 21000 + 19600) / 600 = 121400 / 600
    # = 202.333… → 202
    assert res.value_fen == 202 and res.tiers_used == ("transaction", "verified_deal")
    assert reasons(res) == {"q": "lower_tier_not_needed"}


def test_reference_series_with_related_party_outlier_and_quotes() -> None:
    """Steel, one city, one day (fen/kg):

    t1 200 × 100 A;  t2 210 × 300 B;  t3 190 × 100 C;  t4 205 × 200 A;  t5 600 × 50 D;
    t6 200 × 250 E related party;  q1 195 × 1000 F (firm quote).

    Transactions alone (t6 excluded): 190 200 205 210 600 → median 205, deviations 15 5 0 5 395 → MAD 5,
    half-width max(3 × 1.4826 × 5, 10.25) = 22.239 → 600 out; 4 kept < 5 → not enough.
    Adding verified deals: none. Adding quotes: 190 195 200 205 210 600 → median 202.5, deviations
    12.5 7.5 2.5 2.5 7.5 397.5 → MAD 7.5, half-width 33.3585 → band [169.1415, 235.8585]; 600 out.
    Kept: 190×100 + 195×1000 + 200×100 + 205×200 + 210×300 = 19000 + 195000 + 20000 + 41000 + 63000 = 338000
    over 1700 kg = 198.82… → 199 fen. Counterparties A B C F = 4.
    """
    rows = [
        obs(200, "100", "A", source="t1"),
        obs(210, "300", "B", source="t2"),
        obs(190, "100", "C", source="t3"),
        obs(205, "200", "A", source="t4"),
        obs(600, "50", "D", source="t5"),
        obs(200, "250", "E", related=True, source="t6"),
        obs(195, "1000", "F", "quote", source="q1"),
    ]
    config = SeriesConfig("2026.1", quorum=Quorum(5, 3, Decimal(200)))
    res = compute_series_value(rows, config)
    assert res.status == PUBLISHED and res.value_fen == 199
    assert (res.n_obs, res.n_excluded, res.counterparties, res.volume) == (5, 2, 4, Decimal(1700))
    assert reasons(res) == {"t5": "outlier_high", "t6": "related_party"}
    assert res.tiers_used == ("transaction", "verified_deal", "quote")
    assert (res.median_fen, res.band_low_fen, res.band_high_fen) == (
        Decimal("202.5"),
        Decimal("169.1415"),
        Decimal("235.8585"),
    )
    assert res.methodology_version == "2026.1"


def test_self_dealing_hook_excludes_with_reason() -> None:
    rows = [obs(200, party=p, source=f"r{p}") for p in parties(6)]
    res = compute_series_value(rows, LOOSE, is_related_party=lambda o: o.counterparty_id == "P0")
    assert reasons(res) == {"rP0": "related_party"} and res.n_obs == 5


def test_tiers_the_methodology_does_not_accept_and_bad_quantities_are_excluded() -> None:
    config = SeriesConfig("v", quorum=Quorum(1, 1, Decimal(0)), tiers=("transaction",))
    res = compute_series_value(
        [
            obs(200),
            obs(300, tier="quote", source="q"),
            obs(200, "0", source="zero"),
            obs(200, "-1", source="neg"),
        ],
        config,
    )
    assert reasons(res) == {"q": "ineligible_tier", "zero": "invalid_quantity", "neg": "invalid_quantity"}
    assert res.value_fen == 200


def test_listing_asks_cannot_be_observations() -> None:
    with pytest.raises(ValueError):
        obs(200, tier="listing_ask")
    with pytest.raises(ValueError):
        Observation("metal.steel", "110000", 2.5, Decimal(1), "A", "transaction", "s", T0)  # type: ignore[arg-type]


def test_a_series_is_one_category_but_may_span_cities() -> None:
    with pytest.raises(ValueError, match="one category"):
        compute_series_value([obs(200), obs(200, category="metal.copper")], LOOSE)
    province = compute_series_value([obs(200, city="440300"), obs(210, city="440305")], LOOSE)
    assert province.value_fen == 205


def test_no_inputs_is_insufficient_with_no_band() -> None:
    res = compute_series_value([], SeriesConfig())
    assert res.status == INSUFFICIENT_DATA and res.median_fen is None and res.n_obs == 0 and res.volume == 0


def test_disclosure_has_counts_but_no_contributors() -> None:
    rows = [obs(200 + i, party=f"secret-party-{i}", source=f"secret-src-{i}") for i in range(5)]
    rows.append(obs(9999, party="secret-party-x", source="secret-src-x"))
    public = compute_series_value(rows, SeriesConfig("v", quorum=Quorum(3, 3, Decimal(0)))).disclosure()
    assert public["excluded_by_reason"] == {"outlier_high": 1} and public["counterparties"] == 5
    assert "secret" not in repr(public)


# -------------------------------------------------------------------------------------------- fallback


def _published(value: int) -> SeriesResult:
    return compute_series_value([obs(value, party=p) for p in parties(5)], SeriesConfig("v"))


def _insufficient() -> SeriesResult:
    return compute_series_value([obs(100)], SeriesConfig("v"))


CHAIN = ["440305", "440000", "000000"]


def test_fallback_uses_the_region_itself_when_published() -> None:
    r = resolve_with_fallback({"440305": _published(210), "440000": _published(200)}, CHAIN)
    assert (r.value_fen, r.source_region, r.stale) == (210, "440305", False)


def test_fallback_takes_the_province_and_flags_it_stale() -> None:
    r = resolve_with_fallback(
        {"440305": _insufficient(), "440000": _published(200), "000000": _published(190)}, CHAIN
    )
    assert (r.status, r.value_fen, r.source_region, r.stale) == (PUBLISHED, 200, "440000", True)
    assert r.region_code == "440305" and r.tried == ("440305", "440000")


def test_fallback_to_national_when_the_province_has_no_series() -> None:
    r = resolve_with_fallback({"000000": _published(190)}, CHAIN)
    assert (r.value_fen, r.source_region, r.stale) == (190, "000000", True)


def test_fallback_with_nothing_published_is_insufficient_never_carried_forward() -> None:
    r = resolve_with_fallback({"440305": _insufficient()}, CHAIN)
    assert (r.status, r.value_fen, r.source_region, r.stale) == (INSUFFICIENT_DATA, None, None, False)


# ------------------------------------------------------------------------------------------- Laspeyres


D = date(2026, 1, 1)
PAPER = Basket(D, {"paper.cardboard": Decimal(300), "paper.books": Decimal(100)})


def test_laspeyres_reference_case() -> None:
    # base: 300 × 140 + 100 × 110 = 42000 + 11000 = 53000
    # t:    300 × 154 + 100 × 110 = 46200 + 11000 = 57200 → 100 × 57200 / 53000 = 107.9245…
    base = {"paper.cardboard": 140, "paper.books": 110}
    value = laspeyres({"paper.cardboard": 154, "paper.books": 110}, base, PAPER.quantities)
    assert value == pytest.approx(107.9245283, abs=1e-7)
    assert laspeyres(base, base, PAPER.quantities) == 100


def test_chain_linking_reference_case() -> None:
    """Basket 1 (from D): cardboard 300, books 100. Basket 2 (from D+2): cardboard 200, books 200.

    D:   140 / 110 → 100 (base: 53000)
    D+1: 154 / 110 → 100 × 57200 / 53000 = 107.92
    D+2 (link): old basket 300×150 + 100×121 = 57100 → I_L = 100 × 57100 / 53000 = 107.7358…; with the new
         basket the link day is I_L itself → 107.74
    D+3: 165 / 121, new basket: 200×165 + 200×121 = 57200 over the link value 200×150 + 200×121 = 54200
         → 107.7358… × 57200 / 54200 = 113.6990… → 113.70   (the old basket would say 61600/53000 → 116.23)
    """
    new = Basket(D + timedelta(days=2), {"paper.cardboard": Decimal(200), "paper.books": Decimal(200)})
    prices = {
        D: {"paper.cardboard": 140, "paper.books": 110},
        D + timedelta(days=1): {"paper.cardboard": 154, "paper.books": 110},
        D + timedelta(days=2): {"paper.cardboard": 150, "paper.books": 121},
        D + timedelta(days=3): {"paper.cardboard": 165, "paper.books": 121},
    }
    points = chained_index(prices, [new, PAPER])  # basket order does not matter
    assert [p.value for p in points] == [
        Decimal("100.00"),
        Decimal("107.92"),
        Decimal("107.74"),
        Decimal("113.70"),
    ]
    assert [p.basket_effective for p in points] == [D, D, D + timedelta(days=2), D + timedelta(days=2)]
    assert all(p.status == PUBLISHED and p.stale_components == () for p in points)


def test_missing_component_is_carried_forward_as_stale_then_insufficient() -> None:
    # books priced on D only; max_carry_days = 3 → D+1..D+3 carry 110 (stale), D+4 is insufficient.
    prices = {D: {"paper.cardboard": 140, "paper.books": 110}}
    for i in range(1, 5):
        prices[D + timedelta(days=i)] = {"paper.cardboard": 154, "paper.books": None}
    points = chained_index(prices, [PAPER], max_carry_days=3)
    assert [p.value for p in points[1:4]] == [Decimal("107.92")] * 3  # as in the Laspeyres reference case
    assert all(p.stale_components == ("paper.books",) for p in points[1:4])
    assert points[4].status == INSUFFICIENT_DATA and points[4].value is None
    assert points[4].missing_components == ("paper.books",)


def test_base_and_link_dates_need_prices() -> None:
    with pytest.raises(ChainLinkError):
        chained_index({D: {"paper.cardboard": 140}}, [PAPER])
    later = Basket(D + timedelta(days=10), {"plastic.pet": Decimal(1)})
    with pytest.raises(ChainLinkError):
        chained_index({D: {"paper.cardboard": 140, "paper.books": 110}}, [PAPER, later])


def test_index_places_and_base_value_are_config() -> None:
    prices = {D: {"x": 3}, D + timedelta(days=1): {"x": 4}}
    points = chained_index(prices, [Basket(D, {"x": Decimal(1)})], base_value=1000, places=4)
    assert [p.value for p in points] == [Decimal("1000.0000"), Decimal("1333.3333")]


# ------------------------------------------------------------------------------------- vectorised path


def _reference_rows() -> list[Observation]:
    return [
        obs(200, "100", "A", source="t1"),
        obs(210, "300", "B", source="t2"),
        obs(190, "100", "C", source="t3"),
        obs(205, "200", "A", source="t4"),
        obs(600, "50", "D", source="t5"),
        obs(200, "250", "E", related=True, source="t6"),
        obs(195, "1000", "F", "quote", source="q1"),
    ]


def test_compute_many_matches_the_reference_series() -> None:
    rows = _reference_rows() + [obs(300 + i, "10", p, city="440300") for i, p in enumerate(parties(3))]
    config = SeriesConfig("2026.1", quorum=Quorum(5, 3, Decimal(200)))
    cols, keys, sources = columns_from_observations(rows)
    batch = compute_many(cols, config)
    results = batch.to_series_results(sources)
    by_key = {keys[sid]: res for sid, res in results.items()}
    steel_bj = by_key[("metal.steel", "110000")]
    assert steel_bj == compute_series_value(rows[:7], config)
    assert steel_bj.value_fen == 199
    assert by_key[("metal.steel", "440300")] == compute_series_value(rows[7:], config)
    assert by_key[("metal.steel", "440300")].status == INSUFFICIENT_DATA
    # counts for disclosure without per-row objects: column 0 = used, column c = REASON_CODES[c]
    row = batch.reason_counts()[keys.index(("metal.steel", "110000"))]  # series_id i is keys[i]
    counts = dict(zip(["used", *(r.value for r in REASON_CODES.values())], row.tolist(), strict=True))
    assert {k: v for k, v in counts.items() if v} == {"used": 5, "related_party": 1, "outlier_high": 1}
    # row reasons line up with the caller's rows
    assert [REASON_CODES[c].value if c != USED else "" for c in batch.row_reason[:7].tolist()] == [
        "",
        "",
        "",
        "",
        "outlier_high",
        "related_party",
        "",
    ]


def test_compute_many_with_unsorted_rows_and_per_series_configs() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    sid = rng.integers(0, 20, n) * 1_000_000 + 110000
    cols = ObservationColumns(
        series_id=sid,
        unit_price_fen=rng.integers(100, 130, n),
        qty_milli=rng.integers(1, 50_000, n),
        counterparty=rng.integers(0, 30, n),
        tier=rng.integers(0, 3, n),
        related_party=rng.random(n) < 0.05,
    )
    strict = SeriesConfig("v", quorum=Quorum(150, 10, Decimal(500)))  # ~100 rows per series: never enough
    loose = SeriesConfig("v", MadOutlierFilter(k=Decimal(2)), Quorum(5, 3, Decimal(10)))
    configs = {int(s): (strict if (s // 1_000_000) % 2 else loose) for s in np.unique(sid)}
    batch = compute_many(cols, configs)
    results = batch.to_series_results()
    for s in batch.series_id.tolist():
        rows = np.flatnonzero(sid == s)
        expected = compute_series_value(
            [
                Observation(
                    "c",
                    "110000",
                    int(cols.unit_price_fen[r]),
                    Decimal(int(cols.qty_milli[r])).scaleb(-3),
                    str(int(cols.counterparty[r])),
                    ("transaction", "verified_deal", "quote")[cols.tier[r]],
                    str(r),
                    T0,
                    bool(cols.related_party[r]),
                )
                for r in rows
            ],
            configs[s],
        )
        assert results[s] == expected, s
    assert batch.published.any() and not batch.published.all()
    assert set(batch.levels_used.tolist()) == {1, 3}  # loose: transactions suffice; strict: every tier tried


def test_compute_many_overflow_guard_takes_the_exact_path() -> None:
    # 2^40 fen × 2^30 milli-units overflows int64 products; the result must still be exact.
    big = 1 << 40
    rows = [obs(big + i, str(1 << 20), p) for i, p in enumerate(parties(5))]
    cols, _, sources = columns_from_observations(rows)
    got = compute_many(cols, LOOSE).to_series_results(sources)[0]
    assert got == compute_series_value(rows, LOOSE)
    assert got.value_fen == big + 2


def test_compute_many_rounds_half_up_like_the_per_series_path() -> None:
    # 100 and 101 at equal quantity → 100.5 → 101; -100 and -101 → -100.5 → -101 (half away from zero)
    rows = [
        obs(100, party="A"),
        obs(101, party="B"),
        obs(-100, party="A", city="440300"),
        obs(-101, party="B", city="440300"),
    ]
    cols, keys, sources = columns_from_observations(rows)
    got = {
        keys[sid]: res.value_fen for sid, res in compute_many(cols, LOOSE).to_series_results(sources).items()
    }
    assert got == {("metal.steel", "110000"): 101, ("metal.steel", "440300"): -101}


def test_compute_many_of_nothing() -> None:
    cols = ObservationColumns(*(np.zeros(0, dtype=np.int64) for _ in range(5)))
    assert len(compute_many(cols, SeriesConfig())) == 0


def test_series_id_for_packs_category_and_region() -> None:
    assert series_id_for(3, "440305") == 3_440_305
    assert TIER_CODES == {"transaction": 0, "verified_deal": 1, "quote": 2}


# ----------------------------------------------------------------------------------------- methodology


def test_bundled_methodology_is_versioned_and_complete() -> None:
    m = load_methodology()
    assert m.version == "2026.1" and m.base_value == 100 and m.base_date == date(2026, 1, 1)
    assert m.outliers == MadOutlierFilter(Decimal(3), Decimal("1.4826"), Decimal(5))
    assert set(m.categories) == {
        "paper.cardboard",
        "paper.books",
        "plastic.pet",
        "metal.steel",
        "metal.copper",
        "metal.aluminium",
        "appliance.ac",
        "appliance.fridge",
        "appliance.washer",
        "appliance.tv",
        "electronics.computer",
        "textile.clothes",
        "glass.mixed",
        "hazardous.battery",
    }
    assert {f.name for f in m.families.values()} >= {"废钢", "废纸", "废塑料", "有色金属"}
    assert set(m.families["all"].components) == set(m.categories)
    assert m.specification.tax_inclusive is True


def test_series_config_carries_version_quorum_and_category_volume() -> None:
    m = load_methodology()
    steel, ac = m.series_config("metal.steel"), m.series_config("appliance.ac")
    assert steel.methodology_version == ac.methodology_version == "2026.1"
    assert steel.quorum == Quorum(5, 3, Decimal(200)) and ac.quorum.min_volume == Decimal(3)
    assert steel.outliers is m.outliers and steel.tiers == ("transaction", "verified_deal", "quote")
    with pytest.raises(KeyError):
        m.series_config("paper.unknown")


def test_methodology_units_agree_with_the_taxonomy() -> None:
    taxonomy = pytest.importorskip("services.kernel.taxonomy")
    cats = taxonomy.categories()
    for code, spec in load_methodology().categories.items():
        if code in cats:
            assert cats[code].unit == spec.unit, code


def test_family_index_from_the_methodology() -> None:
    m = load_methodology()
    # paper basket 300 cardboard + 100 books; prices as in test_laspeyres_reference_case
    points = m.family_index(
        "paper",
        {
            D: {"paper.cardboard": 140, "paper.books": 110},
            D + timedelta(days=1): {"paper.cardboard": 154, "paper.books": 110},
        },
    )
    assert [p.value for p in points] == [Decimal("100.00"), Decimal("107.92")]


def test_document_is_rendered_from_the_same_config() -> None:
    m = load_methodology()
    doc = render_methodology_markdown(m)
    assert "methodology 2026.1" in doc
    assert "max(3 × 1.4826 × MAD, 5 % × |m|)" in doc
    assert "at least **5** observations" in doc and "at least **3** distinct counterparties" in doc
    for code in m.categories:
        assert f"`{code}`" in doc
    for section in (
        "Specification",
        "Inputs and their hierarchy",
        "Data sufficiency",
        "Outliers",
        "Fallbacks",
        "Restatements and corrections",
        "Confidentiality",
        "Governance",
        "Audit trail",
        "IOSCO",
    ):
        assert section in doc
    assert "tax-inclusive" in doc and "10:00 Asia/Shanghai" in doc
    # the worked example is computed by the code: 198..210 kept, 900 out, VWAP 203 fen
    assert "value = **203 fen**" in doc


def test_changing_the_config_changes_the_document() -> None:
    m = load_methodology()
    changed = replace(m, version="2026.2", outliers=MadOutlierFilter(Decimal("2.5")), min_observations=7)
    doc = render_methodology_markdown(changed)
    assert (
        "methodology 2026.2" in doc
        and "max(2.5 × 1.4826 × MAD" in doc
        and "at least **7** observations" in doc
    )
    assert changed.series_config("metal.steel").quorum.min_observations == 7


def _toml() -> str:
    from importlib import resources

    return resources.files("services.pricing").joinpath("methodology.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('k = "3"', "k = 3.0", "write decimals as strings"),
        ('chain = ["city", "province", "national"]', 'chain = ["city", "national"]', "fallback.chain"),
        (
            'quantities = { "plastic.pet" = "1" }',
            'quantities = { "plastic.bag" = "1" }',
            "unknown categories",
        ),
        ("base_date = 2026-01-01", "base_date = 2026-02-01", "effective on the base date"),
        (
            'tiers = ["transaction", "verified_deal", "quote"]',
            'tiers = ["transaction", "listing_ask"]',
            "inputs.tiers",
        ),
    ],
)
def test_inconsistent_methodology_is_refused(old: str, new: str, message: str) -> None:
    text = _toml()
    assert old in text
    with pytest.raises(MethodologyError, match=message):
        parse_methodology(text.replace(old, new, 1))
