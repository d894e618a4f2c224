"""The daily computation against the per-series reference (index_math.compute_series_value), its audit trail,
the load query's packing, and concurrent runs on PostgreSQL."""

from __future__ import annotations

import json
import random
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from services.bootstrap import Platform
from services.kernel.db import UnitOfWork
from services.kernel.regions import province_of
from services.pricing import audit
from services.pricing.compute import compute_day, load_day
from services.pricing.domain.index_math import Observation, compute_series_value
from services.pricing.domain.methodology import load_methodology
from services.pricing.domain.observations import ObservationDraft
from services.pricing.intake import record_observations
from services.pricing.store import counterparties, published_values, series_inputs

from .support import at, day_ago

CATEGORIES = ("metal.steel", "metal.copper", "paper.books")
# two provinces; 110000 is a province-level code used as a city code (it feeds the province series only)
CITIES = ("110105", "110108", "110000", "440305", "440306", "440303")


def _drafts(seed: int, n: int, day) -> list[ObservationDraft]:  # noqa: ANN001
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        cat = rnd.choice(CATEGORIES)
        base = {"metal.steel": 200, "metal.copper": 4500, "paper.books": 110}[cat]
        price = base + rnd.randint(-8, 8) if rnd.random() > 0.05 else base * rnd.randint(3, 9)
        out.append(
            ObservationDraft(
                category=cat,
                city_code=rnd.choice(CITIES),
                unit_price_fen=price,
                qty=Decimal(rnd.randint(1, 90_000)) / 1000,
                kind="trade",
                tier=rnd.choices(("transaction", "verified_deal", "quote"), (6, 2, 2))[0],
                counterparty=f"firm:fm_{rnd.randint(1, 5)}",
                related_party=rnd.random() < 0.05,
                source="test",
                source_ref="t",
                source_key=f"test:{seed}:{i}",
                observed_at=at(day, rnd.randint(0, 23)),
            )
        )
    return out


def _reference(recorded, m):  # noqa: ANN001, ANN202
    """Per-series results the slow, obviously-correct way: group Observations by region, compute_series_value."""
    groups: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for r in recorded:
        d = r.draft
        o = Observation(
            d.category,
            d.city_code,
            d.unit_price_fen,
            d.qty,
            d.counterparty,
            d.tier,
            str(r.id),
            d.observed_at,
            d.related_party,
        )
        province = province_of(d.city_code)
        if d.city_code != province:
            groups[(d.category, d.city_code)].append(o)
        groups[(d.category, province)].append(o)
        groups[(d.category, "000000")].append(o)
    return {k: compute_series_value(v, m.series_config(k[0])) for k, v in groups.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_daily_path_equals_the_reference_with_fallbacks_and_audit(sqlite_settings, seed) -> None:  # noqa: ANN001
    m = load_methodology()
    rt = Platform(sqlite_settings, services=["pricing"]).prepare()["pricing"]
    d = day_ago(2)
    with UnitOfWork(rt.db) as uow:
        recorded = record_observations(uow, _drafts(seed, 500, d), methodology=m)
    ref = _reference(recorded, m)
    out = compute_day(rt.db, d, trigger="test")
    got = {(s.code, s.region): s for s in out.series if s.kind == "price"}
    assert set(got) == set(ref)
    for (code, region), res in ref.items():
        s = got[(code, region)]
        assert s.n_obs == res.n_obs, (code, region)
        if res.published:
            assert (s.value, s.stale, s.source_region, s.status) == (
                str(res.value_fen),
                False,
                region,
                "published",
            )
            continue
        chain = ([province_of(region)] if region != province_of(region) else []) + (
            ["000000"] if region != "000000" else []
        )
        wider = next((w for w in chain if ref.get((code, w)) and ref[(code, w)].published), None)
        if wider:
            assert (s.value, s.stale, s.source_region, s.status) == (
                str(ref[(code, wider)].value_fen),
                True,
                wider,
                "fallback",
            )
        else:
            assert (s.value, s.stale, s.status) == (None, False, "insufficient_data")

    # the stored inputs of each series are its observations, each with the reference's reason
    with rt.db.session() as sess:
        rows = sess.execute(select(series_inputs)).all()
        disclosures = dict(
            ((r.code, r.region), r.audit)
            for r in sess.execute(
                select(published_values.c.code, published_values.c.region, published_values.c.audit).where(
                    published_values.c.date == d, published_values.c.kind == "price"
                )
            )
        )
    assert len(rows) == len(ref)
    for row in rows:
        ids, reasons = audit.decode_inputs(row.input_ids, row.input_reasons)
        res = ref[(row.code, row.region)]
        excluded = {e.source_id: e.reason.value for e in res.exclusions}
        assert len(ids) == res.n_obs + res.n_excluded == row.n_inputs
        assert {str(i): audit.reason_name(c) for i, c in zip(ids.tolist(), reasons.tolist())} == {
            **{k: "used" for k in map(str, ids.tolist()) if k not in excluded},
            **excluded,
        }
        disc = json.loads(disclosures[(row.code, row.region)])
        assert disc["excluded_by_reason"] == res.exclusion_counts
        assert (disc["counterparties"], disc["tiers_used"]) == (res.counterparties, list(res.tiers_used))


def test_audit_blob_round_trip_at_every_width() -> None:
    for ids in ([5], [1, 2, 3], [10, 300, 70_000], [7, 7 + (1 << 33)], list(range(1, 2000, 7)), []):
        arr = np.array(ids, dtype=np.int64)
        reasons = (np.arange(len(ids)) % 7).astype(np.uint8)
        back, rs = audit.decode_inputs(audit.encode_ids(arr), audit.pack_reasons_raw(reasons.tobytes()))
        assert back.tolist() == ids and rs.tolist() == reasons.tolist()


def test_load_packs_attributes_and_survives_huge_party_codes(sqlite_settings) -> None:  # noqa: ANN001
    m = load_methodology()
    rt = Platform(sqlite_settings, services=["pricing"]).prepare()["pricing"]
    d = day_ago(2)
    now = datetime.now(UTC)
    with UnitOfWork(rt.db) as uow:
        # a party code too large to pack beside city, tier, related and category: the query falls back
        uow.session.execute(
            insert(counterparties).values(id=(1 << 40) + 5, party="firm:big", first_seen_at=now)
        )
        drafts = [
            ObservationDraft(
                category=c,
                city_code=city,
                unit_price_fen=p,
                qty=Decimal("1.5"),
                kind="trade",
                tier=t,
                counterparty=party,
                related_party=rel,
                source="test",
                source_ref="t",
                source_key=f"k{i}",
                observed_at=at(d),
            )
            for i, (c, city, p, t, party, rel) in enumerate(
                [
                    ("metal.steel", "110105", 201, "transaction", "firm:big", False),
                    ("paper.books", "440305", 99, "quote", "firm:small", True),
                    ("metal.copper", "110000", 4500, "verified_deal", "firm:big", False),
                ]
            )
        ]
        recorded = record_observations(uow, drafts, methodology=m)
    with UnitOfWork(rt.db, readonly=True) as uow:
        cols = load_day(uow.session, d, m)
        big = uow.session.execute(
            select(counterparties.c.id).where(counterparties.c.party == "firm:big")
        ).scalar()
    assert cols.ids.tolist() == [r.id for r in recorded]
    assert [cols.categories[c] for c in cols.category.tolist()] == [
        "metal.steel",
        "paper.books",
        "metal.copper",
    ]
    assert cols.city.tolist() == [110105, 440305, 110000]
    assert cols.tier.tolist() == [0, 2, 1] and cols.related.tolist() == [False, True, False]
    assert cols.price.tolist() == [201, 99, 4500] and cols.qty_milli.tolist() == [1500, 1500, 1500]
    assert cols.party.tolist()[0] == cols.party.tolist()[2] == big == (1 << 40) + 5 != cols.party.tolist()[1]


def test_observations_of_other_days_and_unindexed_categories_are_not_inputs(sqlite_settings) -> None:  # noqa: ANN001
    m = load_methodology()
    rt = Platform(sqlite_settings, services=["pricing"]).prepare()["pricing"]
    d = day_ago(2)
    drafts = [
        ObservationDraft(
            category="metal.steel",
            city_code="110105",
            unit_price_fen=200,
            qty=Decimal(1),
            kind="trade",
            tier="transaction",
            counterparty="firm:a",
            related_party=False,
            source="test",
            source_ref="t",
            source_key=f"k{i}",
            observed_at=when,
        )
        for i, when in enumerate(
            [at(d, 0, 1), at(d, 23, 59), at(d - timedelta(days=1), 23, 59), at(d + timedelta(days=1), 0, 0)]
        )
    ]
    with UnitOfWork(rt.db) as uow:
        record_observations(uow, drafts, methodology=m)
    with UnitOfWork(rt.db, readonly=True) as uow:
        assert len(load_day(uow.session, d, m)) == 2  # the Shanghai calendar day, not UTC's


def _concurrent_runs(settings) -> None:  # noqa: ANN001
    m = load_methodology()
    rt = Platform(settings, services=["pricing"]).prepare()["pricing"]
    d = day_ago(2)
    with UnitOfWork(rt.db) as uow:
        record_observations(uow, _drafts(7, 300, d), methodology=m)
    barrier = threading.Barrier(2)
    outcomes, errors = [], []

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(compute_day(rt.db, d, trigger="test"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    first, second = sorted(outcomes, key=lambda o: o.run_id)
    assert first.n_new_versions == len(first.series) > 0 and second.n_new_versions == 0
    with rt.db.session() as s:
        versions = s.execute(
            select(func.max(published_values.c.version)).where(published_values.c.date == d)
        ).scalar()
    assert versions == 1


@pytest.mark.postgres
def test_two_concurrent_computations_of_a_day_publish_once_postgres(pg_settings) -> None:  # noqa: ANN001
    _concurrent_runs(pg_settings)


def test_two_concurrent_computations_of_a_day_publish_once_sqlite(sqlite_settings) -> None:  # noqa: ANN001
    _concurrent_runs(sqlite_settings)
