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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import (  # noqa: E402
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    text,
)

from gateway.app import create_app  # noqa: E402
from services.bootstrap import Platform  # noqa: E402
from services.kernel.auth import Principal, issue_token  # noqa: E402
from services.kernel.db import Database  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.trading import handlers  # noqa: E402
from services.trading.domain.commands import ListLot  # noqa: E402
from services.trading.settings import configure  # noqa: E402
from tests.trading.support import firm_events, firm_principal, lot_body, publish  # noqa: E402

RATIO_TARGET = 0.4
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
JWT = "bench-secret-" + "x" * 32
PII = "YmVuY2gtcGlpLWtleS0zMi1ieXRlcy1sb25nLS0tLS0="
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def raw_app(db: Database) -> web.Application:
    """The ceiling: parse the body, insert one row, answer 201 — nothing else."""
    insert = raw_t.insert()

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        row = {
            "id": uuid.uuid4().hex,
            "lot_id": request.match_info["id"],
            "price_fen_per_t": body["price_fen_per_t"],
            "body": json.dumps(body),
            "placed_at": datetime.now(UTC),
        }

        def work() -> None:
            with db.engine.begin() as conn:
                conn.execute(insert, row)

        await asyncio.get_running_loop().run_in_executor(None, work)
        return web.json_response({"id": row["id"]}, status=201)

    app = web.Application()
    app.router.add_post("/raw/{id}/bids", handler)
    return app


async def drive(url: str, make, seconds: float, concurrency: int, expect: int) -> tuple[float, int, dict]:  # noqa: ANN001
    """Send requests from `concurrency` workers for `seconds`; returns (successes/s, successes, other statuses)."""
    ok, other = 0, {}
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(w: int) -> None:
            nonlocal ok
            while time.perf_counter() < deadline:
                path, headers, body = make(w)
                async with session.post(url + path, headers=headers, json=body) as r:
                    await r.read()
                    if r.status == expect:
                        ok += 1
                    else:
                        other[r.status] = other.get(r.status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return ok / elapsed, ok, other


def start_background(settings: Settings) -> subprocess.Popen:
    """`recycle background` for the same databases: the embedded run's second process (relays, consumers)."""
    env = dict(
        os.environ,
        ENV=settings.env,
        DATA_DIR=str(settings.data_dir),
        BUS=settings.bus,
        DATABASE_URL=settings.database_url,
        EVENT_LOG_URL=settings.event_log_url,
        DB_SCHEMA_PREFIX=settings.db_schema_prefix,
        SERVICES="trading",
        JWT_SECRET=JWT,
        PII_KEY=PII,
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "background"],
        env=env,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
        text=True,
    )
    line = proc.stdout.readline()  # printed once its relays and consumers run
    if not line.startswith("Background"):
        proc.kill()
        raise RuntimeError(f"recycle background did not start: {line!r}")
    return proc


def stop_background(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
    app = create_app(settings, platform)
    app["platform_prepared"] = True
    app["platform_no_background"] = True
    bg = start_background(settings)
    runner, url = await serve(app)
    raw_db = Database(settings.db_url("rawbench"), schema=settings.db_schema("rawbench"))
    if raw_db.dialect == "postgresql":
        with raw_db.engine.begin() as c:
            c.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{raw_db.schema}"'))
    raw_md.create_all(raw_db.engine)
    raw_runner, raw_url = await serve(raw_app(raw_db))
    price = [RESERVE] * concurrency

    def ours(w: int):  # noqa: ANN202
        price[w] += INC
        return f"/v1/lots/{lots[w]}/bids", tokens[w], {"price_fen_per_t": price[w]}

    def raw(w: int):  # noqa: ANN202
        return f"/raw/{lots[w]}/bids", {}, {"price_fen_per_t": RESERVE + w}

    try:
        await drive(raw_url, raw, 1.0, concurrency, 201)  # warm-up
        await drive(url, ours, 1.0, concurrency, 201)
        raws, rates, count, other = [], [], 0, {}
        raws.append((await drive(raw_url, raw, seconds, concurrency, 201))[0])
        for _ in range(2):
            rate, n, oth = await drive(url, ours, seconds, concurrency, 201)
            rates.append(rate)
            count += n
            for k, v in oth.items():
                other[k] = other.get(k, 0) + v
            raws.append((await drive(raw_url, raw, seconds, concurrency, 201))[0])
        mine, ceiling = statistics.mean(rates), statistics.median(raws)
        print(
            f"[{label}] raw insert: {' / '.join(f'{r:,.0f}' for r in raws)} req/s (median {ceiling:,.0f}); "
            f"bids: {' / '.join(f'{b:,.0f}' for b in rates)}/s ({count:,} accepted"
            f"{', other replies ' + str(other) if other else ''}) → ratio {mine / ceiling:.2f}",
            flush=True,
        )
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


def base_settings(data_dir: Path, **kw) -> Settings:  # noqa: ANN003
    return Settings(
        env="test",
        data_dir=data_dir,
        bus="dblog",
        jwt_secret=JWT,
        pii_key=PII,
        rate_limit_per_minute=10**9,
        rate_limit_ip_per_minute=10**9,
        log_level="WARNING",
        **kw,
    )


async def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-trading-"))
    results: dict[str, tuple[float, float]] = {}
    pg_db, admin = None, None
    try:
        if "sqlite" in only:
            results["sqlite"] = await measure(
                "sqlite", base_settings(tmp / "s"), args.seconds, args.concurrency
            )
        if "postgres" in only:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            pg_db = f"bench_{uuid.uuid4().hex[:10]}"
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{pg_db}"'))
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_db
            results["postgres"] = await measure(
                "postgres",
                base_settings(tmp / "p", database_url=url, event_log_url=url, db_schema_prefix="b_"),
                args.seconds,
                args.concurrency,
            )
    finally:
        if pg_db and admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))
            admin.dispose()
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
