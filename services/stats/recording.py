"""The handlers that count settled pickups and trades into the facts and daily aggregates.

Each is idempotent on its own, on top of the consumer's inbox (a rebuild replays without an inbox): a pickup is
counted when its row is first inserted, a trade's delivery when its row first turns `settled`. The same code path
serves the live consumer groups and `recycle stats rebuild`, which is why both give the same figures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, TextClause, bindparam, text, update
from sqlalchemy.orm import Session

from services.contracts.booking import PickupSettled
from services.contracts.trading import TradeAwarded, TradeSettled
from services.kernel.db import UnitOfWork

from .domain.factors import FactorTable, LowValueLists
from .domain.flows import SettledLineIn, month_of, pickup_lines, trade_co2e_g, trade_mass_g
from .settings import StatsSettings
from .store import flow_days, flow_members, pickups, trades
from .store import pickup_lines as pickup_lines_t

_FLOW_KEY = ("day", "region_code", "category", "firm_id")
FLOW_SUMS = (
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


def _upsert(table: Table, conflict: list[str], action: str, returning: str | None = None) -> TextClause:
    """INSERT of every column of `table` with ON CONFLICT, as one textual statement (the same SQL on SQLite and
    PostgreSQL). Textual on purpose: SQLAlchemy gives dialect INSERT ... ON CONFLICT constructs no cache key, so
    built per call they are compiled again every time, which was most of a handler's time; typed bind
    parameters keep the columns' conversions (dates, times, booleans)."""
    cols = [c.name for c in table.c]
    sql = (
        f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        f"ON CONFLICT ({', '.join(conflict)}) {action}" + (f" RETURNING {returning}" if returning else "")
    )
    return text(sql).bindparams(*(bindparam(c.name, type_=c.type) for c in table.c))


@functools.cache
def _statements() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in (pickups, trades):
        pk = list(table.primary_key.columns)[0].name
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT DO NOTHING
        out[f"ignore_returning:{table.name}"] = _upsert(table, [pk], "DO NOTHING", returning=pk)
    out["members"] = _upsert(flow_members, [c.name for c in flow_members.primary_key.columns], "DO NOTHING")
    # every sum column is added (zero where the fact has none), so one statement serves pickups and trades
    out["add_to_flow"] = _upsert(
        flow_days,
        list(_FLOW_KEY),
        "DO UPDATE SET " + ", ".join(f"{c} = {flow_days.name}.{c} + excluded.{c}" for c in FLOW_SUMS),
    )
    out["line"] = pickup_lines_t.insert()
    return out


def _stmt(session: Session, name: str) -> Any:
    return _statements()[name]


def insert_ignore(session: Session, table: Table, row: dict[str, Any]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING of one row of `pickups` or `trades`; 1 if inserted, else 0."""
    row = dict.fromkeys((c.name for c in table.c), None) | row
    return len(session.execute(_stmt(session, f"ignore_returning:{table.name}"), row).all())


def add_to_flow(session: Session, rows: list[tuple[dict[str, Any], dict[str, int]]]) -> None:
    """Add each row's amounts to its day's aggregate row (created at zero on first use)."""
    params = [
        {**key, "month": month_of(key["day"]), **dict.fromkeys(FLOW_SUMS, 0), **amounts}
        for key, amounts in rows
    ]
    if params:
        session.execute(_stmt(session, "add_to_flow"), params)


def add_members(session: Session, rows: list[tuple[dict[str, Any], str, str]]) -> None:
    """Record who was counted where: (flow key, kind, member id); a member already there stays once."""
    params = [
        dict(key, month=month_of(key["day"]), kind=kind, member_id=member) for key, kind, member in rows
    ]
    if params:
        session.execute(_stmt(session, "members"), params)


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
        s.execute(
            _stmt(s, "line"),
            [
                dict(
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
                for ln in lines
            ],
        )
        keys = [
            dict(day=day, region_code=event.city_code, category=ln.category, firm_id=event.firm_id)
            for ln in lines
        ]
        add_to_flow(
            s,
            [
                (
                    key,
                    dict(
                        collected_g=ln.mass_g,
                        estimated_g=ln.mass_g if ln.mass_estimated else 0,
                        pieces_milli=int(ln.qty * 1000) if ln.unit == "piece" else 0,
                        value_fen=ln.value_fen,
                        low_value_g=ln.mass_g if ln.low_value else 0,
                        co2e_g=ln.co2e_g,
                    ),
                )
                for key, ln in zip(keys, lines, strict=True)
            ],
        )
        people = (
            ("resident", event.resident_id),
            ("collector", event.collector_id),
            ("pickup", event.pickup_id),
        )
        add_members(s, [(key, kind, member) for key in keys for kind, member in people])

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
        add_to_flow(
            s, [(key, dict(traded_g=mass, traded_value_fen=event.amount_fen, traded_co2e_g=co2e, trades=1))]
        )
        add_members(s, [(key, "trade", event.trade_id)])
