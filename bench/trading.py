"""Bids through the gateway: bids/s against a raw aiohttp handler doing one comparable insert, in the same run.

Measured on this machine, for the embedded run (SQLite, WAL) and for PostgreSQL:
  1. ceiling: a bare aiohttp app whose handler parses a JSON body and inserts one bid-like row (same engine set-up,
     same thread pool), driven by the same client at the same concurrency;
  2. POST /v1/lots/{id}/bids through the gateway app (middlewares, auth, validation, the lot's row lock, the bid
     rules, the bid row, the lot's new best and end time, the best-bid event in the outbox) with the outbox relay
     running in its own process, as `recycle run` starts it (`recycle background`). Each client worker bids on
     its own ascending lot for its own firm, one increment higher each time, so every bid is accepted.
Raw and ours alternate (raw, ours, raw, ours, raw); our figure (the mean of its two runs) is set against the median
of the three raw runs; every run is printed. Target: ratio ≥ 0.4.

    .venv/bin/python bench/trading.py [--seconds 3] [--concurrency 16] [--only sqlite,postgres]

PostgreSQL: TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test); a scratch database is
created and dropped. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web  # noqa: E402
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, Text  # noqa: E402

from bench.harness import (  # noqa: E402
    alternate,
    base_settings,
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
from services.bootstrap import Platform  # noqa: E402
from services.kernel.auth import Principal, issue_token  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.trading import handlers  # noqa: E402
from services.trading.domain.commands import ListLot  # noqa: E402
from services.trading.settings import configure  # noqa: E402
from tests.trading.support import firm_events, firm_principal, lot_body, publish  # noqa: E402

RATIO_TARGET = 0.4
RESERVE, INC = 250_000, 100

raw_md = MetaData()
raw_t = Table(
    "raw_bids",
    raw_md,
    Column("id", String(40), primary_key=True),
    Column("lot_id", String(64), nullable=False),
    Column("price_fen_per_t", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
)


def raw_bid_row(request: web.Request, body: dict) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "lot_id": request.match_info["id"],
        "price_fen_per_t": body["price_fen_per_t"],
        "body": json.dumps(body),
        "placed_at": datetime.now(UTC),
    }


async def measure(label: str, settings: Settings, seconds: float, concurrency: int) -> tuple[float, float]:
    platform = Platform(settings, services=["trading"]).prepare()
    configure(platform["trading"], extension_window_s=0, extension_s=0)
    rt = platform["trading"]
    firms = [f"fm_bench_{w}" for w in range(concurrency)]
    publish(platform, *firm_events("fm_seller"), *[e for f in firms for e in firm_events(f)])
    ends = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    lots = [
        handlers.list_lot(
            rt,
            firm_principal("fm_seller"),
            ListLot(
                **lot_body(
                    ends_at=ends,
                    source="purchase",
                    purchase_ref=f"PO-{w}",
                    reserve_price_fen_per_t=RESERVE,
                    min_increment_fen_per_t=INC,
                )
            ),
        )["id"]
        for w in range(concurrency)
    ]
    platform.drain()
    tokens = [
        {
            "Authorization": "Bearer "
            + issue_token(
                settings,
                Principal(f"u_owner_{f}", frozenset({"firm"}), frozenset({f}), frozenset({(f, "owner")})),
            )
        }
        for f in firms
    ]
    bg = start_background(settings, ["trading"])
    runner, url = await serve_gateway(platform)
    raw_db = raw_database(settings, raw_md)
    raw_runner, raw_url = await serve(raw_insert_app(raw_db, raw_t, "/raw/{id}/bids", raw_bid_row))
    price = [RESERVE] * concurrency

    def ours(w: int, i: int):  # noqa: ANN202
        price[w] += INC
        return "POST", f"/v1/lots/{lots[w]}/bids", tokens[w], {"price_fen_per_t": price[w]}

    def raw(w: int, i: int):  # noqa: ANN202
        return "POST", f"/raw/{lots[w]}/bids", {}, {"price_fen_per_t": RESERVE + w}

    async def raw_run() -> float:
        return (await drive(raw_url, raw, seconds, concurrency, 201))[0]

    try:
        await drive(raw_url, raw, 1.0, concurrency, 201)  # warm-up
        await drive(url, ours, 1.0, concurrency, 201)
        raws, rates, count, other = await alternate(
            await raw_run(), raw_run, lambda: drive(url, ours, seconds, concurrency, 201)
        )
        mine, ceiling = print_ratio(label, "bids", "accepted", raws, rates, count, other)
        t0 = time.perf_counter()
        while rt.relay.pending() and time.perf_counter() - t0 < 60:
            await asyncio.sleep(0.05)
        print(
            f"[{label}] outbox shipped by the background process {time.perf_counter() - t0:.1f} s after the run"
            f"{f' ({rt.relay.pending():,} STILL PENDING)' if rt.relay.pending() else ''}",
            flush=True,
        )
    finally:
        await raw_runner.cleanup()
        await runner.cleanup()  # stops the platform
        raw_db.dispose()
        stop_background(bg)
    return mine, ceiling


async def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-trading-"))
    results: dict[str, tuple[float, float]] = {}
    try:
        if "sqlite" in only:
            results["sqlite"] = await measure(
                "sqlite", base_settings(tmp / "s"), args.seconds, args.concurrency
            )
        if "postgres" in only:
            with scratch_postgres() as url:
                results["postgres"] = await measure(
                    "postgres",
                    base_settings(tmp / "p", database_url=url, event_log_url=url, db_schema_prefix="b_"),
                    args.seconds,
                    args.concurrency,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nsummary (ratio = ours / raw aiohttp insert in the same run, target ≥ {RATIO_TARGET}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    failed = False
    for label, (mine, ceiling) in results.items():
        ok = mine / ceiling >= RATIO_TARGET
        failed |= not ok
        print(
            f"  {label:10} bids/s {mine:8,.0f}   ceiling {ceiling:8,.0f}   ratio {mine / ceiling:.2f}  "
            f"{'OK' if ok else 'BELOW TARGET'}"
        )
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput measurement")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--only", default="sqlite,postgres")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
