"""Booking through the gateway: bookings/s and accepts/s against a raw aiohttp insert, and GET /v1/jobs latency.

Measured in one run, on this machine, for the embedded run (SQLite, WAL) and for PostgreSQL:
  1. ceiling: a bare aiohttp app whose handler parses a JSON body and inserts one comparable row (same engine
     set-up, same thread pool), driven by the same client at the same concurrency;
  2. POST /v1/pickups through the gateway app (middlewares, auth, validation, quote, capacity, outbox) with the
     relays and consumers running in their own process, as `recycle run` starts them (`recycle background`)
     → bookings/s, ratio to the ceiling; then how long that process takes to ship the backlog;
  3. POST /v1/jobs/{id}/accept on distinct jobs → accepts/s, ratio to the ceiling (target ≥ 0.4 for both);
     raw and ours alternate (raw, ours, raw, ours, raw) and each figure (the mean of its two runs) is set against
     the median of the three raw runs around it; every run is printed. With --request-path, 2 and 3 again without
     the background process (what the request handlers alone cost);
  4. GET /v1/jobs (radius 5 km, 50 nearest) with 100,000 open jobs in a 40 km × 40 km city: p50/p99 latency
     seen by the client (target p99 < 50 ms).

    .venv/bin/python bench/booking.py [--seconds 3] [--concurrency 16] [--jobs 100000] [--only sqlite,postgres]
                                      [--request-path]

PostgreSQL: TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test); a scratch database is
created and dropped. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, text  # noqa: E402

from bench.harness import (  # noqa: E402
    alternate,
    base_settings,
    cpu_seconds,
    drive,
    print_ratio,
    raw_database,
    raw_insert_app,
    scratch_postgres,
    serve,
    serve_gateway,
    start_background,
    stop_background,
)
from services.booking.settings import configure  # noqa: E402
from services.bootstrap import Platform  # noqa: E402
from services.contracts.accounts import CollectorVerified  # noqa: E402
from services.kernel.bus.port import Record  # noqa: E402
from services.kernel.events import Envelope  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.kernel.taxonomy import leaves  # noqa: E402
from tests.booking.support import BOOKING_ONLY, CITY, HOME, SHANGHAI, seed_open_jobs, token  # noqa: E402

RATIO_TARGET = 0.4
P99_TARGET_MS = 50.0

raw_md = MetaData()
raw_t = Table(
    "raw_bookings",
    raw_md,
    Column("id", String(40), primary_key=True),
    Column("resident_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def raw_booking_row(request: web.Request, body: dict) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "resident_id": body["resident"],
        "body": json.dumps(body),
        "created_at": datetime.now(UTC),
    }


def booking_request(tokens: list[str], rnd: random.Random):  # noqa: ANN202
    today = datetime.now(SHANGHAI).date()

    def make(w: int, i: int):  # noqa: ANN202
        day = today + timedelta(days=rnd.randint(1, 7))
        slot = rnd.randrange(20)  # 08:00 .. 17:30
        start = datetime.combine(day, dtime(8 + slot // 2, 30 * (slot % 2)), SHANGHAI)
        body = {
            "address": {
                "text": "朝阳区建国门外大街1号",
                "city_code": CITY,
                "lat": HOME[0] + rnd.uniform(-0.15, 0.15),
                "lng": HOME[1] + rnd.uniform(-0.15, 0.15),
            },
            "window": {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()},
            "items": [
                {"category": "paper.cardboard", "est_qty": "12.5"},
                {"category": "metal.copper", "est_qty": "1.2"},
            ],
            "notes": "",
        }
        return (
            "POST",
            "/v1/pickups",
            {"Authorization": "Bearer " + tokens[(w * 7919 + i) % len(tokens)]},
            body,
        )

    return make


def raw_request(rnd: random.Random):  # noqa: ANN202
    make_booking = booking_request(["x"], rnd)

    def make(w: int, i: int):  # noqa: ANN202
        body = make_booking(w, i)[3] | {"resident": f"res_{w}"}
        return "POST", "/raw", {}, body

    return make


def outbox_backlog(platform: Platform) -> int:
    return platform["booking"].relay.pending()


async def measure_writes(
    label: str, settings: Settings, seconds: float, concurrency: int, background: bool = True
) -> dict:
    """Bookings/s and accepts/s against the raw ceiling. `background`: the outbox relays and the consumer groups
    run in their own process, as in the embedded run; without it only the request path is measured (the outbox
    rows wait)."""
    label = f"{label}{'' if background else ', request path only'}"
    platform = Platform(settings, services=BOOKING_ONLY).prepare()
    configure(platform["booking"], slot_capacity=10**9, max_days_ahead=14)
    platform.drain()
    bg = start_background(settings, BOOKING_ONLY) if background else None
    runner, url = await serve_gateway(platform)
    raw_db = raw_database(settings, raw_md)
    raw_runner, raw_url = await serve(raw_insert_app(raw_db, raw_t, "/raw", raw_booking_row))
    rnd = random.Random(11)
    residents = [token(settings, f"res_{i}", "resident") for i in range(200)]
    out: dict = {}
    try:
        await drive(raw_url, raw_request(rnd), 1.0, concurrency, 201)  # warm-up
        await drive(url, booking_request(residents, rnd), 1.0, concurrency, 201)

        async def raw_run() -> float:
            return (await drive(raw_url, raw_request(rnd), seconds, concurrency, 201))[0]

        bg_cpu = cpu_seconds(bg.pid) if bg is not None else 0.0
        raws, books, booked, other = await alternate(
            await raw_run(),
            raw_run,
            lambda: drive(url, booking_request(residents, rnd), seconds, concurrency, 201),
        )

        def report(
            what: str,
            done: str,
            raws: list[float],
            rates: list[float],
            count: int,
            other: dict,
            bg_cpu: float,
        ) -> tuple[float, float, dict]:
            ours, ceiling = print_ratio(label, what, done, raws, rates, count, other)
            if bg is not None:
                print(
                    f"[{label}] background process CPU during the {what}: {cpu_seconds(bg.pid) - bg_cpu:.1f} s "
                    f"in {2 * seconds:g} s",
                    flush=True,
                )
            return ours, ceiling, other

        out["book"] = report("bookings", "booked", raws, books, booked, other, bg_cpu)
        if bg is not None:
            # the events of those bookings must be on the bus, not left behind
            t0, backlog = time.perf_counter(), outbox_backlog(platform)
            while outbox_backlog(platform) and time.perf_counter() - t0 < 60:
                await asyncio.sleep(0.05)
            left = outbox_backlog(platform)
            print(
                f"[{label}] outbox backlog after the run: {backlog:,} events, shipped by the background process "
                f"in {time.perf_counter() - t0:.1f} s{f' ({left:,} STILL PENDING)' if left else ''}",
                flush=True,
            )
            out["backlog_left"] = left

        # accepts: verified collectors grab distinct open jobs
        collectors = [f"col_{i}" for i in range(50)]
        verify_collectors(platform, collectors, background=background)
        with platform["booking"].db.session() as s:
            open_ids = [r[0] for r in s.execute(text("SELECT id FROM pickups WHERE status = 'requested'"))]
        rnd.shuffle(open_ids)
        col_tokens = [token(settings, c, "collector") for c in collectors]
        it = iter(open_ids)

        def accept(w: int, i: int):  # noqa: ANN202
            pid = next(it, None)
            if pid is None:
                return None
            return "POST", f"/v1/jobs/{pid}/accept", {"Authorization": "Bearer " + col_tokens[w % 50]}, None

        bg_cpu = cpu_seconds(bg.pid) if bg is not None else 0.0
        raws, accs, accepted, other = await alternate(
            raws[-1], raw_run, lambda: drive(url, accept, seconds, concurrency, 200)
        )
        out["accept"] = report("accepts", "accepted", raws, accs, accepted, other, bg_cpu)
    finally:
        await raw_runner.cleanup()
        await runner.cleanup()  # stops the platform
        raw_db.dispose()
        if bg is not None:
            stop_background(bg)
    return out


async def measure_jobs(label: str, settings: Settings, n_jobs: int, requests: int) -> tuple[float, float]:
    platform = Platform(settings, services=BOOKING_ONLY).prepare()
    rt = platform["booking"]
    configure(rt)
    t0 = time.perf_counter()
    seed_open_jobs(rt, n_jobs, HOME, spread_km=20, seed=5)  # a 40 km square: ~60 open jobs per km²
    if rt.db.dialect == "postgresql":
        with rt.db.engine.begin() as c:  # what autovacuum would do after a bulk load
            c.execute(text("ANALYZE pickups"))
            c.execute(text("ANALYZE pickup_lines"))
    print(f"[{label}] seeded {n_jobs:,} open jobs in {time.perf_counter() - t0:.1f} s", flush=True)
    verify_collectors(platform, ["col_jobs"], radius_km=30)
    runner, url = await serve_gateway(platform)
    headers = {"Authorization": "Bearer " + token(settings, "col_jobs", "collector")}
    rnd = random.Random(3)
    lat_ms = []
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(requests + 20):
                lat = HOME[0] + rnd.uniform(-0.15, 0.15)
                lng = HOME[1] + rnd.uniform(-0.15, 0.15)
                t = time.perf_counter()
                async with session.get(
                    f"{url}/v1/jobs?lat={lat}&lng={lng}&radius_km=5&limit=50", headers=headers
                ) as r:
                    body = await r.json()
                    assert r.status == 200, body
                if i >= 20:  # warm-up excluded
                    lat_ms.append((time.perf_counter() - t) * 1000)
                    assert len(body["items"]) == 50
    finally:
        await runner.cleanup()
    lat_ms.sort()
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[int(len(lat_ms) * 0.99) - 1]
    print(
        f"[{label}] GET /v1/jobs (5 km, 50 nearest) over {n_jobs:,} open jobs: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms (target < {P99_TARGET_MS:.0f} ms)",
        flush=True,
    )
    return p50, p99


def verify_collectors(
    platform: Platform, user_ids: list[str], radius_km: float = 50, background: bool = False
) -> None:
    """Accounts' CollectorVerified events on the bus; wait until booking's copy has them (the consumers may be
    running in the background: no drain from here)."""
    platform.bus.publish(
        [
            Record(
                topic=CollectorVerified.topic,
                key="cl_" + u,
                value=Envelope.wrap(
                    CollectorVerified(
                        collector_id="cl_" + u,
                        user_id=u,
                        firm_id="fm_bench",
                        name_masked="王*",
                        lat=HOME[0],
                        lng=HOME[1],
                        radius_km=radius_km,
                        categories=[c.code for c in leaves()],
                        verified_at=datetime.now(UTC),
                    )
                ).to_bytes(),
            )
            for u in user_ids
        ]
    )
    rt = platform["booking"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if background:
            time.sleep(0.05)
        else:
            platform.drain()
        with rt.db.session() as s:
            if s.execute(text("SELECT count(*) FROM collectors")).scalar() >= len(user_ids):
                return
    raise RuntimeError("booking did not receive the collectors")


async def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    results: dict[str, dict] = {}
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-booking-"))
    try:
        if "sqlite" in only:
            results["sqlite"] = await measure_writes(
                "sqlite", base_settings(tmp / "w"), args.seconds, args.concurrency
            )
            if args.request_path:
                results["sqlite (request path)"] = await measure_writes(
                    "sqlite", base_settings(tmp / "w2"), args.seconds, args.concurrency, background=False
                )
            results["sqlite"]["jobs"] = await measure_jobs(
                "sqlite", base_settings(tmp / "j"), args.jobs, args.requests
            )
        if "postgres" in only:
            with scratch_postgres() as url:
                pg = {"database_url": url, "event_log_url": url}
                results["postgres"] = await measure_writes(
                    "postgres",
                    base_settings(tmp / "pw", **pg, db_schema_prefix="w_"),
                    args.seconds,
                    args.concurrency,
                )
                if args.request_path:
                    results["postgres (request path)"] = await measure_writes(
                        "postgres",
                        base_settings(tmp / "pw2", **pg, db_schema_prefix="w2_"),
                        args.seconds,
                        args.concurrency,
                        background=False,
                    )
                results["postgres"]["jobs"] = await measure_jobs(
                    "postgres",
                    base_settings(tmp / "pj", **pg, db_schema_prefix="j_"),
                    args.jobs,
                    args.requests,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\nsummary (ratio = ours / raw aiohttp insert in the same run, target ≥ {RATIO_TARGET}; "
        f"jobs p99 target < {P99_TARGET_MS:.0f} ms; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    failed = False
    for label, r in results.items():
        for what in ("book", "accept"):
            ours, ceiling, _ = r[what]
            ok = ours / ceiling >= RATIO_TARGET
            failed |= not ok and "request path" not in label
            print(
                f"  {label:25} {what + 's/s':10} {ours:8,.0f}   ceiling {ceiling:8,.0f}   ratio {ours / ceiling:.2f}  "
                f"{'OK' if ok else 'BELOW TARGET'}"
            )
        if r.get("backlog_left"):
            failed = True
            print(f"  {label:25} background process left {r['backlog_left']:,} events unshipped")
        if "jobs" in r:
            p50, p99 = r["jobs"]
            failed |= p99 >= P99_TARGET_MS
            print(
                f"  {label:25} GET /v1/jobs p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
                f"{'OK' if p99 < P99_TARGET_MS else 'ABOVE TARGET'}"
            )
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput measurement")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--jobs", type=int, default=100_000, help="open jobs for the GET /v1/jobs latency test")
    p.add_argument("--requests", type=int, default=300, help="GET /v1/jobs requests measured")
    p.add_argument("--only", default="sqlite,postgres")
    p.add_argument(
        "--request-path",
        action="store_true",
        help="also measure without the background process (what the request handlers alone cost)",
    )
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
