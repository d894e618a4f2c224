"""One day of price indices over a million observations, against one plain SQL GROUP BY in the same run.

    .venv/bin/python bench/pricing.py [--observations 1000000] [--cities 300] [--repeat 3]

Setup (not timed): a fresh pricing database (SQLite, WAL, migrated like the service's), one day of observations
bulk-inserted into the real `observations` table: every indexed category × 300 prefecture-level cities, prices
around each category's reference price with noise and 1 % wild outliers, mixed tiers (mostly transactions),
2,000 contributing firms, 0.5 % related-party deals.

Timed, in one run on the same rows:
  1. the daily job's own path, `compute.compute_day` (what the Celery beat task, the admin API and the CLI
     call): load → related parties / tiers → median ± k·MAD filter → quorum → VWAP for every category × city,
     province and national series → fallbacks → audit rows (input ids + reasons, compressed) → versioning →
     published values, family indices and IndexPublished events in the outbox, one transaction;
  2. the ceiling: the same volume-weighted average computed by one plain SQL aggregate
     (SELECT category, city_code, SUM(price × qty) / SUM(qty) … GROUP BY category, city_code): no outliers,
     no quorum, no provinces, no audit, no writes.
It prints both figures and their ratio; the target is ≤ 3× (exit status 1 above it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from services.bootstrap import Platform  # noqa: E402
from services.kernel.outbox import outbox_t  # noqa: E402
from services.kernel.regions import all_regions  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.kernel.taxonomy import leaf  # noqa: E402
from services.pricing.compute import compute_day  # noqa: E402
from services.pricing.domain.index_math import TIERS  # noqa: E402
from services.pricing.domain.methodology import load_methodology  # noqa: E402
from services.pricing.store import series_inputs  # noqa: E402

TARGET_RATIO = 3.0
DAY = date(2026, 11, 20)
FIRMS = 2000

PLAIN_VWAP = (
    "SELECT category, city_code, CAST(SUM(unit_price_fen * qty_milli) AS REAL) / SUM(qty_milli) "
    "FROM observations WHERE day = :day GROUP BY category, city_code"
)


def populate(rt, n: int, n_cities: int, seed: int = 20261120) -> None:  # noqa: ANN001
    """Bulk insert (executemany on the DBAPI connection, one transaction, rows built column-wise)."""
    m = load_methodology()
    cats = list(m.categories)
    cities = [r.code for r in all_regions() if r.level == "city"][:n_cities]
    rng = np.random.default_rng(seed)
    cat_i = rng.integers(0, len(cats), n)
    city_i = rng.integers(0, len(cities), n)
    ref = np.array([max(leaf(c).reference_price_fen, 50) for c in cats], dtype=np.int64)
    price = np.maximum(1, np.rint(ref[cat_i] * rng.normal(1.0, 0.04, n))).astype(np.int64)
    wild = rng.random(n) < 0.01
    price[wild] *= rng.integers(3, 10, int(wild.sum()))
    unit_piece = np.array([m.categories[c].unit == "piece" for c in cats])
    qty_milli = np.where(unit_piece[cat_i], rng.integers(1, 4, n) * 1000, rng.integers(500, 200_000, n))
    tier = rng.choice(np.arange(len(TIERS)), n, p=[0.7, 0.1, 0.2])
    party = rng.integers(1, FIRMS + 1, n)
    related = rng.random(n) < 0.005
    seconds = rng.integers(0, 86_400, n)
    base = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) - timedelta(hours=8)  # 00:00 Asia/Shanghai
    received = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    tier_names = [TIERS[t] for t in range(len(TIERS))]
    kinds = ["trade", "trade", "quote"]
    stamps = [(base + timedelta(seconds=int(s))).strftime("%Y-%m-%d %H:%M:%S.000000") for s in range(86_400)]
    day_s = DAY.isoformat()
    rows = zip(
        (cats[i] for i in cat_i.tolist()),
        (cities[i] for i in city_i.tolist()),
        [day_s] * n,
        (stamps[s] for s in seconds.tolist()),
        price.tolist(),
        qty_milli.tolist(),
        (tier_names[t] for t in tier.tolist()),
        (kinds[t] for t in tier.tolist()),
        party.tolist(),
        related.astype(int).tolist(),
        ["bench"] * n,
        ["bench"] * n,
        (f"bench:{i}" for i in range(n)),
        [received] * n,
    )
    raw = rt.db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN IMMEDIATE")
        cur.executemany(
            "INSERT INTO counterparties (id, party, first_seen_at) VALUES (?, ?, ?)",
            [(i, f"firm:fm_bench_{i}", received) for i in range(1, FIRMS + 1)],
        )
        cur.executemany(
            "INSERT INTO observations (category, city_code, day, observed_at, unit_price_fen, qty_milli, tier, "
            "kind, counterparty, related_party, source, source_ref, source_key, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        cur.execute("COMMIT")
        cur.execute("ANALYZE")
    finally:
        raw.close()


def plain_group_by(rt) -> tuple[float, float, int]:  # noqa: ANN001
    """(wall s, CPU s of this process, rows) of the plain aggregate."""
    t, c0 = time.perf_counter(), time.process_time()
    with rt.db.engine.connect() as c:
        rows = c.execute(text(PLAIN_VWAP), {"day": DAY.isoformat()}).all()
    return time.perf_counter() - t, time.process_time() - c0, len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--observations", type=int, default=1_000_000)
    ap.add_argument("--cities", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="plain aggregate runs (the fastest is the ceiling)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        settings = Settings(
            env="test",
            data_dir=Path(d),
            bus="dblog",
            jwt_secret="bench-" + "x" * 40,
            pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        )
        platform = Platform(settings, services=["pricing"]).prepare()
        rt = platform["pricing"]
        t = time.perf_counter()
        populate(rt, args.observations, args.cities)
        print(
            f"inserted {args.observations:,} observations ({args.cities} cities, "
            f"{len(load_methodology().categories)} categories) in {time.perf_counter() - t:.1f} s"
        )

        now = datetime(DAY.year, DAY.month, DAY.day, 2, tzinfo=UTC) + timedelta(days=1)  # 10:00 Shanghai, D+1
        plain_group_by(rt)  # warm the page cache for both contestants alike
        ceilings, ceilings_cpu = [], []
        for _ in range(args.repeat):
            secs, cpu, n_plain = plain_group_by(rt)
            ceilings.append(secs)
            ceilings_cpu.append(cpu)
        t, c0 = time.perf_counter(), time.process_time()
        outcome = compute_day(rt.db, DAY, trigger="bench", now=now)
        ours, ours_cpu = time.perf_counter() - t, time.process_time() - c0
        secs, cpu, _ = plain_group_by(rt)  # once more after, in case the machine got busier meanwhile
        ceilings.append(secs)
        ceilings_cpu.append(cpu)
        t = time.perf_counter()
        again = compute_day(rt.db, DAY, trigger="bench", now=now)
        rerun = time.perf_counter() - t

        with rt.db.engine.connect() as c:
            audit_bytes = c.execute(
                select(
                    func.sum(
                        func.length(series_inputs.c.input_ids) + func.length(series_inputs.c.input_reasons)
                    )
                )
            ).scalar()
            events = c.execute(select(func.count()).select_from(outbox_t)).scalar()
        platform.stop()

    ceiling = min(ceilings)
    ratio = ours / ceiling
    kinds = {"city": 0, "province": 0, "national": 0, "index": 0}
    for s in outcome.series:
        kinds[
            "index"
            if s.kind == "index"
            else "national"
            if s.region == "000000"
            else "province"
            if s.region.endswith("0000")
            else "city"
        ] += 1
    print(
        f"daily job (compute_day): {ours:.2f} s  [load {outcome.timings['load']:.2f}, "
        f"filter+quorum+VWAP+fallback+audit {outcome.timings['compute']:.2f}, "
        f"versioning+writes+events {outcome.timings['publish']:.2f}]"
    )
    print(
        f"  {len(outcome.series):,} series published ({kinds['city']} city, {kinds['province']} province, "
        f"{kinds['national']} national, {kinds['index']} family indices), "
        f"{sum(1 for s in outcome.series if s.status == 'fallback')} stale fallbacks, "
        f"{outcome.n_observations:,} inputs; audit inputs {audit_bytes / 1e6:.1f} MB; {events:,} events"
    )
    print(f"  recomputing the unchanged day: {rerun:.2f} s, {again.n_new_versions} new versions")
    print(
        f"plain SQL GROUP BY VWAP:  {ceiling:.2f} s  (best of {len(ceilings)}: "
        f"{', '.join(f'{c:.2f}' for c in ceilings)}; median {statistics.median(ceilings):.2f}), "
        f"{n_plain:,} city series"
    )
    print(
        f"CPU time of this process: daily job {ours_cpu:.2f} s, plain aggregate {min(ceilings_cpu):.2f} s "
        f"(ratio {ours_cpu / min(ceilings_cpu):.2f}x; steadier than wall time on a shared machine)"
    )
    verdict = "OK" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"ratio daily job / plain aggregate (wall): {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x) {verdict}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
