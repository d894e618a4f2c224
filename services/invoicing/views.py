"""Read side: invoices as the API shows them, the cap ledger, the annual seller statement, issuer status."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from .domain.gates import ID_TYPE, SPECIAL_BUSINESS
from .domain.service_rules import ServiceRuleBook
from .ledger import cap_ledger, settle_status
from .store import attempts, evidence, invoice_lines, invoices, issuers, qualifications, tax_unpaid


def _lines_of(s: Session, ids: Sequence[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {i: [] for i in ids}
    for k in range(0, len(ids), 500):
        for r in s.execute(
            select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(ids[k : k + 500]))
            .order_by(invoice_lines.c.invoice_id, invoice_lines.c.line_no)
        ).all():
            out[r.invoice_id].append(r)
    return out


def _blocked_lines(s: Session, pickup_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    pickup_ids = list(pickup_ids)
    out: dict[str, list[dict[str, Any]]] = {}
    if not pickup_ids:
        return out
    for r in s.execute(
        select(evidence.c.pickup_id, evidence.c.payload).where(
            evidence.c.pickup_id.in_(pickup_ids), evidence.c.kind == "weighing"
        )
    ).all():
        out[r.pickup_id] = [ln for ln in json.loads(r.payload)["lines"] if ln["amount_fen"] > 0]
    return out


def _red_of(s: Session, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    return dict(
        s.execute(
            select(invoices.c.red_letter_of, invoices.c.id).where(invoices.c.red_letter_of.in_(list(ids)))
        ).all()
    )


def render(
    row: Any, lines: list[Any] | None, blocked_lines: list[dict[str, Any]] | None, red_letter_id: str | None
) -> dict[str, Any]:
    issued = row.status == "issued"
    if issued:
        out_lines = [
            {
                "category": ln.category,
                "category_name": ln.category_name,
                "tax_code": ln.tax_code,
                "qty": ln.qty,
                "unit": ln.unit,
                "unit_price_fen": ln.unit_price_fen,
                "amount_fen": ln.amount_fen,
                "sales_excl_fen": ln.sales_excl_fen,
                "vat_fen": ln.vat_fen,
                "iit_fen": ln.iit_fen,
                "blue_line_no": ln.blue_line_no,
            }
            for ln in (lines or [])
        ]
    else:
        out_lines = [
            {
                "category": ln["category"],
                "category_name": None,
                "tax_code": ln["tax_code"],
                "qty": ln["qty"],
                "unit": ln["unit"],
                "unit_price_fen": ln["unit_price_fen"],
                "amount_fen": ln["amount_fen"],
                "sales_excl_fen": None,
                "vat_fen": None,
                "iit_fen": None,
                "blue_line_no": None,
            }
            for ln in (blocked_lines or [])
        ]
    withheld = row.withheld_fen if issued else 0
    return {
        "id": row.id,
        "number": row.number,
        "issuer_firm_id": row.issuer_firm_id,
        "seller_id": row.seller_id,
        "pickup_id": row.pickup_id,
        "kind": row.kind,
        "status": row.status,
        "blocked_reason": row.blocked_reason,
        "blocked_detail": row.blocked_detail,
        "red_letter_of": row.red_letter_of,
        "red_letter_id": red_letter_id,
        "red_reason": row.red_reason,
        "issued_at": row.issued_at,
        "invoice_date": row.invoice_date,
        "lines": out_lines,
        "total_fen": row.total_fen,
        "sales_excl_fen": row.sales_excl_fen,
        "vat_rate": row.vat_rate,
        "exempt": row.exempt,
        "vat_fen": row.vat_fen,
        "surcharges": json.loads(row.surcharges_json) if row.surcharges_json else None,
        "surcharges_fen": row.surcharges_fen,
        "iit_fen": row.iit_fen,
        "withheld_fen": withheld,
        "net_fen": row.total_fen - (withheld or 0),
        "withholding": row.withholding,
        "three_flows": row.three_flows,
        "retried": bool(row.retried),
        "seller": {
            "name_masked": row.seller_name_masked,
            "id_number_masked": row.seller_id_number_masked,
            "id_type": ID_TYPE,
        },
        "buyer": None
        if not issued
        else {
            "firm_id": row.issuer_firm_id,
            "name": row.issuer_name,
            "uscc": row.issuer_uscc,
            "address": row.issuer_address,
            "city_code": row.issuer_city_code,
        },
        "special_business": SPECIAL_BUSINESS,
        "sale_type": row.sale_type,
    }


def render_many(s: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    issued_ids = [r.id for r in rows if r.status == "issued"]
    lines = _lines_of(s, issued_ids)
    blocked = _blocked_lines(s, {r.pickup_id for r in rows if r.status == "blocked"})
    reds = _red_of(s, [r.id for r in rows if r.kind == "blue" and r.status == "issued"])
    return [render(r, lines.get(r.id), blocked.get(r.pickup_id), reds.get(r.id)) for r in rows]


def invoice_detail(s: Session, row: Any) -> dict[str, Any]:
    out = render_many(s, [row])[0]
    ev = s.execute(
        select(evidence).where(evidence.c.pickup_id == row.pickup_id).order_by(evidence.c.id)
    ).all()
    out["evidence"] = [
        {
            "kind": e.kind,
            "ref_id": e.ref_id,
            "invoice_id": e.invoice_id,
            "recorded_at": e.recorded_at,
            "data": json.loads(e.payload),
        }
        for e in ev
    ]
    at = s.execute(select(attempts).where(attempts.c.invoice_id == row.id).order_by(attempts.c.id)).all()
    out["attempts"] = [
        {"at": a.at, "outcome": a.outcome, "reason": a.reason, "detail": a.detail, "by": a.by} for a in at
    ]
    return out


# ---------------------------------------------------------------------------------------------------- seller


def cap_ledger_view(s: Session, seller_id: str, on: date, cap_fen: int, months: int) -> dict[str, Any]:
    w_from, w_to, rows = cap_ledger(s, seller_id, on, months)
    total = sum(m.sales_excl_fen for m in rows)
    return {
        "seller_id": seller_id,
        "on": on,
        "cap_fen": cap_fen,
        "months": months,
        "window": {"from": w_from, "to": w_to},
        "total_sales_excl_fen": total,
        "remaining_fen": max(cap_fen - total, 0),
        "reached": total >= cap_fen,
        "ledger": [
            {
                "month": m.month,
                "blue_sales_excl_fen": m.blue_sales_excl_fen,
                "red_sales_excl_fen": m.red_sales_excl_fen,
                "sales_excl_fen": m.sales_excl_fen,
            }
            for m in rows
        ],
    }


def _month_status(s: Session, seller_id: str, year: int) -> dict[str, bool]:
    """{YYYY-MM: taxable} for the seller's months of `year`, across all issuers (tax.month_settlement)."""
    c = invoices.c
    rows = s.execute(
        select(c.invoice_date, c.total_fen, c.vat_threshold_fen, c.issued_at)
        .where(
            c.seller_id == seller_id,
            c.status == "issued",
            c.invoice_date.between(date(year, 1, 1), date(year, 12, 31)),
        )
        .order_by(c.invoice_date, c.issued_at)
    ).all()
    basis: dict[str, int] = {}
    threshold: dict[str, int | None] = {}
    for r in rows:
        ym = r.invoice_date.strftime("%Y-%m")
        basis[ym] = basis.get(ym, 0) + r.total_fen
        threshold[ym] = r.vat_threshold_fen  # the latest-dated invoice's threshold wins
    return {ym: settle_status(b, threshold[ym]) for ym, b in basis.items()}


def settled(row: Any, month_taxable: bool) -> tuple[bool, int, int, int]:
    """(exempt, sales_excl, VAT, surcharges) of an issued invoice after its month's settlement."""
    settles = row.kind == "blue" or (row.cap_date.year, row.cap_date.month) == (
        row.invoice_date.year,
        row.invoice_date.month,
    )
    if settles and bool(row.exempt) == month_taxable:
        return (not row.exempt, row.alt_sales_excl_fen, row.alt_vat_fen, row.alt_surcharges_fen)
    return (bool(row.exempt), row.sales_excl_fen, row.vat_fen, row.surcharges_fen)


def annual_statement(
    s: Session, seller_id: str, year: int, firm_ids: frozenset[str] | None
) -> dict[str, Any]:
    """The seller's year for 汇算清缴: every issued invoice (of `firm_ids` only, when given), settled by month."""
    status = _month_status(s, seller_id, year)
    c = invoices.c
    where = [
        c.seller_id == seller_id,
        c.status == "issued",
        c.invoice_date.between(date(year, 1, 1), date(year, 12, 31)),
    ]
    if firm_ids is not None:
        where.append(c.issuer_firm_id.in_(sorted(firm_ids)))
    rows = s.execute(select(invoices).where(and_(*where)).order_by(c.invoice_date, c.issued_at)).all()
    months: dict[str, dict[str, Any]] = {}
    by_issuer: dict[str, dict[str, Any]] = {}
    totals = dict(
        invoices_blue=0,
        invoices_red=0,
        total_fen=0,
        sales_excl_fen=0,
        vat_fen=0,
        vat_adjustment_fen=0,
        surcharges_fen=0,
        surcharges_adjustment_fen=0,
        iit_fen=0,
        withheld_fen=0,
    )
    seller = None
    for r in rows:
        ym = r.invoice_date.strftime("%Y-%m")
        exempt, excl, vat, sur = settled(r, status.get(ym, False))
        seller = seller or {
            "name_masked": r.seller_name_masked,
            "id_number_masked": r.seller_id_number_masked,
        }
        add = dict(
            total_fen=r.total_fen,
            sales_excl_fen=excl,
            vat_fen=vat,
            vat_adjustment_fen=vat - r.vat_fen,
            surcharges_fen=sur,
            surcharges_adjustment_fen=sur - r.surcharges_fen,
            iit_fen=r.iit_fen,
            withheld_fen=r.withheld_fen,
        )
        totals["invoices_blue" if r.kind == "blue" else "invoices_red"] += 1
        m = months.setdefault(
            ym, {"month": ym, "vat_status": "taxable" if status.get(ym) else "exempt", **{k: 0 for k in add}}
        )
        i = by_issuer.setdefault(
            r.issuer_firm_id,
            {
                "firm_id": r.issuer_firm_id,
                "name": r.issuer_name,
                "uscc": r.issuer_uscc,
                **{k: 0 for k in add},
            },
        )
        for k, v in add.items():
            totals[k] += v
            m[k] += v
            i[k] += v
    return {
        "seller_id": seller_id,
        "year": year,
        "seller": seller,
        "scope": "all_issuers" if firm_ids is None else "your_firms",
        "filing_due": date(year + 1, 3, 31),
        **totals,
        "tax_fen": totals["vat_fen"] + totals["surcharges_fen"] + totals["iit_fen"],
        "months": list(months.values()),
        "issuers": list(by_issuer.values()),
    }


# ---------------------------------------------------------------------------------------------------- issuer


def issuer_status(s: Session, firm_id: str, on: date, book: ServiceRuleBook) -> dict[str, Any]:
    row = s.execute(select(issuers).where(issuers.c.firm_id == firm_id)).one_or_none()
    quals = s.execute(
        select(qualifications)
        .where(qualifications.c.firm_id == firm_id)
        .order_by(qualifications.c.valid_until)
    ).all()
    unpaid = s.execute(
        select(tax_unpaid).where(tax_unpaid.c.firm_id == firm_id).order_by(tax_unpaid.c.period)
    ).all()
    kinds = book.rules_for(on).qualification_kinds
    periods = []
    suspended = False
    for u in unpaid:
        y, m = int(u.period[:4]), int(u.period[5:7])
        start = book.suspended_from(y, m)
        active = u.paid_at is None and start <= on
        suspended = suspended or active
        periods.append(
            {
                "period": u.period,
                "status": "paid" if u.paid_at else "unpaid",
                "amount_fen": u.amount_fen,
                "filing_deadline": book.deadline_for(y, m),
                "suspends_from": start,
                "suspending": active,
                "recorded_at": u.recorded_at,
                "recorded_by": u.recorded_by,
                "paid_at": u.paid_at,
                "paid_by": u.paid_by,
            }
        )
    return {
        "firm_id": firm_id,
        "on": on,
        "verified": row is not None,
        "issuer_code": row.issuer_code if row else None,
        "name": row.name if row else None,
        "city_code": row.city_code if row else None,
        "qualified": any(q.kind in kinds and q.valid_until >= on for q in quals),
        "qualifications": [
            {"id": q.qualification_id, "kind": q.kind, "number": q.number, "valid_until": q.valid_until}
            for q in quals
        ],
        "suspended": suspended,
        "tax_periods": periods,
    }
