"""Listing search on the embedded run: queries/s and p99 through the gateway against a raw FTS5 MATCH on the same
index in the same run, and indexing throughput.

  1. 200,000 generated listings (tests/listings/corpus.py: brands, models, 成色 words) are indexed by a rebuild
     (the `recycle listings reindex` path) → listings/s; then 2,000 more one by one through the indexer's handler
     (the consumer path: one ListingPublished event, one upsert) → listings/s;
  2. ceiling: `SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT 20` on the same file (no facets, no
     total, no filters, no HTTP), on threads at the same concurrency;
  3. ours: GET /v1/listings/search through the gateway app (middlewares, validation, the search port, facets over
     all hits, the JSON reply) driven by an aiohttp client at that concurrency.
  4. latency: the same queries one at a time through the gateway (p50, p99), beside each one's raw MATCH.
  The query mix is the same for both: the relevance set's queries plus brand/model pairs, a third of ours with a
  filter or another sort. Raw and ours alternate (raw, ours, raw, ours, raw); each of our figures is set against
  the median of the raw runs around it. Targets: ratio ≥ 0.5, p99 < 50 ms.

    .venv/bin/python bench/search.py [--listings 200000] [--seconds 3] [--concurrency 8]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from gateway.app import create_app  # noqa: E402
from services.bootstrap import Platform  # noqa: E402
from services.contracts.listings import ListingPublished  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.listings.search import search_of  # noqa: E402
from services.listings.search.indexer import Indexer  # noqa: E402
from services.listings.search.sqlite_fts import match_expression  # noqa: E402
from tests.listings.corpus import BOOKS, CITIES, PHONES, generate  # noqa: E402
from tests.listings.test_relevance import QUERIES  # noqa: E402

RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0
JWT = "bench-secret-" + "x" * 32
PII = "YmVuY2gtcGlpLWtleS0zMi1ieXRlcy1sb25nLS0tLS0="


def query_mix(n: int, seed: int = 11) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    words = (
        [q for q, _ in QUERIES]
        + [f"{b} {m.split()[0]}" for b, ms in PHONES.items() for m in ms]
        + [b.strip("《》").split()[0] for b in BOOKS]
    )
    out = []
    for _ in range(n):
        params = {"q": rnd.choice(words), "limit": "20"}
        r = rnd.random()
        if r < 0.1:
            params["city_code"] = rnd.choice(CITIES)
        elif r < 0.2:
            params["sort"] = rnd.choice(["price_asc", "newest"])
        elif r < 0.3:
            params["max_price_fen"] = str(rnd.randint(1000, 20000) * 100)
        out.append(params)
    return out


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    import socket

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def raw_run(path: str, mix: list[dict[str, str]], seconds: float, concurrency: int) -> float:
    """Queries/s of bare FTS5 MATCH … ORDER BY rank LIMIT 20 on `concurrency` threads (one connection each)."""
    exprs = [match_expression(p["q"]) for p in mix]
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    def worker(w: int) -> None:
        c = sqlite3.connect(path, check_same_thread=False)
        i = w
        while time.perf_counter() < deadline:
            c.execute(
                "SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT 20", (exprs[i % len(exprs)],)
            ).fetchall()
            counts[w] += 1
            i += concurrency
        c.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return sum(counts) / (time.perf_counter() - t0)


async def ours_run(
    url: str, mix: list[dict[str, str]], seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    """Queries/s through the gateway, and each request's latency (ms) as the client saw it."""
    lat: list[float] = []
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with session.get(f"{url}/v1/listings/search?{urlencode(mix[i % len(mix)])}") as r:
                    await r.read()
                    assert r.status == 200, await r.text()
                lat.append((time.perf_counter() - t) * 1000)
                done += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return done / elapsed, lat


async def latencies(
    url: str, path: str, mix: list[dict[str, str]], n: int
) -> tuple[list[float], list[float]]:
    """One query at a time: each request's latency through the gateway, and the same query's raw MATCH latency."""
    ours, raw = [], []
    c = sqlite3.connect(path)
    async with aiohttp.ClientSession() as session:
        for params in mix[:n]:
            t = time.perf_counter()
            async with session.get(f"{url}/v1/listings/search?{urlencode(params)}") as r:
                await r.read()
                assert r.status == 200
            ours.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            c.execute(
                "SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT 20",
                (match_expression(params["q"]),),
            ).fetchall()
            raw.append((time.perf_counter() - t) * 1000)
    c.close()
    return sorted(ours), sorted(raw)


def pct(xs: list[float], p: float) -> float:
    return xs[max(int(len(xs) * p) - 1, 0)]


async def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    failed = False
    try:
        settings = Settings(
            env="test",
            data_dir=tmp,
            bus="dblog",
            jwt_secret=JWT,
            pii_key=PII,
            rate_limit_per_minute=10**9,
            rate_limit_ip_per_minute=10**9,
            log_level="WARNING",
        )
        platform = Platform(settings, services=["listings"]).prepare()
        rt = platform["listings"]
        index = search_of(rt)

        # 1. indexing
        t0 = time.perf_counter()
        n = index.rebuild(generate(args.listings))
        rebuild_s = time.perf_counter() - t0
        print(f"rebuild: {n:,} listings in {rebuild_s:.1f} s → {n / rebuild_s:,.0f} listings/s", flush=True)
        indexer = Indexer(index)
        extra = [d for d in generate(args.incremental, seed=7, with_planted=False)]
        t0 = time.perf_counter()
        for d in extra:
            indexer.when_listing_published_index(
                ListingPublished(
                    listing_id="inc-" + d.listing_id,
                    version=1,
                    seller_id=d.seller_id,
                    title=d.title,
                    description=d.description,
                    category=d.category,
                    condition=d.condition,
                    price_fen=d.price_fen,
                    city_code=d.city_code,
                    published_at=datetime.now(UTC),
                ),
                None,
            )  # type: ignore[arg-type]
        inc_s = time.perf_counter() - t0
        print(
            f"indexer (one event, one upsert): {len(extra):,} listings in {inc_s:.1f} s → "
            f"{len(extra) / inc_s:,.0f} listings/s",
            flush=True,
        )

        # 2./3. queries
        mix = query_mix(2000)
        raw_mix = [{"q": p["q"]} for p in mix]
        app = create_app(settings, platform)
        app["platform_prepared"] = True
        app["platform_no_background"] = True
        runner, url = await serve(app)
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(args.concurrency))
        try:
            await ours_run(url, mix[:200], 0.5, args.concurrency)  # warm-up: connections, caches
            path = str(index.path)  # type: ignore[attr-defined]
            raws = [await loop.run_in_executor(None, raw_run, path, raw_mix, args.seconds, args.concurrency)]
            ours = []
            for _ in range(2):
                rate, _lat = await ours_run(url, mix, args.seconds, args.concurrency)
                ours.append(rate)
                raws.append(
                    await loop.run_in_executor(None, raw_run, path, raw_mix, args.seconds, args.concurrency)
                )
            seq, seq_raw = await latencies(url, path, mix[500:], args.requests)
        finally:
            await runner.cleanup()
        for i, r in enumerate(raws):
            print(f"  raw run {i + 1}: {r:,.0f} queries/s", flush=True)
        ratios = []
        for i, o in enumerate(ours):
            ceiling = statistics.median(raws[i : i + 2] + raws[max(i - 1, 0) : i])
            ratios.append(o / ceiling)
            print(
                f"  ours run {i + 1}: {o:,.0f} queries/s (ceiling {ceiling:,.0f} → ratio {o / ceiling:.2f})",
                flush=True,
            )
        p50, p99 = statistics.median(seq), pct(seq, 0.99)
        ratio = statistics.mean(ratios)
        print(
            f"\nsummary ({n:,} listings; concurrency {args.concurrency}; load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} CPUs)"
        )
        print(
            f"  indexing: rebuild {n / rebuild_s:,.0f} listings/s; indexer {len(extra) / inc_s:,.0f} listings/s"
        )
        ok_ratio, ok_p99 = ratio >= RATIO_TARGET, p99 < P99_TARGET_MS
        print(
            f"  search through the gateway: {statistics.mean(ours):,.0f} queries/s, raw FTS5 MATCH "
            f"{statistics.median(raws):,.0f} queries/s → ratio {ratio:.2f} (target ≥ {RATIO_TARGET}) "
            f"{'OK' if ok_ratio else 'BELOW TARGET'}"
        )
        print(
            f"  latency, one query at a time ({len(seq)} queries): p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(target < {P99_TARGET_MS:.0f} ms) {'OK' if ok_p99 else 'ABOVE TARGET'}; the same queries' raw "
            f"MATCH: p50 {statistics.median(seq_raw):.1f} ms, p99 {pct(seq_raw, 0.99):.1f} ms"
        )
        failed = not (ok_ratio and ok_p99)
        platform.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listings", type=int, default=200_000)
    p.add_argument("--incremental", type=int, default=2_000)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=300, help="queries measured one at a time for the latency")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
