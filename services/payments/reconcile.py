"""Reconciliation (对账): compare our ledger with the provider's objects, and the ledger with itself.

Read-only apart from two catch-ups that are always safe: it first applies provider events not yet pulled (the
sandbox) and sends withdrawals left pending (their provider call is idempotent). Then, for every hold, refund and
withdrawal we know at the provider, it reads the provider's object and reports each difference:

- a hold whose status or captured amount differs (e.g. captured at the provider, still authorised with us);
- refunds: our total per hold against the provider's, and each refund's status;
- withdrawals: paid with us but reversed at the provider (or the other way round), amounts;
- the ledger itself: an unbalanced entry, a total that is not zero, a wallet / escrow / hold below zero.

Run it from a schedule (Celery beat) or by hand: `python -m services.payments.cli reconcile`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from .domain import ledger as L
from .ports import ProviderError
from .store import holds, refunds, withdrawals

if TYPE_CHECKING:
    from .handlers import Payments


@dataclass(frozen=True)
class Discrepancy:
    kind: str  # hold_status | captured_amount | refunded_amount | refund_status | withdrawal_status | provider_error
    object_id: str
    provider_ref: str | None
    ours: Any
    provider: Any
    detail: str = ""


@dataclass
class ReconciliationReport:
    provider: str
    checked: dict[str, int] = field(default_factory=dict)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)
    events_applied: int = 0
    withdrawals_sent: int = 0

    @property
    def ok(self) -> bool:
        return not self.discrepancies and not self.ledger_problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "ok": self.ok,
            "checked": self.checked,
            "discrepancies": [asdict(d) for d in self.discrepancies],
            "ledger_problems": self.ledger_problems,
            "events_applied": self.events_applied,
            "withdrawals_sent": self.withdrawals_sent,
        }


def reconcile(payments: Payments, *, catch_up: bool = True) -> ReconciliationReport:
    provider = payments.provider
    report = ReconciliationReport(provider=provider.name)
    if catch_up:
        report.events_applied = payments.pull_provider_events()
        report.withdrawals_sent = payments.send_pending_withdrawals()
    report.ledger_problems = payments.ledger_problems()
    out = report.discrepancies

    with payments.db.session(readonly=True) as s:
        hold_rows = s.execute(
            select(holds).where(
                holds.c.provider_ref.is_not(None), holds.c.status.in_(["authorised", "captured", "cancelled"])
            )
        ).all()
        refund_rows = s.execute(select(refunds).where(refunds.c.provider_ref.is_not(None))).all()
        refunded_by_hold = dict(
            s.execute(
                select(refunds.c.hold_id, func.sum(refunds.c.amount_fen))
                .where(refunds.c.status.in_(["succeeded", "pending"]))
                .group_by(refunds.c.hold_id)
            ).all()
        )
        wd_rows = s.execute(select(withdrawals).where(withdrawals.c.provider_ref.is_not(None))).all()
        stuck = s.execute(select(withdrawals.c.id).where(withdrawals.c.status == "pending")).all()

    for row in hold_rows:
        hold = payments.get_hold(row.id)
        if hold.captured_fen > hold.amount_fen:
            report.ledger_problems.append(
                f"hold {hold.id} captured {hold.captured_fen} > authorised {hold.amount_fen}"
            )
        if hold.refunded_fen > hold.captured_fen:
            report.ledger_problems.append(
                f"hold {hold.id} refunded {hold.refunded_fen} > captured {hold.captured_fen}"
            )
        try:
            snap = provider.retrieve_intent(row.provider_ref)
        except ProviderError as exc:
            out.append(Discrepancy("provider_error", row.id, row.provider_ref, row.status, None, exc.detail))
            continue
        if snap.status != hold.status:
            out.append(Discrepancy("hold_status", row.id, row.provider_ref, str(hold.status), snap.status))
        if hold.status == "captured" and snap.status == "captured" and snap.captured_fen != hold.captured_fen:
            out.append(
                Discrepancy("captured_amount", row.id, row.provider_ref, hold.captured_fen, snap.captured_fen)
            )
        ours_refunded = int(refunded_by_hold.get(row.id, 0) or 0)
        if snap.refunded_fen is not None and snap.refunded_fen != ours_refunded:
            out.append(
                Discrepancy("refunded_amount", row.id, row.provider_ref, ours_refunded, snap.refunded_fen)
            )
    report.checked["holds"] = len(hold_rows)

    for row in refund_rows:
        try:
            theirs = provider.retrieve_refund(row.provider_ref)
        except ProviderError as exc:
            out.append(Discrepancy("provider_error", row.id, row.provider_ref, row.status, None, exc.detail))
            continue
        if theirs.status != row.status or theirs.amount_fen != row.amount_fen:
            out.append(
                Discrepancy(
                    "refund_status",
                    row.id,
                    row.provider_ref,
                    f"{row.status} {row.amount_fen}",
                    f"{theirs.status} {theirs.amount_fen}",
                )
            )
    report.checked["refunds"] = len(refund_rows)

    for row in wd_rows:
        try:
            tr = provider.retrieve_transfer(row.provider_ref)
        except ProviderError as exc:
            out.append(Discrepancy("provider_error", row.id, row.provider_ref, row.status, None, exc.detail))
            continue
        expected = "reversed" if row.status == "returned" else "paid"
        if tr.status != expected or tr.amount_fen != row.amount_fen:
            out.append(
                Discrepancy(
                    "withdrawal_status",
                    row.id,
                    row.provider_ref,
                    f"{row.status} {row.amount_fen}",
                    f"{tr.status} {tr.amount_fen}",
                )
            )
    report.checked["withdrawals"] = len(wd_rows)

    for (wd_id,) in stuck:
        out.append(
            Discrepancy(
                "withdrawal_pending",
                wd_id,
                None,
                "pending",
                None,
                "still pending after a send attempt: the provider is unreachable or refuses it",
            )
        )
    report.checked["accounts"] = len(payments.trial_balance())
    return report


def trial_balance_rows(payments: Payments) -> list[tuple[str, int]]:
    """(account, normal balance) for every account, sorted."""
    return [(a, L.normal_balance(a, v)) for a, v in sorted(payments.trial_balance().items())]
