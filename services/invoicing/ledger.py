"""A seller's running totals, across all issuers, read from the issued invoices (blue and red).

- month-to-date, on the exemption basis: Σ total (价税合计) of the month's invoices — an exempt invoice's sales are
  its total, and this is the measure `tax.month_settlement` settles the month with, so an invoice is never issued
  exempt in a month that its own settlement would make taxable;
- calendar-year-to-date sales excl. VAT (income-tax tiers);
- the rolling cap: sales excl. VAT of the invoices whose *blue* invoice is dated inside the 12 natural months
  ending with the invoice's month (`cap_date`), so a red letter reduces the total only for a blue invoice inside
  the window.

Callers that add an invoice hold the seller's lock row (`lock_seller`) first, in the same transaction: concurrent
settlements of one seller are serialised (SELECT ... FOR UPDATE on PostgreSQL; SQLite's single writer does it
anyway) and the totals they read are the committed ones.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from .domain.tax import SellerPosition, rolling_cap_window
from .store import invoices, seller_locks

ISSUED = "issued"


def month_bounds(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def parse_period(period: str, field: str = "period") -> tuple[int, int]:
    from services.kernel.errors import ValidationFailed

    try:
        y, m = period.split("-")
        if len(y) != 4 or len(m) != 2:
            raise ValueError
        year, month = int(y), int(m)
        date(year, month, 1)
    except (ValueError, AttributeError):
        raise ValidationFailed.field(field, "a period is a month like 2026-11") from None
    return year, month


def insert_ignore(session: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on both databases."""
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(table).values(**values).on_conflict_do_nothing())


def lock_seller(session: Session, seller_id: str) -> None:
    """Take the seller's lock row until the transaction ends (created on first use)."""
    insert_ignore(session, seller_locks, {"seller_id": seller_id, "created_at": datetime.now(UTC)})
    session.execute(
        select(seller_locks.c.seller_id).where(seller_locks.c.seller_id == seller_id).with_for_update()
    ).one()


def seller_position(session: Session, seller_id: str, on: date, cap_months: int) -> SellerPosition:
    """The seller's totals before a new invoice dated `on` (every issued invoice, all issuers).

    `trailing_12m_sales_excl_fen` is the largest total of any `cap_months`-month window that contains `on`'s
    month — the window ending with it, and those ending after it. Invoices are normally issued in date order and
    the first is the only one with sales; but a pickup may be invoiced after a later-dated one (a slow consumer),
    and the cap must hold in every window the new invoice falls in, not only in the one ending with it."""
    c = invoices.c
    mine = and_(c.seller_id == seller_id, c.status == ISSUED)
    m_from, m_to = month_bounds(on.year, on.month)
    y_from, y_to = date(on.year, 1, 1), date(on.year, 12, 31)
    row = session.execute(
        select(
            func.coalesce(func.sum(case((c.invoice_date.between(m_from, m_to), c.total_fen), else_=0)), 0),
            func.coalesce(
                func.sum(case((c.invoice_date.between(y_from, y_to), c.sales_excl_fen), else_=0)), 0
            ),
        ).where(mine, c.invoice_date.between(y_from, y_to))
    ).one()
    mtd, ytd = (max(int(v), 0) for v in row)
    first, _ = rolling_cap_window(on, cap_months)
    _, last = rolling_cap_window(_add_months(on, cap_months - 1), 1)
    ym = _year_month(session, c.cap_date)
    by_month = dict(
        session.execute(
            select(ym, func.sum(c.sales_excl_fen)).where(mine, c.cap_date.between(first, last)).group_by(ym)
        ).all()
    )
    windows = []
    for end in range(cap_months):  # windows ending with on's month, and each of the following months
        end_day = _add_months(on, end)
        months = [_add_months(end_day, -k) for k in range(cap_months)]
        windows.append(sum(int(by_month.get(f"{d.year:04d}-{d.month:02d}", 0)) for d in months))
    return SellerPosition(mtd, ytd, max(max(windows), 0))


def _add_months(day: date, n: int) -> date:
    """The first day of the month `n` months after `day`'s month."""
    index = day.year * 12 + day.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class CapMonth:
    month: str  # YYYY-MM
    blue_sales_excl_fen: int
    red_sales_excl_fen: int  # ≤ 0: red letters of blue invoices of this month (whenever issued)

    @property
    def sales_excl_fen(self) -> int:
        return self.blue_sales_excl_fen + self.red_sales_excl_fen


def cap_ledger(session: Session, seller_id: str, on: date, months: int) -> tuple[date, date, list[CapMonth]]:
    """The rolling cap ledger: per natural month of the window ending with `on`'s month, the seller's blue sales
    excl. VAT and the red letters that offset them (all issuers)."""
    c = invoices.c
    w_from, w_to = rolling_cap_window(on, months)
    ym = _year_month(session, c.cap_date)
    rows = session.execute(
        select(
            ym,
            func.coalesce(func.sum(case((c.kind == "blue", c.sales_excl_fen), else_=0)), 0),
            func.coalesce(func.sum(case((c.kind == "red", c.sales_excl_fen), else_=0)), 0),
        )
        .where(c.seller_id == seller_id, c.status == ISSUED, c.cap_date.between(w_from, w_to))
        .group_by(ym)
    ).all()
    got = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    out = []
    y, m = w_from.year, w_from.month
    for _ in range(months):
        key = f"{y:04d}-{m:02d}"
        blue, red = got.get(key, (0, 0))
        out.append(CapMonth(key, blue, red))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return w_from, w_to, out


def _year_month(session: Session, column: Any) -> Any:
    if session.bind.dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    return func.strftime("%Y-%m", column)


def settle_status(basis_fen: int, threshold_fen: int | None) -> bool:
    """True when the month is taxable (tax.month_settlement's test)."""
    return threshold_fen is None or basis_fen > threshold_fen
