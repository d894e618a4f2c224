"""The console in a real browser: signing in with the keyboard alone, and the price index page drawn with data."""

from __future__ import annotations

import csv
import io
import re

from playwright.sync_api import expect

from tests.console.seed import ADMIN_PHONE
from tests.console.support import shot

# The colour ECharts gives the first series (the category's price line) in its default theme.
FIRST_SERIES_RGB = (0x54, 0x70, 0xC6)

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(el => el.type !== 'hidden' && !el.labels?.length && !el.getAttribute('aria-label'))
    .map(el => el.outerHTML)"""


def active(page) -> str:
    return page.evaluate(
        "() => { const e = document.activeElement;"
        " return `${e.tagName.toLowerCase()}:${e.name || e.textContent.trim()}` }"
    )


def test_signing_in_with_the_keyboard_alone(page) -> None:
    """Tab and Enter only: phone → 获取验证码 → code → 登录; every control has a label."""
    page.goto("/console/#/login")
    page.get_by_role("heading", name="登录").wait_for()
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    page.get_by_label("手机号").focus()
    page.keyboard.type(ADMIN_PHONE)
    page.keyboard.press("Tab")
    assert active(page) == "button:获取验证码"
    page.keyboard.press("Enter")
    status = page.locator("#otp-status")
    status.filter(has_text="开发环境验证码").wait_for()
    assert active(page) == "input:code", "after the code is sent the cursor waits in the code field"
    shot(page, "login")
    page.keyboard.type(re.search(r"开发环境验证码：(\d+)", status.inner_text()).group(1))
    page.keyboard.press("Tab")
    assert active(page) == "button:登录"
    page.keyboard.press("Enter")
    page.get_by_role("button", name="退出").wait_for()
    # the home page has loaded (it then takes the focus to its heading, as a screen reader expects)
    page.locator("#main h1").wait_for()
    # the navigation offers what the roles allow, by keyboard too
    assert "价格指数" in page.get_by_role("navigation", name="主导航").get_by_role("link").all_inner_texts()
    page.get_by_role("link", name="价格指数").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="再生资源价格指数").wait_for()
    assert page.get_by_role("link", name="价格指数").get_attribute("aria-current") == "page"


def test_a_wrong_code_is_refused_and_named(page) -> None:
    page.goto("/console/#/login")
    page.get_by_label("手机号").fill(ADMIN_PHONE)
    page.get_by_role("button", name="获取验证码").click()
    page.locator("#otp-status").filter(has_text="开发环境验证码").wait_for()
    page.get_by_label("验证码", exact=True).fill(
        "000000" if "000000" not in page.locator("#otp-status").inner_text() else "111111"
    )
    page.get_by_role("button", name="登录", exact=True).click()
    page.locator("#toast .error").wait_for()
    assert page.get_by_role("button", name="退出").count() == 0


def lit_pixels(page, rgb: tuple[int, int, int]) -> int:
    """Pixels of the chart's canvas within a small distance of `rgb`: the line is drawn, not just the axes."""
    return page.evaluate(
        """([r, g, b]) => {
        const c = document.querySelector('#price-chart canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i + 3] > 200 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60) n++;
        return n; }""",
        list(rgb),
    )


def test_price_page_draws_the_series_with_stale_and_restated_points(page, platform) -> None:
    prices = platform["prices"]
    page.goto("/console/#/prices")
    page.get_by_label("品类", exact=True).select_option("paper.cardboard")
    page.get_by_label("省份", exact=True).select_option("110000")
    page.get_by_label("城市 / 区县").select_option("110105")
    page.get_by_label("开始日期", exact=True).fill(prices.days[0].isoformat())
    page.get_by_role("button", name="查询").click()
    chart = page.locator("#price-chart")
    page.wait_for_function(
        "() => document.querySelector('#price-chart').getAttribute('aria-label')"
        "?.startsWith('黄纸板 · 朝阳区')"
    )
    data = chart.evaluate("e => ({...e.dataset})")
    assert data == {
        "points": "6",
        "valued": "6",
        "stale": "1",
        "restated": "1",
        "indexPoints": data["indexPoints"],
    }
    assert int(data["indexPoints"]) >= 6, "the family indices are drawn too"
    assert lit_pixels(page, FIRST_SERIES_RGB) > 300
    assert "黄纸板 · 朝阳区" in chart.get_attribute("aria-label")

    # the table behind the chart marks the same days the seed made stale and restated
    page.get_by_text("数据表").click()
    rows = page.locator("#series-table tbody tr")
    assert rows.count() == 6
    marked = {r.locator("td").first.inner_text(): r.locator("td").last.inner_text() for r in rows.all()}
    assert marked[prices.stale_day.isoformat()] == "陈旧"
    assert marked[prices.restated_day.isoformat()] == "已更正"

    notices = page.locator("#notices-table tbody tr")
    assert notices.count() == 1
    assert prices.restated_day.isoformat() in notices.inner_text() and "迟到数据补录" in notices.inner_text()

    # the methodology's rules summarised in Chinese: the fallback chain's levels and the confidentiality rule
    summary = page.locator("section[aria-labelledby=method-title]")
    expect(summary).to_contain_text("城市 → 省份 → 全国")
    expect(summary.locator("#confidentiality")).to_contain_text("身份从不公开")
    assert "national" not in summary.inner_text() and "Contributors" not in summary.inner_text()
    page.get_by_text("方法全文").click()
    page.locator("#methodology-text").filter(has_text="MAD").wait_for()

    with page.expect_download() as dl:
        page.get_by_role("link", name="下载 CSV").click()
    rows = list(csv.DictReader(io.StringIO(dl.value.path().read_text(encoding="utf-8-sig"))))
    assert [r["date"] for r in rows] == [d.isoformat() for d in prices.days]
    assert {r["region"] for r in rows} == {"110105"}
    shot(page, "prices")
