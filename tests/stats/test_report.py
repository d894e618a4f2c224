"""The monthly report for regulators: CSV and XLSX, rows per region at the level asked × category with a total
row per region, distinct counts over the month, only regulators and admins."""

from __future__ import annotations

import csv
import io
from datetime import date

from openpyxl import load_workbook

from .support import app_client, firm_owner, publish, regulator, settled, trade

NOV = date(2026, 11, 10)


async def _client(aiohttp_client, settings):
    platform, client = await app_client(aiohttp_client, settings)
    publish(
        platform,
        # 无锡: 滨湖区 320211 and 梁溪区 320213; 苏州 姑苏区 320508; 北京 朝阳 110105
        settled(
            resident="u1",
            firm="fm_a",
            collector="cl_1",
            city_code="320211",
            lines=[("metal.steel", "100.000", 20_000), ("glass.mixed", "20.000", 0)],
            on=NOV,
        ),
        settled(
            resident="u1",
            firm="fm_a",
            collector="cl_1",
            city_code="320211",
            lines=[("metal.steel", "5.000", 1_000)],
            on=date(2026, 11, 11),
        ),
        settled(
            resident="u2",
            firm="fm_a",
            collector="cl_2",
            city_code="320213",
            lines=[("metal.steel", "10.000", 2_000)],
            on=NOV,
        ),
        settled(
            resident="u3",
            firm="fm_b",
            collector="cl_3",
            city_code="320508",
            lines=[("paper.cardboard", "50.000", 7_000)],
            on=NOV,
        ),
        settled(
            resident="u4",
            firm="fm_c",
            collector="cl_4",
            city_code="110105",
            lines=[("paper.cardboard", "1.000", 140)],
            on=NOV,
        ),
        settled(
            resident="u5",
            firm="fm_a",
            collector="cl_1",
            city_code="320211",
            lines=[("metal.steel", "1.000", 200)],
            on=date(2026, 12, 1),
        ),  # December: not in the report
        *trade(
            seller="fm_a",
            buyer="fm_b",
            category="metal.steel",
            qty_t="0.1",
            price_fen_per_t=200_000,
            on=NOV,
            city_code="320211",
        ),
    )
    return client


async def test_the_csv_report_of_a_province_by_city(aiohttp_client, sqlite_settings):
    client = await _client(aiohttp_client, sqlite_settings)
    r = await client.get(
        "/v1/stats/reports/monthly?period=2026-11&region=320000&by=city&format=csv",
        headers=regulator(sqlite_settings),
    )
    assert r.status == 200, await r.text()
    assert r.headers["Content-Disposition"] == 'attachment; filename="stats-2026-11-320000-city.csv"'
    raw = await r.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    got = {(x["地区代码"], x["品类代码"]): x for x in rows}
    assert sorted(got) == [
        ("320200", "glass.mixed"),
        ("320200", "metal.steel"),
        ("320200", "合计"),
        ("320500", "paper.cardboard"),
        ("320500", "合计"),
    ]
    wuxi = got[("320200", "合计")]
    assert (wuxi["地区"], wuxi["回收量(吨)"], wuxi["回收金额(元)"]) == ("无锡市", "0.135000", "230.00")
    # u1 twice and u2 once: 2 residents, 3 pickups, 2 collectors over the month
    assert (wuxi["服务居民数"], wuxi["回收单数"], wuxi["活跃回收员数"]) == ("2", "3", "2")
    assert (wuxi["低值可回收物(吨)"], wuxi["低值可回收物占比"]) == ("0.020000", "0.1481")
    assert (wuxi["外售量(吨)"], wuxi["外售金额(元)"]) == ("0.100000", "200.00")
    # 115 kg steel × 1.6 + 20 kg glass × 0.31
    assert wuxi["减碳量(吨CO2e)"] == "0.190200"
    assert got[("320200", "metal.steel")]["因子状态"] == "published"


async def test_the_xlsx_report_by_county_lists_the_factors(aiohttp_client, sqlite_settings):
    client = await _client(aiohttp_client, sqlite_settings)
    r = await client.get(
        "/v1/stats/reports/monthly?period=2026-11&region=320200&by=county&format=xlsx",
        headers=regulator(sqlite_settings),
    )
    assert r.status == 200
    wb = load_workbook(io.BytesIO(await r.read()), read_only=True)
    sheet = list(wb["月报"].iter_rows(values_only=True))
    assert "无锡市" in sheet[0][0] and sheet[1][0] == "地区代码"
    totals = {row[0]: row for row in sheet[2:] if row[2] == "合计"}
    assert sorted(totals) == ["320211", "320213"]
    assert (totals["320211"][1], float(totals["320211"][4]), totals["320211"][9]) == ("滨湖区", 0.125, 1)
    factors = list(wb["排放因子"].iter_rows(values_only=True))
    steel = next(row for row in factors if row[0] == "metal.steel")
    assert float(steel[1]) == 1.6 and "中国废钢铁应用协会" in steel[3]


async def test_only_regulators_read_the_report_and_bad_input_names_the_field(aiohttp_client, sqlite_settings):
    client = await _client(aiohttp_client, sqlite_settings)
    q = "/v1/stats/reports/monthly?period=2026-11"
    assert (await client.get(q, headers=firm_owner(sqlite_settings, "fm_a"))).status == 403
    assert (await client.get(q)).status == 401
    for query, field in (
        ("period=2026-13", "period"),
        ("period=2026-11&format=pdf", "format"),
        ("period=2026-11&region=320200&by=province", "by"),
        ("period=2026-11&region=12", "region"),
    ):
        r = await client.get(f"/v1/stats/reports/monthly?{query}", headers=regulator(sqlite_settings))
        assert r.status == 400, query
        assert field in [e["field"] for e in (await r.json())["errors"]], query
