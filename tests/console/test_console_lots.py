"""The lots board in a real browser: a firm sees an open lot, bids on it, and sees another firm's higher bid arrive
over the live stream (no reload); its bid is listed under its own bids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from services.kernel.outbox import wait_until
from tests.console.support import login, shot
from tests.e2e.flow import http_post


def test_a_firm_bids_and_sees_the_best_bid_move_live(page, platform) -> None:
    api, prices = platform["api"], platform["prices"]
    seller, buyer, rival = prices.firm_tokens
    body = {
        "category": "metal.steel",
        "grade": "重废 一级",
        "qty_t": "30",
        "city_code": "110105",
        "reserve_price_fen_per_t": 250_000,
        "auction": "ascending",
        "min_increment_fen_per_t": 1_000,
        "ends_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        "source": "purchase",
        "purchase_ref": "CG-2026-1204-01",
    }
    # trading learns that the firms are verified from accounts' events: wait for it
    listed: list = []
    assert wait_until(
        lambda: listed.append(
            http_post(
                platform["base"] + "/v1/lots",
                body,
                {"Authorization": f"Bearer {seller}", "Idempotency-Key": uuid.uuid4().hex},
            )
        )
        or listed[-1][0] == 201,
        30,
        0.3,
    ), listed[-1]
    lot = listed[-1][1]
    login(page, prices.firm_phones[1])
    page.get_by_role("heading", name="竞价大厅").wait_for()  # a firm lands on the board
    expect(page.locator("#live-state")).to_have_text("实时：已连接")
    row = page.locator(f'#lots-board tr[data-id="{lot["id"]}"]')
    expect(row).to_contain_text("重废 一级")
    expect(row.locator(".best")).to_have_text("—")

    price = row.get_by_label("出价（元/吨）：废钢 重废 一级")
    # by keyboard: the price field, then Enter submits the bid
    price.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("2600")
    page.keyboard.press("Enter")
    page.locator("#toast").filter(has_text="已出价 2600.00 元/吨").wait_for()
    expect(row.locator(".best")).to_have_text("2600.00")
    expect(row.locator(".bids")).to_have_text("1")

    # a bid below the best + increment is refused and said why
    price.fill("2605")
    row.get_by_role("button", name="出价").click()
    page.locator("#toast .error").filter(has_text="出价未被接受").wait_for()

    # another firm outbids through the API: the board moves without a reload
    api.call("POST", f"/v1/lots/{lot['id']}/bids", rival, {"price_fen_per_t": 265_000}, status=201)
    expect(row.locator(".best")).to_have_text("2650.00")
    expect(row.locator(".bids")).to_have_text("2")
    expect(page.locator(f'#my-trades tr[data-lot="{lot["id"]}"]')).to_contain_text("2600.00")
    shot(page, "lots")

    # a price being typed survives a live update of its lot: the text and the focus stay
    price.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("2750")
    api.call("POST", f"/v1/lots/{lot['id']}/bids", rival, {"price_fen_per_t": 269_000}, status=201)
    expect(row.locator(".best")).to_have_text("2690.00")
    assert price.input_value() == "2750"
    assert price.evaluate("el => el === document.activeElement")
    page.keyboard.press("Enter")
    page.locator("#toast").filter(has_text="已出价 2750.00 元/吨").wait_for()
    expect(row.locator(".best")).to_have_text("2750.00")

    # the seller sees the lot under its own lots
    page.get_by_role("button", name="退出").click()
    login(page, prices.firm_phones[0])
    expect(page.locator(f'#my-lots tr[data-id="{lot["id"]}"]')).to_contain_text("竞价中")
    expect(page.locator(f'#lots-board tr[data-id="{lot["id"]}"]')).to_contain_text("本企业拍品")
    assert buyer != seller
