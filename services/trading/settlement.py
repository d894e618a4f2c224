"""Settlement: once the delivered weight stands (within the tolerance, or accepted by the buyer), the buyer pays
the amount on the weighbridge weight and the seller is paid that less the platform's fee.

Money moves through payments over the bus: trading asks for a hold of the buyer's money under a deterministic id
(`hr_<trade id>`), the buyer confirms it with payments, and once it is authorised trading asks payments to
capture it and release it to the seller less the fee; the capture settles the trade (TradeSettled).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from services.kernel.db import UnitOfWork

from .domain import model as m
from .store import trades


def request_payment(uow: UnitOfWork, trade_id: str, now: datetime) -> bool:
    """Move a delivered trade to `settling` and ask for the buyer's payment (once: a conditional UPDATE)."""
    res = uow.session.execute(
        update(trades)
        .where(trades.c.id == trade_id, trades.c.status == m.DELIVERED)
        .values(
            status=m.next_state("request_payment", m.DELIVERED),
            payment_request_id=m.payment_request_id(trade_id),
            payment_status="requested",
            version=trades.c.version + 1,
        )
    )
    return res.rowcount == 1
