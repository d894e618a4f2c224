"""The printable certificate page: what the JSON route says, in Chinese and English, with a QR code of the page's
own address (segno, inline SVG: the page loads nothing else, so it prints and archives as one file)."""

from __future__ import annotations

from html import escape
from typing import Any

import segno

KIND_ZH = {
    "phone": "手机",
    "tablet": "平板电脑",
    "laptop": "笔记本电脑",
    "desktop": "台式电脑",
    "wearable": "可穿戴设备",
    "drive": "存储设备",
}
METHOD_ZH = {
    "crypto_erase": "密码擦除",
    "block_erase": "块擦除",
    "sanitize": "清理命令 (sanitize)",
    "overwrite": "覆写",
    "purge": "清除命令 (purge)",
    "degauss": "消磁",
    "factory_reset": "恢复出厂设置（密码擦除）",
}
REVOKED_ZH = {
    "secondary_verification_failed": "复核未通过",
    "tool_revoked": "擦除工具已吊销",
    "device_blocklisted": "设备已列入挂失/被盗名单",
    "admin_decision": "管理员撤销",
}


def qr_svg(url: str) -> str:
    return segno.make(url, error="m").svg_inline(scale=4, dark="#000", light="#fff")


def _method(m: dict[str, Any]) -> str:
    name = METHOD_ZH.get(m["method"], m["method"])
    if m["method"] != "overwrite":
        return name
    return f"{name} · {m['passes']} 遍 passes ({m['random_passes']} 随机 random)"


def _verification(v: dict[str, Any] | None) -> str:
    if not v:
        return "未验证 / not verified"
    if v["mode"] == "full":
        what = "全盘验证 / full"
    else:
        what = (
            f"抽样验证 / sampled: {v.get('subsections')} × {v.get('locations_per_subsection')}, "
            f"{v.get('coverage_pct')}%"
        )
    return f"{what} — {'通过 passed' if v['result'] == 'passed' else '未通过 failed'}"


def certificate_page(view: dict[str, Any], url: str) -> str:
    d = view["device"]
    valid = view["valid"]
    status = (
        "<p class='ok'>有效 · VALID</p>"
        if valid
        else f"<p class='bad'>已撤销 · REVOKED — {escape(REVOKED_ZH.get(view['revoked_reason'] or '', ''))} "
        f"({escape(view['revoked_reason'] or '')}, {escape(str(view['revoked_at']))})</p>"
    )
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{escape(m['type'])}</td><td>{escape(m.get('serial_masked') or '—')}</td>"
        f"<td>{escape(_method(m))}</td>"
        f"<td>{escape(_verification(m.get('verification')))}</td></tr>"
        for i, m in enumerate(view["media"])
    )
    ident = (
        " · ".join(
            x
            for x in (
                f"IMEI {d['imei_masked']}" if d.get("imei_masked") else "",
                f"S/N {d['serial_masked']}" if d.get("serial_masked") else "",
            )
            if x
        )
        or "—"
    )
    tool = view["tool"]
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>信息清除证书 {escape(view["id"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:"Noto Sans CJK SC","WenQuanYi Micro Hei",sans-serif;max-width:48rem;margin:2rem auto;color:#111}}
h1{{font-size:1.5rem;margin-bottom:.2rem}} .sub{{color:#555;margin-top:0}}
table{{border-collapse:collapse;width:100%;margin:1rem 0}} td,th{{border:1px solid #999;padding:.3rem .5rem;text-align:left}}
.ok{{color:#0a6b2d;font-weight:bold;font-size:1.2rem}} .bad{{color:#b00020;font-weight:bold;font-size:1.2rem}}
.qr{{float:right;margin-left:1rem;text-align:center;font-size:.75rem}} dt{{font-weight:bold}} dd{{margin:0 0 .4rem 0}}
@media print{{body{{margin:0}}}}
</style></head>
<body>
<div class="qr">{qr_svg(url)}<br>扫码核验 · scan to check</div>
<h1>数据信息清除证书</h1>
<p class="sub">Data erasure certificate · GB 46864-2025 · NIST SP 800-88</p>
{status}
<dl>
<dt>证书编号 Certificate</dt><dd><code>{escape(view["id"])}</code></dd>
<dt>设备 Device</dt><dd>{escape(KIND_ZH.get(d["kind"], d["kind"]))} ({escape(d["kind"])}) ·
 {escape(d.get("make") or "")} {escape(d["model"])}</dd>
<dt>标识 Identifiers</dt><dd>{escape(ident)}</dd>
<dt>签发时间 Issued</dt><dd>{escape(str(view["issued_at"]))} (报告 report {escape(str(view["report_created_at"]))},
 {escape(view["format"])})</dd>
<dt>擦除工具 Erasure tool</dt><dd>{escape(tool.get("name") or tool["id"])} · key SHA-256
 <code>{escape(tool["fingerprint"][:16])}…</code></dd>
<dt>复核 Secondary verification</dt><dd>{escape(view["secondary_verification"])}</dd>
<dt>保存至 Kept until</dt><dd>{escape(str(view["retained_until"]))}</dd>
</dl>
<table><thead><tr><th>#</th><th>介质 Medium</th><th>序列号 Serial</th><th>方法 Method</th><th>验证 Verification</th></tr>
</thead><tbody>{rows}</tbody></table>
<p class="sub">本证书不含个人信息；标识已脱敏。核验地址 Check at: <code>{escape(url)}</code></p>
</body></html>
"""
