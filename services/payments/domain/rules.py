"""Payments' business rules, named. Pure: no I/O."""

from __future__ import annotations

import hashlib

DEFAULT_PAYOUT_THRESHOLD_FEN = 1000  # 10 yuan


def wallet_for(payee_kind: str) -> str:
    """Which wallet a payout to this kind of payee is credited to."""
    return {"resident": "resident", "person": "resident", "seller": "seller", "firm": "firm"}.get(
        payee_kind, ""
    )


def payout_waits_for_threshold(wallet: str, balance_fen: int, threshold_fen: int) -> bool:
    """Residents (居民) are paid small amounts into their wallet; the wallet goes out to them once it reaches the
    threshold (or when they withdraw). Sellers and firms are paid at once: their amounts are order-sized."""
    return wallet == "resident" and balance_fen < threshold_fen


def provider_idempotency_key(op: str, command_id: str) -> str:
    """The Idempotency-Key sent with every provider call, derived from our command id (and the operation, since
    one command may make more than one call). The same command retried sends the same key; the provider then
    answers with the first result instead of moving money twice. Stripe accepts up to 255 characters."""
    key = f"recycle:{op}:{command_id}"
    if len(key) <= 255:
        return key
    return f"recycle:{op}:sha256:{hashlib.sha256(command_id.encode()).hexdigest()}"


def hold_id_for(command_id: str) -> str:
    """A hold's id is derived from the authorising command, so a retried authorisation finds the same hold."""
    return "hold_" + hashlib.sha256(f"authorise:{command_id}".encode()).hexdigest()[:26]


def command_scoped_id(prefix: str, op: str, command_id: str) -> str:
    return f"{prefix}_" + hashlib.sha256(f"{op}:{command_id}".encode()).hexdigest()[:26]


def payout_outcome_event_id(payout_id: str, outcome: str) -> str:
    """The id of the event that reports a payout's outcome ("paid" or "failed", each at most once per payout):
    derived from the payout, so the outcome announced again (the payout requested again) is the same event to
    its consumers, whose inbox keeps the copy they may have handled from doing anything twice."""
    return "ev_" + hashlib.sha256(f"payout.{outcome}:{payout_id}".encode()).hexdigest()[:32]
