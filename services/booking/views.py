"""What a pickup looks like in replies, depending on who asks.

The address (personal data, stored encrypted) is shown to the resident who booked, the collector who accepted and
admins; everyone else sees the district only. Times are shown in the service's time zone (+08:00).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.kernel import pii
from services.kernel.auth import Principal

from .domain import model as m
from .settings import settings_of

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime


def ts(t: datetime | None, tz: Any) -> str | None:
    if t is None:
        return None
    return t.astimezone(tz).isoformat()


def may_see_address(row: Any, p: Principal) -> bool:
    return (
        row.resident_id == p.user_id
        or "admin" in p.roles
        or (row.collector_user_id is not None and row.collector_user_id == p.user_id)
    )


def pickup_view(
    rt: ServiceRuntime, row: Any, lines: list[Any], principal: Principal, address_text: str | None = None
) -> dict:
    """`address_text`: the plain address when the caller has it (a booking just made), saving a decryption."""
    tz = settings_of(rt).tz
    private = may_see_address(row, principal)
    est = [ln for ln in lines if ln.est_qty is not None]
    view: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "resident_id": row.resident_id,
        "city_code": row.city_code,
        "district": row.district,
        "address": {
            "text": address_text if address_text is not None else pii.decrypt(rt.settings, row.address_enc),
            "city_code": row.city_code,
            "lat": row.lat,
            "lng": row.lng,
        }
        if private
        else None,
        "window": {"start": ts(row.window_start, tz), "end": ts(row.window_end, tz)},
        "notes": row.notes if private else None,
        "items": [{"category": ln.category, "est_qty": ln.est_qty, "unit": ln.unit} for ln in est],
        "quote": {
            "lines": [
                {
                    "category": ln.category,
                    "est_qty": ln.est_qty,
                    "unit": ln.unit,
                    "unit_price_fen": ln.est_unit_price_fen,
                    "amount_fen": ln.est_amount_fen,
                    "price_region": ln.est_price_region,
                }
                for ln in est
            ],
            "total_fen": row.quote_total_fen,
            "estimate": True,
        },
        "collector_id": row.collector_id,
        "firm_id": row.firm_id,
        "accepted_at": ts(row.accepted_at, tz),
        "arrived_at": ts(row.arrived_at, tz),
        "created_at": ts(row.created_at, tz),
        "updated_at": ts(row.updated_at, tz),
        "version": row.version,
    }
    if row.weighed_total_fen is not None:
        weighed = [ln for ln in lines if ln.qty is not None]
        view |= {
            "lines": [
                {
                    "category": ln.category,
                    "unit": ln.unit,
                    "qty": ln.qty,
                    "unit_price_fen": ln.unit_price_fen,
                    "amount_fen": ln.amount_fen,
                    "price_region": ln.price_region,
                    "price_as_of": ln.price_as_of.isoformat() if ln.price_as_of else None,
                    "est_qty": ln.est_qty,
                    "est_amount_fen": ln.est_amount_fen,
                }
                for ln in weighed
            ],
            "total_fen": row.weighed_total_fen,
            "difference_fen": row.weighed_total_fen - row.quote_total_fen,
            "weigh_reason": row.weigh_reason,
            "scale_reading": row.scale_reading,
            "weighed_at": ts(row.weighed_at, tz),
        }
    if row.disputed_at is not None:
        view["dispute"] = {"reason": row.dispute_reason, "at": ts(row.disputed_at, tz)}
    if row.settled_at is not None:
        gross = row.weighed_total_fen or 0
        view |= {
            "settled_at": ts(row.settled_at, tz),
            "gross_fen": gross,
            "withheld_fen": row.withheld_fen,
            "net_fen": max(gross - row.withheld_fen, 0) if row.withheld_fen is not None else None,
            "invoice": {"status": row.invoice_status, "id": row.invoice_id},
            "payout": {
                "id": row.payout_id,
                "amount_fen": row.payout_amount_fen,
                "status": row.payout_status,
                "attempts": row.payout_attempts,
                "reason": row.payout_reason,
            },
        }
        if row.reconcile_fen is not None:
            view["reconcile_fen"] = row.reconcile_fen
    if row.status in (m.CANCELLED, m.EXPIRED, m.NO_SHOW):
        view["closed"] = {
            "at": ts(row.closed_at, tz),
            "by": row.closed_by,
            "reason": row.close_reason,
            "no_show_party": row.no_show_party,
        }
    return view


def rating_view(rt: ServiceRuntime, r: Any) -> dict:
    return {
        "pickup_id": r["pickup_id"],
        "rater_role": r["rater_role"],
        "ratee_user_id": r["ratee_user_id"],
        "score": r["score"],
        "comment": r["comment"],
        "created_at": ts(r["created_at"], settings_of(rt).tz),
    }


def complaint_view(rt: ServiceRuntime, c: Any) -> dict:
    ev = c["evidence"]
    return {
        "id": c["id"],
        "pickup_id": c["pickup_id"],
        "status": c["status"],
        "by_role": c["by_role"],
        "kind": c["kind"],
        "text": c["text"],
        "evidence": json.loads(ev) if isinstance(ev, str) else ev,
        "created_at": ts(c["created_at"], settings_of(rt).tz),
    }
