"""The admin's second-hand orders page (二手订单) in a real browser: every order, and the 付款失败 filter
(`GET /v1/admin/orders?payment_failed=true`) showing what the API says; a non-admin is not shown the page. And
a regulator's role is named in Chinese in the header."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.console.seed import ADMIN_PHONE, seed_orders
from tests.console.support import login, shot


@pytest.fixture(scope="module")
def orders(platform):
    return seed_orders(platform["api"], platform["data_dir"])


def test_admin_lists_orders_and_filters_those_whose_payment_failed(page, platform, orders) -> None:
    api, admin = platform["api"], platform["admin"]
    login(page, ADMIN_PHONE)
    page.get_by_role("navigation", name="主导航").get_by_role("link", name="二手订单").click()
    page.get_by_role("heading", name="二手订单").wait_for()
    table = page.locator("#order-table")
    paid, failed = (
        table.locator(f'tr[data-id="{orders.paid}"]'),
        table.locator(f'tr[data-id="{orders.failed}"]'),
    )
    expect(paid).to_contain_text("已付款")
    expect(failed).to_contain_text("已发货")
    expect(failed).to_contain_text("授权已失效")

    page.get_by_label("仅付款失败（已发货，资金未入托管）").check()
    expect(paid).to_have_count(0)
    expect(failed).to_have_count(1)
    expect(page.get_by_label("订单状态")).to_be_disabled()
    assert page.url.endswith("#/orders?payment_failed=true")
    shot(page, "admin-orders")

    # the page shows what the API says, row by row and in its order
    listed = api.call("GET", "/v1/admin/orders?payment_failed=true&limit=50", admin)["items"]
    assert [o["id"] for o in listed] == [orders.failed]
    ids = table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == [o["id"] for o in listed]
    cells = failed.locator("td").all_inner_texts()
    want = listed[0]
    assert cells[0] == want["id"] and cells[1] == want["listing_id"]
    assert (cells[2], cells[3]) == (want["buyer_id"], want["seller_id"])
    assert cells[4] == f"{want['amount_fen'] / 100:.2f}"
    assert cells[6].startswith("待买家付款") or cells[6].startswith("等待支付单")
    assert f"（第 {want['payment']['attempt']} 次）" in cells[6].replace("\n", "")

    # a reload keeps the filter; unticking it lists every order again, by status
    page.reload()
    expect(page.get_by_label("仅付款失败（已发货，资金未入托管）")).to_be_checked()
    expect(failed).to_have_count(1)
    page.get_by_label("仅付款失败（已发货，资金未入托管）").uncheck()
    page.get_by_label("订单状态").select_option("paid")
    expect(paid).to_have_count(1)
    expect(failed).to_have_count(0)

    # the admin cancels the order nobody paid for: it leaves the 付款失败 list, and the API says cancelled
    page.get_by_label("仅付款失败（已发货，资金未入托管）").check()
    page.once("dialog", lambda d: d.accept())
    failed.get_by_role("button", name=f"取消订单 {orders.failed}").click()
    page.locator("#toast").filter(has_text=f"订单 {orders.failed} 已取消").wait_for()
    expect(failed).to_have_count(0)
    got = api.call("GET", f"/v1/orders/{orders.failed}", admin)
    assert (got["status"], got["cancel_reason"]) == ("cancelled", "cancelled_by_admin")
    assert api.call("GET", "/v1/admin/orders?payment_failed=true", admin)["items"] == []


def test_a_non_admin_gets_no_orders_page(page, orders) -> None:
    login(page, orders.seller_phone)
    nav = page.get_by_role("navigation", name="主导航")
    expect(nav.get_by_role("link", name="二手订单")).to_have_count(0)
    page.goto("/console/#/orders")
    page.locator("#toast").filter(has_text="“二手订单”需要管理员角色").wait_for()
    expect(page.get_by_role("heading", name="二手订单")).to_have_count(0)


def test_a_regulators_role_is_named_in_chinese(page, platform) -> None:
    api, admin = platform["api"], platform["admin"]
    phone = "13700007703"
    user = api.login(phone)["user_id"]
    api.call("POST", f"/v1/admin/users/{user}/roles", admin, {"roles": ["regulator"]})
    login(page, phone)
    expect(page.locator("#who")).to_contain_text("监管部门")
    expect(page.locator("#who")).not_to_contain_text("regulator")
