"""The handlers that count settled pickups and trades into the facts and daily aggregates.

Each is idempotent on its own, on top of the consumer's inbox (a rebuild replays without an inbox): a pickup is
counted when its row is first inserted, a trade's delivery when its row first turns `settled`. The same code path
serves the live consumer groups and `recycle stats rebuild`, which is why both give the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from services.booking.domain.events import PickupSettled
from services.contracts.trading import TradeAwarded, TradeSettled
from services.kernel.db import UnitOfWork

from .domain.factors import FactorTable, LowValueLists
from .domain.flows import SettledLineIn, month_of, pickup_lines, trade_co2e_g, trade_mass_g
from .settings import StatsSettings
from .store import flow_days, flow_members, pickups, trades
from .store import pickup_lines as pickup_lines_t

_FLOW_KEY = ("day", "region_code", "category", "firm_id")


def _insert(session: Session, table: Table) -> Any:
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def insert_ignore(session: Session, table: Table, rows: list[dict[str, Any]] | dict[str, Any]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING; the number of rows inserted."""
    rows = rows if isinstance(rows, list) else [rows]
    n = 0
    pk = list(table.primary_key.columns)[0]
    for row in rows:
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT DO NOTHING
        n += len(
            session.execute(
                _insert(session, table).values(**row).on_conflict_do_nothing().returning(pk)
            ).all()
        )
    return n


def add_to_flow(session: Session, key: dict[str, Any], **amounts: int) -> None:
    """Add `amounts` to the day's aggregate row (created at zero on first use)."""
    zeros = {
        c: 0
        for c in (
            "collected_g",
            "estimated_g",
            "pieces_milli",
            "value_fen",
            "low_value_g",
            "co2e_g",
            "traded_g",
            "traded_value_fen",
            "traded_co2e_g",
            "trades",
        )
    }
    stmt = _insert(session, flow_days).values(**key, month=month_of(key["day"]), **(zeros | amounts))
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_FLOW_KEY),
        set_={c: getattr(flow_days.c, c) + getattr(stmt.excluded, c) for c in amounts},
    )
    session.execute(stmt)


def add_members(session: Session, key: dict[str, Any], members: list[tuple[str, str]]) -> None:
    insert_ignore(
        session,
        flow_members,
        [dict(key, month=month_of(key["day"]), kind=k, member_id=m) for k, m in members],
    )


@dataclass
class FlowRecorder:
    settings: StatsSettings
    factors: FactorTable
    low_value: LowValueLists

    def when_pickup_settled_count_flow(self, event: PickupSettled, uow: UnitOfWork) -> None:
        """回收量: the settled lines by category into the day of the pickup's region and collecting firm."""
        s = uow.session
        day = self.settings.local_date(event.settled_at)
        lines = pickup_lines(
            [SettledLineIn(ln.category, ln.unit, ln.qty, ln.amount_fen) for ln in event.lines],
            event.city_code,
            self.factors,
            self.low_value,
        )
        inserted = insert_ignore(
            s,
            pickups,
            dict(
                pickup_id=event.pickup_id,
                resident_id=event.resident_id,
                collector_id=event.collector_id,
                firm_id=event.firm_id,
                region_code=event.city_code,
                day=day,
                month=month_of(day),
                settled_at=event.settled_at,
                mass_g=sum(ln.mass_g for ln in lines),
                value_fen=sum(ln.value_fen for ln in lines),
                co2e_g=sum(ln.co2e_g for ln in lines),
                factors_version=self.factors.version,
                recorded_at=datetime.now(UTC),
            ),
        )
        if not inserted:
            return  # counted before
        for ln in lines:
            s.execute(
                pickup_lines_t.insert().values(
                    pickup_id=event.pickup_id,
                    category=ln.category,
                    unit=ln.unit,
                    qty_milli=int(ln.qty * 1000),
                    mass_g=ln.mass_g,
                    mass_estimated=ln.mass_estimated,
                    value_fen=ln.value_fen,
                    co2e_g=ln.co2e_g,
                    low_value=ln.low_value,
                    factor_status=ln.factor_status,
                )
            )
            key = dict(day=day, region_code=event.city_code, category=ln.category, firm_id=event.firm_id)
            add_to_flow(
                s,
                key,
                collected_g=ln.mass_g,
                estimated_g=ln.mass_g if ln.mass_estimated else 0,
                pieces_milli=int(ln.qty * 1000) if ln.unit == "piece" else 0,
                value_fen=ln.value_fen,
                low_value_g=ln.mass_g if ln.low_value else 0,
                co2e_g=ln.co2e_g,
            )
            add_members(
                s,
                key,
                [
                    ("resident", event.resident_id),
                    ("collector", event.collector_id),
                    ("pickup", event.pickup_id),
                ],
            )

    def when_trade_awarded_keep_trade(self, event: TradeAwarded, uow: UnitOfWork) -> None:
        """An awarded trade is not a flow yet (nothing has moved): kept so its settlement has the lot's facts."""
        insert_ignore(
            uow.session,
            trades,
            dict(
                trade_id=event.trade_id,
                lot_id=event.lot_id,
                seller_firm_id=event.seller_firm_id,
                buyer_firm_id=event.buyer_firm_id,
                category=event.category,
                grade=event.grade,
                region_code=event.city_code,
                related_party=event.related_party,
                status="awarded",
                awarded_g=trade_mass_g(event.qty_t),
                price_fen_per_t=event.price_fen_per_t,
                awarded_at=event.awarded_at,
            ),
        )

    def when_trade_settled_count_onward_flow(self, event: TradeSettled, uow: UnitOfWork) -> None:
        """The delivered tonnes leave the seller for the buyer: the onward flow (traded_t) of the seller's region."""
        s = uow.session
        day = self.settings.local_date(event.settled_at)
        mass = trade_mass_g(event.delivered_t)
        co2e = trade_co2e_g(event.category, mass, self.factors)
        settled = dict(
            status="settled",
            delivered_g=mass,
            amount_fen=event.amount_fen,
            co2e_g=co2e,
            price_fen_per_t=event.price_fen_per_t,
            settled_at=event.settled_at,
            day=day,
            month=month_of(day),
            factors_version=self.factors.version,
        )
        moved = len(
            s.execute(
                update(trades)
                .where(trades.c.trade_id == event.trade_id, trades.c.status != "settled")
                .values(**settled)
                .returning(trades.c.trade_id)
            ).all()
        )
        if not moved:
            moved = insert_ignore(
                s,
                trades,
                dict(
                    trade_id=event.trade_id,
                    lot_id=event.lot_id,
                    seller_firm_id=event.seller_firm_id,
                    buyer_firm_id=event.buyer_firm_id,
                    category=event.category,
                    grade=event.grade,
                    region_code=event.city_code,
                    related_party=event.related_party,
                    **settled,
                ),
            )
        if not moved:
            return  # counted before
        key = dict(
            day=day, region_code=event.city_code, category=event.category, firm_id=event.seller_firm_id
        )
        add_to_flow(s, key, traded_g=mass, traded_value_fen=event.amount_fen, traded_co2e_g=co2e, trades=1)
        add_members(s, key, [("trade", event.trade_id)])
