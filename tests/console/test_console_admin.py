"""The admin's page in a real browser: the verification queue (approve, reject with a reason), dead letters per
consumer group with replay, and the wipe tools."""

from __future__ import annotations

import base64

from nacl.signing import SigningKey
from playwright.sync_api import expect

from services.kernel.bus.factory import make_bus
from services.kernel.bus.port import Record
from services.kernel.settings import Settings
from tests.console.seed import ADMIN_PHONE, register_firm
from tests.console.support import login, shot


def test_admin_approves_and_rejects_applications(page, platform) -> None:
    api, admin = platform["api"], platform["admin"]
    good = register_firm(api, "13600000101", "朝阳再生资源回收有限公司")
    bad = register_firm(api, "13600000102", "可疑回收有限公司")
    login(page, ADMIN_PHONE)
    page.get_by_role("heading", name="审核与运维").wait_for()
    queue = page.locator("#verifications")
    queue.locator(f'tr[data-id="{good}"]').wait_for()
    shot(page, "admin-verifications")

    queue.locator(f'tr[data-id="{good}"]').get_by_role("button", name="通过").click()
    expect(queue.locator(f'tr[data-id="{good}"]')).to_have_count(0)
    queue.locator(f'tr[data-id="{bad}"]').get_by_role("button", name="驳回").click()
    page.get_by_role("dialog").get_by_label("驳回原因").fill("营业执照与统一社会信用代码不符")
    page.get_by_role("dialog").get_by_role("button", name="驳回").click()
    expect(queue.locator(f'tr[data-id="{bad}"]')).to_have_count(0)

    # the decisions are the platform's: the API says so
    verified = api.call("GET", "/v1/admin/verifications?kind=firm&status=verified&limit=200", admin)["items"]
    rejected = api.call("GET", "/v1/admin/verifications?kind=firm&status=rejected&limit=200", admin)["items"]
    assert good in {v["id"] for v in verified} and bad in {v["id"] for v in rejected}
    page.get_by_label("状态").select_option("rejected")
    queue.locator(f'tr[data-id="{bad}"]').wait_for()


def test_admin_sees_parked_records_per_group_and_replays_them(page, platform) -> None:
    # a record no consumer can decode: each group reading booking.pickup parks it after its attempts
    bus = make_bus(Settings(data_dir=platform["data_dir"]))
    bus.publish([Record(topic="booking.pickup", key="console-poison", value=b"not an event")])
    bus.close()
    login(page, ADMIN_PHONE)
    page.get_by_role("tab", name="死信").click()
    groups = page.locator("#dead-letter-groups")
    row = groups.locator('tr[data-group="invoicing.pickups"]')
    for _ in range(50):  # the background process parks it within a few polls
        row.wait_for()
        if row.locator(".badge").count():
            break
        page.wait_for_timeout(200)
        page.get_by_role("tab", name="死信").click()
    expect(row.locator(".badge")).to_have_text("1")
    row.get_by_role("button", name="查看 invoicing.pickups 的死信").click()
    records = page.locator("#dead-letter-records")
    expect(records).to_contain_text("booking.pickup/")
    expect(records).to_contain_text("undecodable")
    shot(page, "admin-dead-letters")
    row.get_by_role("button", name="重放 invoicing.pickups 的死信").click()
    page.locator("#toast").filter(has_text="invoicing.pickups：已重放 1 条").wait_for()


def test_admin_registers_and_revokes_a_wipe_tool(page, platform) -> None:
    key = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    login(page, ADMIN_PHONE)
    page.get_by_role("tab", name="清除工具").click()
    form = page.get_by_role("form", name="登记清除工具")
    form.get_by_label("工具名称").fill("nwipe 0.37 · 回收站一号机")
    form.get_by_label("公钥（Ed25519，Base64）").fill(key)
    form.get_by_role("button", name="登记").click()
    tools = page.locator("#wipe-tools")
    expect(tools).to_contain_text("nwipe 0.37 · 回收站一号机")
    expect(tools).to_contain_text("有效")
    shot(page, "admin-wipe-tools")
    page.once("dialog", lambda d: d.accept())
    tools.get_by_role("button", name="吊销工具 nwipe 0.37 · 回收站一号机").click()
    expect(tools).to_contain_text("已吊销")
    listed = platform["api"].call("GET", "/v1/wipe/tools", platform["admin"])["items"]
    assert [t["status"] for t in listed if t["public_key"] == key] == ["revoked"]
