"""Stats: how fast settled pickups are counted, live and by a rebuild from the event log.

Measured in one run on the embedded log (SQLite): N settled pickups (1–3 lines each, 40 counties, 200 residents,
30 collectors, 5 firms, one month) are published onto `booking.pickup`, then
  1. the ceiling: reading every record of the topic back and decoding it into a PickupSettled (the work any
     consumer or rebuild must do before counting anything);
  2. the live consumer group `stats.pickups` catching up from offset 0 (inbox, facts, aggregates, members);
  3. `recycle stats rebuild`'s code path over the same log (clear, then replay).
It prints records/s of each and the ratio to the ceiling.

    .venv/bin/python bench/stats.py [--pickups 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.bootstrap import Platform  # noqa: E402
from services.contracts.booking import PickupSettled, SettledLine  # noqa: E402
from services.kernel.bus.port import Record  # noqa: E402
from services.kernel.events import Envelope  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.kernel.taxonomy import leaves  # noqa: E402
from services.stats.rebuild import rebuild  # noqa: E402


def events(n: int) -> list[PickupSettled]:
    rnd = random.Random(7)
    kg = [c for c in leaves() if c.unit == "kg"]
    counties = [f"3202{d:02d}" for d in range(1, 21)] + [f"1101{d:02d}" for d in range(1, 21)]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        lines = [
            SettledLine(
                category=c.code,
                tax_code=c.tax_code,
                unit="kg",
                qty=f"{rnd.randint(1, 90000) / 1000:.3f}",
                unit_price_fen=100,
                amount_fen=rnd.randint(0, 9000),
            )
            for c in rnd.sample(kg, rnd.randint(1, 3))
        ]
        when = start + timedelta(seconds=rnd.randint(0, 29 * 86400))
        out.append(
            PickupSettled(
                pickup_id=f"pk_b{i:08d}",
                resident_id=f"u{rnd.randint(1, 200)}",
                collector_id=f"cl{rnd.randint(1, 30)}",
                collector_user_id="u_c",
                firm_id=f"fm{rnd.randint(1, 5)}",
                city_code=rnd.choice(counties),
                lines=lines,
                total_fen=sum(x.amount_fen for x in lines),
                weighed_at=when,
                settled_at=when,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pickups", type=int, default=20000)
    n = ap.parse_args().pickups
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(
            env="test",
            data_dir=Path(d),
            bus="dblog",
            jwt_secret="bench-" + "x" * 32,
            pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        )
        platform = Platform(settings, services=["stats"]).prepare()
        rt = platform["stats"]
        evs = events(n)
        for i in range(0, n, 1000):
            envs = [Envelope.wrap(e) for e in evs[i : i + 1000]]
            platform.bus.publish(
                [
                    Record(
                        topic="booking.pickup", key=e.subject, value=e.to_bytes(), headers={"ce_type": e.type}
                    )
                    for e in envs
                ]
            )

        t0 = time.perf_counter()
        decoded = 0
        for p in range(platform.bus.partitions("booking.pickup")):
            offset = 0
            while batch := platform.bus.read("booking.pickup", p, offset, 500):
                for rec in batch:
                    PickupSettled.decode(Envelope.from_bytes(rec.value).data)
                    decoded += 1
                offset = batch[-1].offset + 1
        ceiling = decoded / (time.perf_counter() - t0)

        runner = next(r for r in rt.runners if r.spec.group == "stats.pickups")
        t0 = time.perf_counter()
        while runner.run_once(timeout_s=0.0):
            pass
        live = runner.handled / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        result = rebuild(rt.db, platform.bus, [r.spec for r in rt.runners])
        rebuilt = result.handled / (time.perf_counter() - t0)
        platform.stop()

    print(f"{n} settled pickups on the embedded log")
    print(f"  ceiling (read + decode):   {ceiling:10.0f} records/s")
    print(f"  live consumer group:       {live:10.0f} records/s   ratio {live / ceiling:.2f}")
    print(f"  rebuild from offset 0:     {rebuilt:10.0f} records/s   ratio {rebuilt / ceiling:.2f}")


if __name__ == "__main__":
    main()
