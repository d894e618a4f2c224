"""What the benchmarks through the gateway share: their settings, serving an app on a free port, a client that drives
it, the raw-insert ceiling, the background process, a scratch PostgreSQL database and the alternating raw/ours runs.

Not a benchmark itself (`make bench` skips it); the scripts in this folder import it as `bench.harness`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import MetaData, Table, create_engine, text

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.kernel.db import Database
from services.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
JWT = "bench-secret-" + "x" * 32
PII = "YmVuY2gtcGlpLWtleS0zMi1ieXRlcy1sb25nLS0tLS0="

# (method, path, headers, JSON body) for worker w's i-th request; None: this worker is done
Request = tuple[str, str, dict[str, str], Any]
MakeRequest = Callable[[int, int], Request | None]
# (successes/s, successes, other statuses and their counts)
DriveResult = tuple[float, int, dict[int, int]]


def base_settings(data_dir: Path, **kw: Any) -> Settings:
    """The test environment on the embedded bus, with no rate limit in the way of the load."""
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


async def serve_gateway(platform: Platform) -> tuple[web.AppRunner, str]:
    """The gateway app over an already prepared platform, its background work left to someone else."""
    return await serve(create_app_over(platform))


async def drive(url: str, make: MakeRequest, seconds: float, concurrency: int, expect: int) -> DriveResult:
    """Send requests from `concurrency` workers for `seconds`; returns (successes/s, successes, other statuses)."""
    ok, other = 0, {}
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(w: int) -> None:
            nonlocal ok
            i = 0
            while time.perf_counter() < deadline:
                req = make(w, i)
                if req is None:
                    return
                method, path, headers, body = req
                async with session.request(method, url + path, headers=headers, json=body) as r:
                    await r.read()
                    if r.status == expect:
                        ok += 1
                    else:
                        other[r.status] = other.get(r.status, 0) + 1
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return ok / elapsed, ok, other


def raw_database(settings: Settings, metadata: MetaData) -> Database:
    """The ceiling's own database (schema `rawbench` on PostgreSQL), with `metadata`'s tables."""
    db = Database(settings.db_url("rawbench"), schema=settings.db_schema("rawbench"))
    if db.dialect == "postgresql":
        with db.engine.begin() as c:
            c.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
    metadata.create_all(db.engine)
    return db


def raw_insert_app(
    db: Database, table: Table, route: str, row_of: Callable[[web.Request, Any], dict]
) -> web.Application:
    """The ceiling: parse the body, insert one row (`row_of(request, body)`, with an `id`), answer 201 — nothing
    else."""
    insert = table.insert()

    async def handler(request: web.Request) -> web.Response:
        row = row_of(request, await request.json())

        def work() -> None:
            with db.engine.begin() as conn:
                conn.execute(insert, row)

        await asyncio.get_running_loop().run_in_executor(None, work)
        return web.json_response({"id": row["id"]}, status=201)

    app = web.Application()
    app.router.add_post(route, handler)
    return app


async def alternate(
    first_raw: float,
    raw_run: Callable[[], Awaitable[float]],
    ours_run: Callable[[], Awaitable[DriveResult]],
) -> tuple[list[float], list[float], int, dict[int, int]]:
    """raw, ours, raw, ours, raw (the first raw given): the raw rates, our rates, our count, other replies. Each
    figure is set against the median of the raw runs around it, so a drift or one odd raw run on a shared machine
    moves neither side alone."""
    raws, rates, count, other = [first_raw], [], 0, {}
    for _ in range(2):
        rate, n, oth = await ours_run()
        rates.append(rate)
        count += n
        for k, v in oth.items():
            other[k] = other.get(k, 0) + v
        raws.append(await raw_run())
    return raws, rates, count, other


def print_ratio(
    label: str, what: str, done: str, raws: list[float], rates: list[float], count: int, other: dict[int, int]
) -> tuple[float, float]:
    """Print every run and the ratio of ours (the mean) to the ceiling (the median raw run); returns both."""
    ours, ceiling = statistics.mean(rates), statistics.median(raws)
    print(
        f"[{label}] raw insert: {' / '.join(f'{r:,.0f}' for r in raws)} req/s (median {ceiling:,.0f}); "
        f"{what}: {' / '.join(f'{b:,.0f}' for b in rates)}/s ({count:,} {done}"
        f"{', other replies ' + str(other) if other else ''}) → ratio {ours / ceiling:.2f}",
        flush=True,
    )
    return ours, ceiling


def start_background(settings: Settings, services: list[str]) -> subprocess.Popen:
    """`recycle background` for the same databases: the embedded run's second process (relays, consumers)."""
    env = dict(
        os.environ,
        ENV=settings.env,
        DATA_DIR=str(settings.data_dir),
        BUS=settings.bus,
        DATABASE_URL=settings.database_url,
        EVENT_LOG_URL=settings.event_log_url,
        DB_SCHEMA_PREFIX=settings.db_schema_prefix,
        SERVICES=",".join(services),
        JWT_SECRET=JWT,
        PII_KEY=PII,
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "background"],
        env=env,
        stdout=subprocess.PIPE,
        cwd=ROOT,
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A fresh database on TEST_POSTGRES_URL's server for one run, dropped afterwards: its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
