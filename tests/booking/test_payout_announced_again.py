"""A lost payout.paid is recovered by booking's re-request (docs/reliability.md): payments, asked again for a payout
it holds, announces its outcome again under the same event id; booking's payout leaves `requested`, and the
resident is paid once.

The embedded run on real sockets; the first payout.paid is lost on its way to the bus, either after it left the
outbox (the bus lost the record: the row is marked sent, nothing published) or before (the row is gone).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from services.booking import timers
from services.booking.settings import configure
from services.kernel.outbox import outbox_t
from services.payments.store import ledger_entries, payouts
from tests.security.factories import _accepted
from tests.security.harness import Api, Topology, settings_for

PAID = "cn.recycle.payments.payout.paid.v1"


@pytest.fixture(scope="module")
def topology(tmp_path_factory):  # noqa: ANN001, ANN201
    settings = settings_for("embedded", tmp_path_factory.mktemp("payout-again"), None)
    with Topology("embedded", settings) as topo:
        yield topo


class LosePayoutPaid:
    """Payments' relay loses every payout.paid of the payouts in `ids` once: `sent` (marked sent, never
    published) or `deleted` (gone from the outbox)."""

    def __init__(self, topo: Topology, how: str) -> None:
        self.relay = topo.platform["payments"].relay
        self.db = topo.platform["payments"].db
        self.how = how
        self.lost: list[str] = []  # the payout ids whose payout.paid was lost
        self._relay_once = self.relay.relay_once

    def __enter__(self) -> LosePayoutPaid:
        self.relay.relay_once = self.relay_once  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.relay.relay_once = self._relay_once  # type: ignore[method-assign]

    def relay_once(self) -> int:
        unsent = (outbox_t.c.type == PAID) & outbox_t.c.sent_at.is_(None) & outbox_t.c.key.notin_(self.lost)
        with self.db.engine.begin() as conn:
            keys = list(conn.execute(select(outbox_t.c.key).where(unsent)).scalars())
            if self.how == "sent":
                conn.execute(outbox_t.update().where(unsent).values(sent_at=datetime.now(UTC)))
            else:
                conn.execute(outbox_t.delete().where(unsent))
        self.lost += keys
        return self._relay_once() + len(keys)


async def _settled(api: Api) -> tuple[str, Any]:
    """A pickup weighed and settled by its resident (its payout requested once invoicing has answered)."""
    pid, resident, collector, _ = await _accepted(api)
    assert (await api.call("POST", f"/v1/pickups/{pid}/arrive", collector)).status == 200
    lines = [{"category": "paper.cardboard", "qty": "12.5"}, {"category": "metal.copper", "qty": "1.2"}]
    r = await api.call("POST", f"/v1/pickups/{pid}/weigh", collector, json={"lines": lines})
    assert r.status == 200, r
    assert (await api.call("POST", f"/v1/pickups/{pid}/settle", resident)).status == 200
    return pid, resident


def _count(db: Any, table: Any, *where: Any) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


@pytest.mark.parametrize("how", ["sent", "deleted"])
async def test_a_lost_payout_paid_is_announced_again_when_booking_asks_again(
    topology: Topology, how: str, monkeypatch
) -> None:  # noqa: ANN001
    booking = topology.platform["booking"]
    monkeypatch.setenv("BOOKING_PAYOUT_REREQUEST_MINUTES", "1")
    configure(booking)  # the environment's period: booking asks again after a minute
    async with aiohttp.ClientSession() as session:
        api = Api(topology, session)
        with LosePayoutPaid(topology, how) as loss:
            pid, resident = await _settled(api)
            api.drain()
        r = await api.call("GET", f"/v1/pickups/{pid}", resident)
        payout = r.body["payout"]
        assert payout["status"] == "pending" and payout["id"], r  # payments paid it; booking never heard
        assert loss.lost == [payout["id"]]

        # the period passes: booking's timer asks again, payments announces the outcome again
        later = datetime.now(UTC) + timedelta(minutes=1, seconds=1)
        assert timers.run_due(booking, later)["payout_rerequested"] == 1
        api.drain()

        r = await api.call("GET", f"/v1/pickups/{pid}", resident)
        assert r.body["payout"]["status"] == "paid", r
        assert r.body["payout"]["id"] == payout["id"] and r.body["payout"]["attempts"] == payout["attempts"]
        r = await api.call("GET", "/v1/payments/withdrawals", resident)
        assert r.status == 200, r
        [sent] = r.body["items"]  # paid out once, above the wallet threshold
        assert (sent["amount_fen"], sent["status"]) == (payout["amount_fen"], "paid"), sent

    payments_db = topology.platform["payments"].db
    assert _count(payments_db, payouts, payouts.c.payout_id == payout["id"]) == 1
    assert _count(payments_db, ledger_entries, ledger_entries.c.ref == payout["id"]) == 1  # its credit
    # one payout.paid in the outbox, under the id the first one had: consumers' inboxes take it for the first
    assert _count(payments_db, outbox_t, outbox_t.c.type == PAID, outbox_t.c.key == payout["id"]) == 1
    # asked once more (booking's payout is paid now, so only a late duplicate request would): nothing moves
    assert timers.run_due(booking, later + timedelta(minutes=2))["payout_rerequested"] == 0
