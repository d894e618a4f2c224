"""The indexer follows listing events into the search index: within a second in the embedded run (relay and
consumer threads running), idempotent under redelivery, and rebuildable from the listings table (CLI with a
progress bar, Celery task)."""

from __future__ import annotations

import asyncio
import time

from typer.testing import CliRunner

from services.kernel.auth import Principal
from services.kernel.tasks import run_inline
from services.listings import handlers
from services.listings.search import search_of
from services.listings.search.indexer import reindex
from services.listings.search.port import SearchQuery

from .support import app_client, auth, book_body, platform_for, uid


async def test_a_published_listing_is_searchable_within_a_second(aiohttp_client, sqlite_settings):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    platform.start()  # relays and consumers in threads, as the embedded run's background process
    try:
        seller = uid("sel")
        h = auth(sqlite_settings, seller)
        lid = (
            await (
                await client.post("/v1/listings", json=book_body(title="九成新 扫地机器人 石头T7"), headers=h)
            ).json()
        )["id"]
        t0 = time.monotonic()
        assert (await client.post(f"/v1/listings/{lid}/publish", headers=h)).status == 200
        while True:
            found = await (await client.get("/v1/listings/search", params={"q": "扫地"})).json()
            if found["total"]:
                break
            assert time.monotonic() - t0 < 1.0, "not searchable within a second"
            await asyncio.sleep(0.01)
        assert [i["id"] for i in found["items"]] == [lid]
    finally:
        platform.stop()


def test_redelivery_changes_nothing_and_reindex_rebuilds(sqlite_settings):
    platform = platform_for(sqlite_settings)
    rt = platform["listings"]
    seller = Principal(uid("sel"), frozenset({"resident"}))
    ids = []
    for i in range(25):
        d = handlers.create_listing(
            rt, seller.user_id, {**book_body(title=f"二手书 第{i}册 小说"), "device": None}
        )
        handlers.publish_listing(rt, seller, d["id"])
        ids.append(d["id"])
    handlers.withdraw_listing(rt, seller, ids[0])
    platform.drain()
    index = search_of(rt)
    assert index.search(SearchQuery(q="小说")).total == 24
    # replay every listing event to the indexer's group: the versions make it a no-op
    runner = next(r for r in rt.runners if r.spec.group == "listings.indexer")
    for p in range(platform.bus.partitions("listings.listing")):
        runner.subscription.seek("listings.listing", p, 0)
    from services.kernel.outbox import inbox_t

    with rt.db.session() as s, s.begin():
        s.execute(inbox_t.delete().where(inbox_t.c.group_id == "listings.indexer"))
    platform.drain()
    assert index.search(SearchQuery(q="小说")).total == 24

    # a lost index is rebuilt from the table
    index.rebuild(iter([]))
    assert index.search(SearchQuery(q="小说")).total == 0
    seen: list[int] = []
    assert reindex(rt.db, index, seen.append) == 24 and sum(seen) == 24
    assert index.search(SearchQuery(q="小说")).total == 24
    platform.stop()


def test_the_cli_and_the_celery_task_rebuild_the_index(sqlite_settings):
    from services.listings import tasks
    from services.listings.cli import app as cli

    platform = platform_for(sqlite_settings)
    rt = platform["listings"]
    seller = Principal(uid("sel"), frozenset({"resident"}))
    for i in range(7):
        d = handlers.create_listing(rt, seller.user_id, {**book_body(title=f"旧书 {i}"), "device": None})
        handlers.publish_listing(rt, seller, d["id"])
    search_of(rt).rebuild(iter([]))  # events never indexed (e.g. the index file was lost)
    env = {
        "ENV": "test",
        "DATA_DIR": str(sqlite_settings.data_dir),
        "PII_KEY": sqlite_settings.pii_key,
        "JWT_SECRET": sqlite_settings.jwt_secret,
        "DATABASE_URL": sqlite_settings.database_url,
    }
    result = CliRunner().invoke(cli, ["reindex"], env=env)
    assert result.exit_code == 0, result.output
    assert "indexed 7 listing(s)" in result.output and "7/7" in result.output
    assert search_of(rt).search(SearchQuery(q="旧书")).total == 7

    search_of(rt).rebuild(iter([]))
    with run_inline(lambda name: platform[name]) as calls:
        tasks.REINDEX.publish(sqlite_settings)
    assert calls == [("listings.reindex", ())]
    assert search_of(rt).search(SearchQuery(q="旧书")).total == 7
    platform.stop()
