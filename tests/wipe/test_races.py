"""A report is checked against the tool and the lost/stolen list before its certificate is written: a revocation
or a blocklisting landing in between must not leave a valid certificate behind. The interleaving is forced: the
policy's decision (made between the check and the write) is wrapped to revoke or blocklist right then."""

from __future__ import annotations

import json

import pytest

from services.wipe import handlers
from services.wipe.handlers import WipeRefused

from .support import Tool, json_report, platform_for


@pytest.fixture
def wipe(settings):
    platform = platform_for(settings)
    yield platform["wipe"]
    platform.stop()


def _tool(rt) -> Tool:  # noqa: ANN001
    tool = Tool()
    tool.id = handlers.register_tool(rt, "us_admin", "擦除站", tool.public_b64)["id"]
    return tool


def _certificates(rt) -> list[dict]:  # noqa: ANN001
    from sqlalchemy import select

    from services.kernel.db import UnitOfWork
    from services.wipe.store import certificates

    with UnitOfWork(rt.db, readonly=True) as uow:
        ids = uow.session.execute(select(certificates.c.id)).scalars().all()
    return [handlers.certificate_view(rt, cid) for cid in ids]


@pytest.mark.parametrize("meanwhile", ["tool_revoked", "device_blocklisted"])
def test_a_revocation_or_blocklisting_between_the_check_and_the_write_leaves_no_valid_certificate(
    wipe, monkeypatch, meanwhile
):
    tool = _tool(wipe)
    report = json_report()
    text = json.dumps(report, ensure_ascii=False)
    decide = handlers.decide

    def decide_then_meanwhile(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = decide(*args, **kwargs)
        if meanwhile == "tool_revoked":
            handlers.revoke_tool(wipe, "us_admin", tool.id)
        else:
            handlers.blocklist_device(wipe, "us_admin", report["device"]["imei"])
        return out

    monkeypatch.setattr(handlers, "decide", decide_then_meanwhile)
    with pytest.raises(WipeRefused) as refused:
        handlers.submit_report(wipe, "us_op", tool.id, "json", text, tool.sign(text))
    assert refused.value.extra["reason"] == meanwhile
    assert [c for c in _certificates(wipe) if c["valid"]] == []
