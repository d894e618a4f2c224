"""The figures of a region and month equal a direct recount of the settled records they came from.

Hypothesis generates settled pickups (counties and a bare city code in two provinces, every category, kg and
pieces, times around the month's edges in China's time zone, residents and collectors seen more than once) and a
trade or two; the live consumer counts them; then the flows and carbon of every region level and one firm are
compared with a recount computed here from the events alone, independently of the stats code: the day in
Shanghai, the GB/T 2260 prefix, grams, distinct people.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contracts.booking import PickupSettled, SettledLine
from services.kernel.taxonomy import leaves
from services.stats.queries import Scope, Window, carbon_reply, figures, flows_reply
from services.stats.rebuild import clear
from services.stats.settings import factors_of

from .support import platform_for, publish, trade

SHANGHAI = ZoneInfo("Asia/Shanghai")
COUNTIES = ["320211", "320213", "320205", "320200", "320508", "110105", "110108"]
REGIONS = ["000000", "320000", "320200", "320211", "320500", "110000", "110105"]
LEAVES = {c.code: c for c in leaves()}
START = datetime(2026, 10, 31, 12, tzinfo=UTC)  # 20:00 on 31 Oct in Shanghai
_ids = itertools.count(1)


@st.composite
def pickups(draw):
    lines = []
    for code in draw(st.lists(st.sampled_from(sorted(LEAVES)), min_size=1, max_size=4)):  # repeats allowed
        if LEAVES[code].unit == "piece":
            qty = Decimal(draw(st.integers(1, 5)))
        else:
            qty = Decimal(draw(st.integers(1, 500_000))) / 1000
        amount = draw(st.integers(0, 50_000))
        lines.append(
            SettledLine(
                category=code,
                tax_code=LEAVES[code].tax_code,
                unit=LEAVES[code].unit,
                qty=format(qty.quantize(Decimal("0.001")), "f"),
                unit_price_fen=0,
                amount_fen=amount,
            )
        )
    when = START + timedelta(minutes=draw(st.integers(0, 33 * 24 * 60)))
    return PickupSettled(
        pickup_id=f"pk_h{next(_ids):08d}",
        resident_id=draw(st.sampled_from(["u1", "u2", "u3", "u4", "u5"])),
        collector_id=draw(st.sampled_from(["cl_1", "cl_2", "cl_3", "cl_4"])),
        collector_user_id="u_c",
        firm_id=draw(st.sampled_from(["fm_a", "fm_b", "fm_c"])),
        city_code=draw(st.sampled_from(COUNTIES)),
        lines=lines,
        total_fen=sum(ln.amount_fen for ln in lines),
        weighed_at=when,
        settled_at=when,
    )


def inside(code: str, region: str) -> bool:
    if region == "000000":
        return True
    if region.endswith("0000"):
        return code[:2] == region[:2]
    if region.endswith("00"):
        return code[:4] == region[:4]
    return code == region


def recount(events: list[PickupSettled], trades: list, region: str, month: date, factors, firm: str | None):
    """Flows and CO2e of `region` in `month`, straight from the events."""
    mass = est = value = low = co2e = pieces = traded = 0
    residents, collectors, ids = set(), set(), set()
    for ev in events:
        day = ev.settled_at.astimezone(SHANGHAI).date()
        if day.replace(day=1) != month or not inside(ev.city_code, region) or (firm and ev.firm_id != firm):
            continue
        residents.add(ev.resident_id)
        collectors.add(ev.collector_id)
        ids.add(ev.pickup_id)
        per_category: dict[str, int] = defaultdict(int)
        for ln in ev.lines:
            qty = Decimal(ln.qty)
            kg = qty * factors.piece_mass_kg[ln.category] if ln.unit == "piece" else qty
            g = int((kg * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            per_category[ln.category] += g
            mass += g
            est += g if ln.unit == "piece" else 0
            pieces += int(qty * 1000) if ln.unit == "piece" else 0
            low += g if LEAVES[ln.category].low_value else 0
            value += ln.amount_fen
        for cat, g in per_category.items():  # CO2e rounded once per pickup and category (docs/stats.md)
            co2e += int((g * factors.factor(cat).t_co2e_per_t).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    for t in trades:
        day = t.settled_at.astimezone(SHANGHAI).date()
        if (
            day.replace(day=1) == month
            and inside(t.city_code, region)
            and (not firm or t.seller_firm_id == firm)
        ):
            traded += int(Decimal(t.delivered_t) * 1_000_000)
    return {
        "collected_g": mass,
        "estimated_g": est,
        "value_fen": value,
        "low_value_g": low,
        "co2e_g": co2e,
        "pieces_milli": pieces,
        "traded_g": traded,
        "residents": len(residents),
        "collectors": len(collectors),
        "pickups": len(ids),
    }


def grams(t: str) -> int:
    return int(Decimal(t) * 1_000_000)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(pickups(), min_size=1, max_size=25),
    region=st.sampled_from(REGIONS),
    month=st.sampled_from([date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)]),
    firm=st.sampled_from([None, "fm_a", "fm_b"]),
    trade_days=st.lists(st.integers(0, 32), max_size=2),
)
def test_a_region_and_month_equal_a_recount_of_the_settled_records(
    stats_platform, events, region, month, firm, trade_days
):
    platform = stats_platform
    rt = platform["stats"]
    clear(rt.db)
    settled_trades = []
    for i, d in enumerate(trade_days):
        awarded, done = trade(
            seller=["fm_a", "fm_b"][i % 2],
            buyer="fm_c",
            category="metal.steel",
            qty_t="1.234",
            delivered_t="1.2",
            price_fen_per_t=100,
            on=date(2026, 10, 31) + timedelta(d),
            city_code=COUNTIES[d % len(COUNTIES)],
        )
        settled_trades.append(done)
        publish(platform, awarded, done, drain=False)
    publish(platform, *events)
    factors = factors_of(rt)
    end = (month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    window = Window(region, None, month, end, "month")
    scope = Scope("firm", firm_id=firm) if firm else Scope("all")
    with rt.db.session(readonly=True) as s:
        fig = figures(s, window, scope)
    flows = flows_reply(fig, window, scope)["items"][0]
    carbon = carbon_reply(fig, window, scope, factors)["items"][0]
    want = recount(events, settled_trades, region, month, factors, firm)
    got = {
        "collected_g": grams(flows["collected_t"]),
        "estimated_g": grams(flows["estimated_t"]),
        "value_fen": flows["value_fen"],
        "low_value_g": grams(flows["low_value_t"]),
        "co2e_g": grams(carbon["avoided_co2e_t"]),
        "pieces_milli": int(Decimal(flows["pieces"]) * 1000),
        "traded_g": grams(flows["traded_t"]),
        "residents": flows["residents"],
        "collectors": flows["collectors"],
        "pickups": flows["pickups"],
    }
    assert got == want


@pytest.fixture(scope="module")
def stats_platform(tmp_path_factory):
    from services.kernel.settings import Settings

    settings_ = Settings(
        env="test",
        data_dir=tmp_path_factory.mktemp("stats-recount"),
        bus="dblog",
        jwt_secret="test-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )
    platform = platform_for(settings_)
    yield platform
    platform.stop()
