"""The live lots board (text/event-stream): best bids of ascending lots as they happen, nothing of sealed lots'
prices, closes written by another process (the closing job) through the bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.contracts.trading import LotBestBidChanged
from services.trading.closing import run_due
from tests.support.sse import next_event

from .support import app_client, firm_auth, firm_events, lot_body, publish, settled_intake


async def test_stream_shows_best_bids_and_the_close(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    publish(platform, *firm_events("fm_seller"), *firm_events("fm_a"), settled_intake("fm_seller", "60000"))
    seller, a = firm_auth(s, "fm_seller"), firm_auth(s, "fm_a")
    steel = await client.get("/v1/lots/stream?category=metal.steel", headers=a)
    assert steel.status == 200 and steel.headers["Content-Type"].startswith("text/event-stream")
    assert (await steel.content.readline()) == b"retry: 3000\n"
    lot_id = (await (await client.post("/v1/lots", json=lot_body(), headers=seller)).json())["id"]
    name, data = await next_event(steel)
    assert name == "lot.listed" and data["lot_id"] == lot_id and data["qty_t"] == "20.000"
    one = await client.get(f"/v1/lots/stream?lot_id={lot_id}", headers=seller)
    await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 255_000}, headers=a)
    for stream in (steel, one):
        name, data = await next_event(stream)
        assert name == "lot.best_bid" and data["price_fen_per_t"] == 255_000 and data["bid_count"] == 1
    # a sealed lot's bids are never on the board
    body = lot_body(auction="sealed")
    body.pop("min_increment_fen_per_t")
    sealed = (await (await client.post("/v1/lots", json=body, headers=seller)).json())["id"]
    assert (await next_event(steel))[0] == "lot.listed"
    await client.post(f"/v1/lots/{sealed}/bids", json={"price_fen_per_t": 300_000}, headers=a)
    # a bid recorded by another trading process is only on the bus: the pump brings it in
    publish(
        platform,
        LotBestBidChanged(
            lot_id=lot_id,
            price_fen_per_t=256_000,
            bid_count=2,
            ends_at=datetime.now(UTC) + timedelta(hours=1),
            extended=False,
            placed_at=datetime.now(UTC),
        ),
        drain=False,
    )
    name, data = await next_event(steel)
    assert name == "lot.best_bid" and data["price_fen_per_t"] == 256_000
    # the close, by the closing job
    run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2))
    seen = [await next_event(steel), await next_event(steel)]
    assert sorted((n, d["lot_id"], d["status"], d["price_fen_per_t"]) for n, d in seen) == sorted(
        [("lot.closed", lot_id, "awarded", 255_000), ("lot.closed", sealed, "awarded", 300_000)]
    )
    assert (await next_event(one))[1]["price_fen_per_t"] == 256_000
    assert (await next_event(one))[1]["status"] == "awarded"
    steel.close()
    one.close()
    assert (await client.get("/v1/lots/stream")).status == 401


async def test_category_stream_follows_lots_listed_before_anyone_listened(aiohttp_client, sqlite_settings):
    """The board learns a lot's category from its listing only while someone listens; a lot listed before (or
    before a restart, or by another process) still has its bids and its close on `?category=` streams."""
    s = sqlite_settings
    platform, client = await app_client(aiohttp_client, s)
    publish(platform, *firm_events("fm_seller"), *firm_events("fm_a"), settled_intake("fm_seller", "60000"))
    seller, a = firm_auth(s, "fm_seller"), firm_auth(s, "fm_a")
    lot_id = (await (await client.post("/v1/lots", json=lot_body(), headers=seller)).json())["id"]
    steel = await client.get("/v1/lots/stream?category=metal.steel", headers=a)
    paper = await client.get("/v1/lots/stream?category=paper.cardboard", headers=a)
    assert (await steel.content.readline()) == (await paper.content.readline()) == b"retry: 3000\n"
    await client.post(f"/v1/lots/{lot_id}/bids", json={"price_fen_per_t": 255_000}, headers=a)
    name, data = await next_event(steel)
    assert (name, data["lot_id"], data["price_fen_per_t"]) == ("lot.best_bid", lot_id, 255_000)
    run_due(platform["trading"], datetime.now(UTC) + timedelta(hours=2))
    name, data = await next_event(steel)
    assert (name, data["lot_id"], data["status"]) == ("lot.closed", lot_id, "awarded")
    # the paper listener saw neither: its next frame is the next paper lot's listing
    body = lot_body(category="paper.cardboard", qty_t="1", source="purchase", purchase_ref="合同 9")
    paper_lot = (await (await client.post("/v1/lots", json=body, headers=seller)).json())["id"]
    name, data = await next_event(paper)
    assert (name, data["lot_id"]) == ("lot.listed", paper_lot)
    steel.close()
    paper.close()
