"""PostgreSQL: the same signed report sent many times at once still gives one certificate and one event."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from services.contracts.wipe import CertificateIssued
from services.kernel.db import UnitOfWork
from services.kernel.outbox import outbox_t
from services.wipe import handlers

from .support import Tool, json_report, platform_for


def test_the_same_report_at_once_gives_one_certificate(pg_settings):
    platform = platform_for(pg_settings)
    rt = platform["wipe"]
    tool = Tool()
    tool.id = handlers.register_tool(rt, "us_admin", "并发站", tool.public_b64)["id"]
    text = json.dumps(json_report(), ensure_ascii=False)
    sig = tool.sign(text)

    def submit(i: int) -> tuple[str, bool]:
        out, created = handlers.submit_report(rt, f"us_op{i}", tool.id, "json", text, sig)
        return out["certificate_id"], created

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(16)))
    assert len({cid for cid, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with UnitOfWork(rt.db, readonly=True) as uow:
        issued = uow.session.execute(
            select(func.count()).select_from(outbox_t).where(outbox_t.c.type == CertificateIssued.type)
        ).scalar_one()
    assert issued == 1
    platform.stop()
