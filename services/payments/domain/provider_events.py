"""What the provider tells us asynchronously (webhooks), and the state we derive from it. Pure: no I/O.

Provider events arrive at least once, in any order, sometimes days apart. We keep every event per provider
object and derive the object's state from the whole history, never from the last event received:

- each event is normalised to a status of its object (a PaymentIntent, a refund, a transfer);
- statuses of one object kind are ranked so that a later fact wins whatever the arrival order: a refund that
  *failed* after it had *succeeded* stays failed even if the "succeeded" event is delivered last; a transfer
  that was *reversed* stays reversed; a cancelled PaymentIntent stays cancelled.

The sandbox provider emits events in Stripe's shape, so one normaliser serves both adapters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PAYMENT_INTENT = "payment_intent"
REFUND = "refund"
TRANSFER = "transfer"
OTHER = "other"

# rank of each derived status per object kind: the highest rank seen is the object's state
_RANKS: dict[str, dict[str, int]] = {
    PAYMENT_INTENT: {"declined": 0, "authorised": 1, "captured": 2, "cancelled": 3},
    REFUND: {"pending": 0, "succeeded": 1, "failed": 2},
    TRANSFER: {"paid": 1, "reversed": 2},
}


@dataclass(frozen=True)
class ProviderEvent:
    id: str
    type: str
    object_kind: str
    object_ref: str
    created: int  # provider time, epoch seconds
    status: str | None  # normalised status of the object, None when the event does not change it
    amount_fen: int | None = None
    parent_ref: str | None = None  # a refund's PaymentIntent
    failure_reason: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DerivedState:
    status: str
    amount_fen: int | None
    failure_reason: str | None


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get("id")
    return str(value)


def normalise(event: Mapping[str, Any]) -> ProviderEvent:
    """A Stripe-shaped event (`{id, type, created, data: {object}}`) as a ProviderEvent."""
    etype = str(event.get("type", ""))
    obj = (event.get("data") or {}).get("object") or {}
    kind = obj.get("object", "")
    common = dict(
        id=str(event["id"]),
        type=etype,
        created=int(event.get("created") or 0),
        object_ref=str(obj.get("id", "")),
        payload=event,
    )
    if kind == "payment_intent":
        status = {
            "payment_intent.amount_capturable_updated": "authorised",
            "payment_intent.succeeded": "captured",
            "payment_intent.canceled": "cancelled",
            "payment_intent.payment_failed": "declined",
        }.get(etype)
        amount = None
        if status == "authorised":
            amount = obj.get("amount_capturable") or obj.get("amount")
        elif status == "captured":
            amount = obj.get("amount_received") or obj.get("amount")
        failure = None
        if status == "cancelled":
            failure = obj.get("cancellation_reason") or "canceled"
        elif status == "declined":
            failure = ((obj.get("last_payment_error") or {}).get("code")) or "declined"
        return ProviderEvent(
            object_kind=PAYMENT_INTENT, status=status, amount_fen=amount, failure_reason=failure, **common
        )
    if kind == "refund":
        raw = obj.get("status")
        status = {
            "succeeded": "succeeded",
            "pending": "pending",
            "requires_action": "pending",
            "failed": "failed",
            "canceled": "failed",
        }.get(raw or "")
        return ProviderEvent(
            object_kind=REFUND,
            status=status,
            amount_fen=obj.get("amount"),
            parent_ref=_ref(obj.get("payment_intent")),
            failure_reason=obj.get("failure_reason") or (raw if status == "failed" else None),
            **common,
        )
    if kind == "transfer":
        reversed_fen = int(obj.get("amount_reversed") or 0)
        if etype == "transfer.reversed" or reversed_fen > 0 or obj.get("reversed"):
            return ProviderEvent(
                object_kind=TRANSFER,
                status="reversed",
                amount_fen=reversed_fen or obj.get("amount"),
                failure_reason=(obj.get("metadata") or {}).get("reversal_reason") or "reversed",
                **common,
            )
        status = "paid" if etype in ("transfer.created", "transfer.updated", "transfer.paid") else None
        return ProviderEvent(object_kind=TRANSFER, status=status, amount_fen=obj.get("amount"), **common)
    return ProviderEvent(object_kind=OTHER, status=None, **common)


def derive_state(object_kind: str, events: Iterable[ProviderEvent]) -> DerivedState | None:
    """The state of one provider object from all its events, whatever order they arrived in."""
    ranks = _RANKS.get(object_kind)
    if ranks is None:
        return None
    best: ProviderEvent | None = None
    amount: int | None = None
    for ev in sorted(events, key=lambda e: (e.created, e.id)):
        if ev.status is None or ev.status not in ranks:
            continue
        if best is None or ranks[ev.status] > ranks[best.status]:  # type: ignore[index]
            best, amount = ev, ev.amount_fen
        elif ranks[ev.status] == ranks[best.status] and ev.amount_fen is not None:  # type: ignore[index]
            amount = max(amount or 0, ev.amount_fen)
    if best is None:
        return None
    return DerivedState(best.status, amount, best.failure_reason)  # type: ignore[arg-type]
