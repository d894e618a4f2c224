"""The accountant's page in a real browser: the firm's reverse invoices, a red letter, a monthly export run to done
and downloaded."""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect

from tests.console.seed import ACCOUNTANT_PHONE, seed_invoices
from tests.console.support import login, shot


@pytest.fixture(scope="module")
def invoices(platform):
    return seed_invoices(platform["api"])


def test_accountant_red_letters_an_invoice_and_downloads_the_months_export(page, invoices) -> None:
    blue = invoices.invoice
    login(page, ACCOUNTANT_PHONE)
    page.get_by_role("heading", name="发票与报税").wait_for()  # an accountant lands here
    table = page.locator("#invoice-table")
    row = table.locator(f'tr[data-id="{blue["id"]}"]')
    row.wait_for()
    assert blue["number"] in row.inner_text() and "已开具" in row.inner_text()
    assert f"{blue['total_fen'] / 100:.2f}" in row.inner_text()

    # red letter: the dialog asks for the reason; the offsetting invoice appears in the list
    row.get_by_role("button", name=f"红冲 {blue['number']}").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("红冲原因（如：开票有误、销货退回）").fill("开票有误")
    dialog.get_by_role("button", name="开具红字发票").click()
    page.locator("#toast").filter(has_text="已开具红字发票").wait_for()
    expect(row).to_contain_text("已红冲")
    assert row.get_by_role("button").count() == 0, "an invoice is red-lettered once"
    reds = table.locator("tbody tr").filter(has_text="红字")
    assert reds.count() == 1 and f"冲 {blue['number']}" in reds.inner_text()

    page.get_by_label("类型", exact=True).select_option("red")
    page.get_by_role("button", name="查询").click()
    page.wait_for_function("() => document.querySelectorAll('#invoice-table tbody tr').length === 1")

    # the month's detail report: progress until done, then the file
    form = page.get_by_role("form", name="生成报税报表")
    form.get_by_label("格式").select_option("xlsx")
    form.get_by_role("button", name="生成报表").click()
    job = page.locator("#export-table tbody tr").first
    page.wait_for_function(
        "() => document.querySelector('#export-table tbody tr')?.dataset.status === 'done'", timeout=60_000
    )
    assert job.locator("progress").get_attribute("value") == "100"
    shot(page, "invoices")
    with page.expect_download() as dl:
        job.get_by_role("button", name="下载").click()
    assert dl.value.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO(dl.value.path().read_bytes()), read_only=True)
    cells = [
        str(c) for ws in book.worksheets for r in ws.iter_rows(values_only=True) for c in r if c is not None
    ]
    assert any(blue["number"] in c for c in cells), "the blue invoice is in the month's report"
