"""Timer scans: every row that is due now, each changed in its own unit of work.

The state is in the service's table and a scan selects what is due, so a scan missed while the workers were down is
caught up by the next one. One bad row never stops the others: it is logged, skipped for the rest of this scan and
tried again by the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Select

from .db import Database

log = logging.getLogger(__name__)


def each_due(
    db: Database,
    query: Select[Any],
    key: ColumnElement[Any],
    batch: int,
    act: Callable[[Any], bool],
    what: str,
) -> int:
    """Call `act(row)` on every row `query` selects (rows with an `id`, read in `key` order, `batch` at a time);
    `act` opens its own unit of work and says whether it changed the row. Returns how many it changed. A row whose
    `act` raised is logged as `what` (e.g. "booking timer failed on pickup") and its id."""
    done = 0
    tried: set[str] = set()
    while True:
        with db.session(readonly=True) as s:
            rows = [
                r for r in s.execute(query.order_by(key).limit(batch + len(tried))).all() if r.id not in tried
            ]
        if not rows:
            return done
        for row in rows[:batch]:
            tried.add(row.id)
            try:
                if act(row):
                    done += 1
            except Exception:  # noqa: BLE001 - one bad row must not stop the others; the next scan retries it
                log.exception("%s %s", what, row.id)
