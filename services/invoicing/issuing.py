"""Issuing reverse invoices (反向开票): a settled pickup in, an issued or blocked invoice out; retries of blocked
invoices; red-letter (红字) corrections.

Every function here runs inside one unit of work: the invoice, its lines, its evidence, its number and its event
(InvoiceIssued / InvoiceBlocked, through the outbox) commit together or not at all.

Concurrency:
- the seller's lock row is taken before their totals are read (`ledger.lock_seller`), so concurrent settlements
  of one seller are serialised and the rolling cap is never exceeded;
- the next number of an issuer-year comes from `UPDATE counters SET value = value + 1 ... RETURNING value` in the
  issuing transaction: a rolled-back invoice rolls its number back too, so numbers are gap-free;
- one blue invoice per pickup: the consumer's inbox drops a redelivered event, and a unique index on
  (pickup_id) for blue invoices refuses a second one from a re-published copy (the retry then sees the first).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.contracts.booking import PickupSettled, SettledLine
from services.contracts.invoicing import InvoiceBlocked, InvoiceIssued
from services.kernel import idempotency
from services.kernel.db import UnitOfWork
from services.kernel.errors import Conflict, NotFound, RuleViolated
from services.kernel.ids import new_id
from services.kernel.runtime import ServiceRuntime

from .domain.gates import (
    SALE_TYPE_OWN_USED,
    IssuerFacts,
    IssuerMayReverseInvoice,
    Qualification,
    Refusal,
    SellerFacts,
    SellerMayBeReverseInvoiced,
)
from .domain.numbering import format_invoice_number
from .domain.tax import (
    CapExceeded,
    InvoiceLine,
    InvoiceTaxes,
    RedLetterLine,
    compute_invoice_taxes,
    month_settlement,
    red_letter,
)
from .domain.tax_config import NoTaxRulesInForce
from .ledger import insert_ignore, lock_seller, month_bounds, seller_position
from .records import amount_columns, event_amounts, line_rows, taxes_from_rows
from .settings import service_rule_book, settings_of, tax_rule_book
from .store import (
    attempts,
    consents,
    counters,
    evidence,
    invoice_lines,
    invoices,
    issuers,
    qualifications,
    sellers,
    tax_unpaid,
)

log = logging.getLogger(__name__)

CONSENT_KIND = "reverse_invoicing"


# ---------------------------------------------------------------------------------------------------- input


@dataclass(frozen=True)
class Sale:
    """What a settled pickup sold: the weighing record (称重记录) the invoice is built from."""

    data: PickupSettled

    @classmethod
    def from_settled(cls, payload: dict[str, Any]) -> Sale:
        """From the event's data as it travelled or as the weighing evidence keeps it (fields this version of the
        contract does not know are ignored)."""
        return cls(PickupSettled.decode(payload))

    @property
    def pickup_id(self) -> str:
        return self.data.pickup_id

    @property
    def seller_id(self) -> str:
        return self.data.resident_id

    @property
    def firm_id(self) -> str:
        return self.data.firm_id

    @property
    def sold_lines(self) -> list[SettledLine]:
        """Lines the firm bought (amount > 0). Free disposal (glass, batteries) and paid-for disposal (bulky
        items) are not sales of scrap by the seller and stay out of the invoice (they remain in the evidence)."""
        return [ln for ln in self.data.lines if ln.amount_fen > 0]

    @property
    def invoice_total_fen(self) -> int:
        return sum(ln.amount_fen for ln in self.sold_lines)

    def invoice_lines(self) -> list[InvoiceLine]:
        return [
            InvoiceLine(ln.category, ln.tax_code, ln.qty, ln.unit, ln.unit_price_fen, ln.amount_fen)
            for ln in self.sold_lines
        ]

    def payload(self) -> dict[str, Any]:
        return self.data.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------------- helpers


def record_evidence(
    session: Session,
    pickup_id: str,
    kind: str,
    ref_id: str,
    payload: dict[str, Any],
    at: datetime,
    invoice_id: str | None = None,
) -> None:
    """Append a piece of evidence (once per pickup, kind and reference; later copies are ignored)."""
    insert_ignore(
        session,
        evidence,
        {
            "pickup_id": pickup_id,
            "invoice_id": invoice_id,
            "kind": kind,
            "ref_id": ref_id[:100],
            "payload": json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str),
            "recorded_at": at,
        },
    )


def next_counter(session: Session, name: str) -> int:
    """The next value of a counter (1, 2, 3 ...), in the caller's transaction: the row stays locked until it
    commits, and a rollback gives the value back (no gaps)."""
    insert_ignore(session, counters, {"name": name, "value": 0})
    return int(
        session.execute(
            update(counters)
            .where(counters.c.name == name)
            .values(value=counters.c.value + 1)
            .returning(counters.c.value)
        ).scalar_one()
    )


def next_invoice_number(session: Session, firm_id: str, issuer_code: int, year: int) -> tuple[int, str]:
    seq = next_counter(session, f"invoice_seq/{firm_id}/{year}")
    return seq, format_invoice_number(year, issuer_code, seq)


def issuer_facts(session: Session, firm_id: str) -> tuple[IssuerFacts, Any]:
    row = session.execute(select(issuers).where(issuers.c.firm_id == firm_id)).one_or_none()
    quals = session.execute(select(qualifications).where(qualifications.c.firm_id == firm_id)).all()
    unpaid = (
        session.execute(
            select(tax_unpaid.c.period).where(tax_unpaid.c.firm_id == firm_id, tax_unpaid.c.paid_at.is_(None))
        )
        .scalars()
        .all()
    )
    facts = IssuerFacts(
        firm_id=firm_id,
        verified=row is not None,
        qualifications=tuple(Qualification(q.kind, q.number, q.valid_until) for q in quals),
        unpaid_periods=tuple((int(p[:4]), int(p[5:7])) for p in unpaid),
    )
    return facts, row


def seller_facts(session: Session, seller_id: str) -> tuple[SellerFacts, Any, Any]:
    row = session.execute(select(sellers).where(sellers.c.user_id == seller_id)).one_or_none()
    consent = session.execute(
        select(consents)
        .where(consents.c.user_id == seller_id, consents.c.kind == CONSENT_KIND)
        .order_by(consents.c.recorded_at)
        .limit(1)
    ).one_or_none()
    facts = SellerFacts(
        seller_id, verified=row is not None, consent_id=consent.consent_id if consent else None
    )
    return facts, row, consent


def _category_names() -> dict[str, str]:
    from services.kernel.taxonomy import categories

    return {code: c.name for code, c in categories().items()}


# ---------------------------------------------------------------------------------------------------- blue


@dataclass(frozen=True)
class Outcome:
    invoice_id: str
    status: str  # issued | blocked
    refusal: Refusal | None = None
    created: bool = True  # False: the pickup already had its invoice (a redelivery)


def when_pickup_settled_issue_invoice(event: PickupSettled, uow: UnitOfWork, *, rt: ServiceRuntime) -> None:
    """The consumer of booking's PickupSettled (group `invoicing.pickups`, consumers.py)."""
    settle_sale(rt, uow, Sale(event))


def settle_sale(rt: ServiceRuntime, uow: UnitOfWork, sale: Sale, now: datetime | None = None) -> Outcome:
    """Issue (or block) the one blue invoice of a settled pickup. A pickup that has it already changes nothing."""
    s = uow.session
    now = now or datetime.now(UTC)
    existing = s.execute(
        select(invoices.c.id, invoices.c.status).where(
            invoices.c.pickup_id == sale.pickup_id, invoices.c.kind == "blue"
        )
    ).one_or_none()
    if existing is not None:
        return Outcome(existing.id, existing.status, created=False)
    record_evidence(s, sale.pickup_id, "weighing", sale.pickup_id, sale.payload(), now)
    on = settings_of(rt).local_date(sale.data.settled_at)
    return _attempt(rt, uow, new_id("iv"), sale, on, now, by="event", retry=False)


def _gates(rt: ServiceRuntime, s: Session, sale: Sale, on: date) -> tuple[Refusal | None, dict[str, Any]]:
    facts: dict[str, Any] = {}
    if not sale.sold_lines:
        return Refusal(
            "nothing_to_invoice",
            f"pickup {sale.pickup_id} bought nothing from the seller (no line with an amount above 0)",
        ), facts
    issuer, facts["issuer"] = issuer_facts(s, sale.firm_id)
    book = service_rule_book(rt)
    refusal = IssuerMayReverseInvoice(book).check(issuer, on)
    if refusal:
        return refusal, facts
    kinds = book.rules_for(on).qualification_kinds
    facts["qualification"] = max(
        (q for q in issuer.qualifications if q.kind in kinds and q.valid_until >= on),
        key=lambda q: q.valid_until,
    )  # the one the invoice relies on (evidence)
    seller, facts["seller"], facts["consent"] = seller_facts(s, sale.seller_id)
    return SellerMayBeReverseInvoiced().check(seller), facts


def _attempt(
    rt: ServiceRuntime,
    uow: UnitOfWork,
    invoice_id: str,
    sale: Sale,
    on: date,
    now: datetime,
    *,
    by: str,
    retry: bool,
) -> Outcome:
    s = uow.session
    try:
        refusal, facts = _gates(rt, s, sale, on)
    except NoTaxRulesInForce as exc:  # a date outside the regime (the service rules start with it too)
        refusal, facts = Refusal("no_tax_rules_in_force", exc.detail), {}
    taxes: InvoiceTaxes | None = None
    if refusal is None:
        lock_seller(s, sale.seller_id)
        book = tax_rule_book(rt)
        try:
            rules = book.rules_for(on)
            srules = service_rule_book(rt).rules_for(on)
            position = seller_position(s, sale.seller_id, on, rules.rolling_cap.months)
            taxes = compute_invoice_taxes(
                on,
                sale.invoice_lines(),
                position,
                three_flows=settings_of(rt).pickups_three_flows,
                issuer_location_class=srules.location_classes.class_for(facts["issuer"].city_code),
                rule_book=book,
            )
        except CapExceeded as exc:
            refusal = Refusal("cap_exceeded", exc.detail)
        except NoTaxRulesInForce as exc:
            refusal = Refusal("no_tax_rules_in_force", exc.detail)
    s.execute(
        attempts.insert().values(
            invoice_id=invoice_id,
            at=now,
            outcome="blocked" if refusal else "issued",
            reason=refusal.reason if refusal else None,
            detail=refusal.detail if refusal else None,
            by=by,
        )
    )
    if refusal is not None:
        _block(uow, invoice_id, sale, on, now, refusal, retry=retry)
        return Outcome(invoice_id, "blocked", refusal)
    assert taxes is not None
    _issue(rt, uow, invoice_id, sale, on, now, taxes, facts, retry=retry)
    return Outcome(invoice_id, "issued")


def _block(
    uow: UnitOfWork, invoice_id: str, sale: Sale, on: date, now: datetime, refusal: Refusal, *, retry: bool
) -> None:
    s = uow.session
    if retry:  # still blocked: keep the latest reason (the saga was answered when it was first blocked)
        s.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id, invoices.c.status == "blocked")
            .values(blocked_reason=refusal.reason, blocked_detail=refusal.detail)
        )
        return
    seller = s.execute(select(sellers).where(sellers.c.user_id == sale.seller_id)).one_or_none()
    s.execute(
        invoices.insert().values(
            id=invoice_id,
            kind="blue",
            status="blocked",
            pickup_id=sale.pickup_id,
            issuer_firm_id=sale.firm_id,
            seller_id=sale.seller_id,
            collector_id=sale.data.collector_id,
            invoice_date=on,
            created_at=now,
            settled_at=sale.data.settled_at,
            weighed_at=sale.data.weighed_at,
            blocked_reason=refusal.reason,
            blocked_detail=refusal.detail,
            retried=False,
            total_fen=sale.invoice_total_fen,
            seller_name_masked=seller.name_masked if seller else None,
            seller_id_number_masked=seller.id_number_masked if seller else None,
        )
    )
    uow.emit(
        InvoiceBlocked(
            invoice_id=invoice_id,
            pickup_id=sale.pickup_id,
            issuer_firm_id=sale.firm_id,
            seller_id=sale.seller_id,
            reason=refusal.reason,
            detail=refusal.detail,
            blocked_at=now,
        )
    )
    log.info("invoice %s for pickup %s blocked: %s", invoice_id, sale.pickup_id, refusal.reason)


def _issue(
    rt: ServiceRuntime,
    uow: UnitOfWork,
    invoice_id: str,
    sale: Sale,
    on: date,
    now: datetime,
    taxes: InvoiceTaxes,
    facts: dict[str, Any],
    *,
    retry: bool,
) -> None:
    s = uow.session
    issuer, seller, consent = facts["issuer"], facts["seller"], facts["consent"]
    withholding = service_rule_book(rt).rules_for(on).withholding
    seq, number = next_invoice_number(s, sale.firm_id, issuer.issuer_code, on.year)
    values = dict(
        kind="blue",
        status="issued",
        pickup_id=sale.pickup_id,
        issuer_firm_id=sale.firm_id,
        seller_id=sale.seller_id,
        collector_id=sale.data.collector_id,
        number=number,
        issuer_code=issuer.issuer_code,
        year=on.year,
        seq=seq,
        invoice_date=on,
        cap_date=on,
        issued_at=now,
        settled_at=sale.data.settled_at,
        weighed_at=sale.data.weighed_at,
        blocked_reason=None,
        blocked_detail=None,
        retried=retry,
        **amount_columns(taxes, withholding=withholding),
        seller_name_enc=seller.real_name_enc,
        seller_id_number_enc=seller.id_number_enc,
        seller_name_masked=seller.name_masked,
        seller_id_number_masked=seller.id_number_masked,
        sale_type=SALE_TYPE_OWN_USED,
        consent_id=consent.consent_id,
        issuer_name=issuer.name,
        issuer_uscc=issuer.uscc,
        issuer_address=issuer.address,
        issuer_city_code=issuer.city_code,
    )
    if retry:
        res = s.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id, invoices.c.status == "blocked")
            .values(**values)
        )
        if res.rowcount != 1:
            raise Conflict(f"invoice {invoice_id} is no longer blocked", current_state="issued")
    else:
        s.execute(invoices.insert().values(id=invoice_id, created_at=now, **values))
    s.execute(invoice_lines.insert(), line_rows(invoice_id, taxes, names=_category_names()))
    record_evidence(
        s,
        sale.pickup_id,
        "consent",
        consent.consent_id,
        {
            "consent_id": consent.consent_id,
            "kind": consent.kind,
            "recorded_at": consent.recorded_at.isoformat(),
        },
        now,
        invoice_id,
    )
    q = facts.get("qualification")
    if q is not None:
        record_evidence(
            s,
            sale.pickup_id,
            "qualification",
            f"{q.kind}:{q.number}",
            {"kind": q.kind, "number": q.number, "valid_until": q.valid_until.isoformat()},
            now,
            invoice_id,
        )
    record_evidence(
        s,
        sale.pickup_id,
        "three_flows",
        sale.pickup_id,
        {
            "holds": taxes.applied.three_flows,
            "contract": "the platform's pickup order between the seller and the firm's collector",
            "goods": "the platform's weighing record of this pickup (evidence kind 'weighing')",
            "funds": "the payout of this pickup goes to the seller's own verified account (evidence kind 'payout_*')",
        },
        now,
        invoice_id,
    )
    uow.emit(
        InvoiceIssued(
            invoice_id=invoice_id,
            number=number,
            pickup_id=sale.pickup_id,
            issuer_firm_id=sale.firm_id,
            seller_id=sale.seller_id,
            kind="blue",
            **event_amounts(taxes, withholding=withholding),
            issued_at=now,
            invoice_date=on,
            retried=retry,
        )
    )


# ---------------------------------------------------------------------------------------------------- retry


def _invoice_for(s: Session, invoice_id: str, authorize: Any) -> Any:
    """The invoice's row (404 when there is none), once `authorize(row)` (when given) let the caller have it."""
    row = s.execute(select(invoices).where(invoices.c.id == invoice_id)).one_or_none()
    if row is None:
        raise NotFound(f"no invoice with id {invoice_id}")
    if authorize is not None:
        authorize(row)
    return row


def retry_blocked(
    rt: ServiceRuntime, invoice_id: str, by: str, *, authorize: Any = None, now: datetime | None = None
) -> Outcome:
    """Try again to issue a blocked invoice (its missing precondition has arrived: consent, qualification, tax
    paid ...). It is dated the day of the retry. Still refused ⇒ it stays blocked with the new reason, the attempt
    is kept, and RuleViolated (422) names the reason. The saga was answered when the invoice was first blocked
    (the seller was paid gross), so the issued invoice's event says `retried=true`."""
    now = now or datetime.now(UTC)
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        row = _invoice_for(s, invoice_id, authorize)
        if row.status != "blocked":
            raise Conflict(f"invoice {invoice_id} is {row.status}, not blocked", current_state=row.status)
        ev = s.execute(
            select(evidence.c.payload).where(
                evidence.c.pickup_id == row.pickup_id, evidence.c.kind == "weighing"
            )
        ).scalar_one()
        sale = Sale.from_settled(json.loads(ev))
        out = _attempt(rt, uow, invoice_id, sale, settings_of(rt).local_date(now), now, by=by, retry=True)
    if out.refusal is not None:
        raise still_blocked(invoice_id, out.refusal.reason, out.refusal.detail)
    return out


def still_blocked(invoice_id: str, reason: str, detail: str) -> RuleViolated:
    """A retry's refusal: the invoice stays blocked, for `reason` (its attempt is kept)."""
    return RuleViolated(detail, reason=reason, invoice_id=invoice_id, current_state="blocked")


# ---------------------------------------------------------------------------------------------------- red letter


def load_taxes(s: Session, row: Any) -> InvoiceTaxes:
    lines = s.execute(select(invoice_lines).where(invoice_lines.c.invoice_id == row.id)).all()
    return taxes_from_rows(row, lines)


def settled_invoice(s: Session, blue: Any) -> InvoiceTaxes:
    """The blue invoice as its (seller, month) settles now, across all issuers (tax.month_settlement)."""
    m_from, m_to = month_bounds(blue.invoice_date.year, blue.invoice_date.month)
    rows = s.execute(
        select(invoices)
        .where(
            invoices.c.seller_id == blue.seller_id,
            invoices.c.status == "issued",
            invoices.c.invoice_date.between(m_from, m_to),
        )
        .order_by(invoices.c.invoice_date, invoices.c.issued_at)
    ).all()
    ids = [r.id for r in rows]
    settled = month_settlement([load_taxes(s, r) for r in rows])
    return settled.invoices[ids.index(blue.id)].settled


def issue_red_letter(
    rt: ServiceRuntime,
    blue_id: str,
    *,
    reason: str,
    lines: list[RedLetterLine] | None,
    by: str,
    authorize: Any = None,
    now: datetime | None = None,
) -> str:
    """The red-letter invoice offsetting blue invoice `blue_id` (fully, or the given lines), dated today; its id.

    1:1: a blue invoice has at most one red letter (409 with the current state otherwise). A red letter is never
    blocked: it only reduces what the seller owes. It uses the blue invoice's rates and VAT status — as settled,
    when the blue invoice's month has ended (a month made taxable by the settlement gives its VAT back).
    It reduces the seller's month totals in its own month, and the rolling cap where the blue invoice counts.
    """
    now = now or datetime.now(UTC)
    on = settings_of(rt).local_date(now)
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        blue = _invoice_for(s, blue_id, authorize)
        if blue.kind != "blue":
            raise Conflict("a red-letter invoice cannot itself be offset", current_state="red")
        if blue.status != "issued":
            raise Conflict(
                f"invoice {blue_id} is {blue.status}: only an issued invoice can be offset",
                current_state=blue.status,
            )
        lock_seller(s, blue.seller_id)
        red_id = s.execute(select(invoices.c.id).where(invoices.c.red_letter_of == blue_id)).scalar()
        if red_id is not None:
            raise Conflict(
                f"invoice {blue_id} already has its red-letter invoice {red_id}",
                current_state="red_lettered",
                red_letter_id=red_id,
            )
        if (blue.invoice_date.year, blue.invoice_date.month) != (on.year, on.month):
            blue_taxes = settled_invoice(s, blue)
        else:
            blue_taxes = load_taxes(s, blue)
        red = red_letter(blue_taxes, on, lines)
        red_id = new_id("iv")
        idempotency.made(red_id)
        seq, number = next_invoice_number(s, blue.issuer_firm_id, blue.issuer_code, on.year)
        withholding = bool(blue.withholding)
        s.execute(
            invoices.insert().values(
                id=red_id,
                kind="red",
                status="issued",
                pickup_id=blue.pickup_id,
                issuer_firm_id=blue.issuer_firm_id,
                seller_id=blue.seller_id,
                collector_id=blue.collector_id,
                number=number,
                issuer_code=blue.issuer_code,
                year=on.year,
                seq=seq,
                invoice_date=on,
                cap_date=blue.invoice_date,
                issued_at=now,
                created_at=now,
                settled_at=blue.settled_at,
                weighed_at=blue.weighed_at,
                retried=False,
                red_letter_of=blue_id,
                red_reason=reason,
                **amount_columns(red, withholding=withholding),
                seller_name_enc=blue.seller_name_enc,
                seller_id_number_enc=blue.seller_id_number_enc,
                seller_name_masked=blue.seller_name_masked,
                seller_id_number_masked=blue.seller_id_number_masked,
                sale_type=blue.sale_type,
                consent_id=blue.consent_id,
                issuer_name=blue.issuer_name,
                issuer_uscc=blue.issuer_uscc,
                issuer_address=blue.issuer_address,
                issuer_city_code=blue.issuer_city_code,
            )
        )
        blue_line_nos = (
            [r.line_index for r in lines] if lines is not None else list(range(len(blue_taxes.lines)))
        )
        names = dict(
            s.execute(
                select(invoice_lines.c.category, invoice_lines.c.category_name).where(
                    invoice_lines.c.invoice_id == blue_id
                )
            ).all()
        )
        s.execute(invoice_lines.insert(), line_rows(red_id, red, names=names, blue_line_nos=blue_line_nos))
        s.execute(
            attempts.insert().values(
                invoice_id=red_id,
                at=now,
                outcome="issued",
                reason=None,
                detail=f"red letter of {blue.number}: {reason}",
                by=by,
            )
        )
        record_evidence(
            s,
            blue.pickup_id,
            "red_letter",
            red_id,
            {
                "red_letter_id": red_id,
                "red_letter_number": number,
                "blue_id": blue_id,
                "blue_number": blue.number,
                "reason": reason,
                "by": by,
                "full": lines is None,
                "lines": None
                if lines is None
                else [
                    {"line_index": r.line_index, "amount_fen": r.amount_fen, "qty": format(r.qty, "f")}
                    for r in lines
                ],
            },
            now,
            red_id,
        )
        uow.emit(
            InvoiceIssued(
                invoice_id=red_id,
                number=number,
                pickup_id=blue.pickup_id,
                issuer_firm_id=blue.issuer_firm_id,
                seller_id=blue.seller_id,
                kind="red",
                **event_amounts(red, withholding=withholding),
                issued_at=now,
                invoice_date=on,
                red_letter_of=blue_id,
            )
        )
    return red_id
