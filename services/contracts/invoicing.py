"""Events the invoicing service publishes (topic `invoicing.invoice`, key = pickup id, so one saga's events
stay in order on one partition)."""

from __future__ import annotations

from datetime import date, datetime

from services.kernel.events import Event


class InvoiceIssued(Event):
    type = "cn.recycle.invoicing.invoice.issued.v1"
    topic = "invoicing.invoice"
    key_field = "pickup_id"
    source = "/invoicing"
    doc = "A reverse invoice (反向开票) was issued for a settled pickup; `withheld_fen` is what the payout keeps back."
    invoice_id: str
    number: str
    pickup_id: str
    issuer_firm_id: str
    seller_id: str
    kind: str  # blue | red
    total_fen: int
    vat_fen: int
    surcharges_fen: int
    iit_fen: int
    withheld_fen: int
    issued_at: datetime
    # added by invoicing (optional, so existing consumers stay valid):
    invoice_date: date | None = None  # 开票日期 (China time)
    red_letter_of: str | None = None  # kind=red: the blue invoice it offsets
    # True when a blocked invoice was issued later (POST /v1/invoices/{id}/retry): the saga was answered with
    # InvoiceBlocked and the seller paid gross, so `withheld_fen` was not withheld from that payout; it is the
    # tax the firm files for the seller all the same (reconcile with the seller).
    retried: bool = False


class InvoiceBlocked(Event):
    type = "cn.recycle.invoicing.invoice.blocked.v1"
    topic = "invoicing.invoice"
    key_field = "pickup_id"
    source = "/invoicing"
    doc = "No reverse invoice can be issued now (issuer not qualified, seller unverified, cap reached...); nothing withheld."
    invoice_id: str
    pickup_id: str
    issuer_firm_id: str
    seller_id: str
    reason: str
    detail: str
    blocked_at: datetime
