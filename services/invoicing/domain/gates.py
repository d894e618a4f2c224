"""Who may issue a reverse invoice (反向开票) to whom, as named rules over plain facts. Pure: the service loads the
facts (its copies of accounts' events, the unpaid-tax records) and the rules in force on the invoice date.

Each rule answers `None` (satisfied) or a `Refusal` with a machine-readable reason; the service keeps the invoice
as `blocked` with that reason (the pickup stays settled) and publishes InvoiceBlocked.

Reasons, in the order they are checked:
- `nothing_to_invoice`   no line of the pickup was bought from the seller (only free or paid-for disposal);
- `issuer_unverified`    the collector's firm is not a verified firm (FirmVerified not received);
- `issuer_not_qualified` no approved reverse-invoicing qualification of a kind in force;
- `qualification_expired` qualifications exist, but none is valid on the invoice date;
- `issuer_suspended`     a month's tax recorded as unpaid after its filing deadline (until marked paid);
- `seller_unverified`    the seller is not a real-name-verified natural person (IdentityVerified not received);
- `consent_missing`      the seller has not agreed to reverse invoicing and 代办 filing;
- `no_tax_rules_in_force` / `cap_exceeded` come from the tax computation (tax.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from .service_rules import ServiceRuleBook

SALE_TYPE_OWN_USED = "销售自己使用过的报废产品"  # a resident selling their own scrap
SALE_TYPE_RESOLD = "销售收购的报废产品"  # an individual collector reselling what they bought
SPECIAL_BUSINESS = "报废产品收购"  # 特定业务
ID_TYPE = "居民身份证"  # 证件类型 of the seller


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True)
class Qualification:
    kind: str
    number: str
    valid_until: date


@dataclass(frozen=True)
class IssuerFacts:
    """What the service knows about the firm that would issue the invoice (资源回收企业)."""

    firm_id: str
    verified: bool
    qualifications: tuple[Qualification, ...] = ()
    unpaid_periods: tuple[tuple[int, int], ...] = ()  # (year, month) recorded unpaid, not yet paid


@dataclass(frozen=True)
class SellerFacts:
    """What the service knows about the seller (出售者)."""

    seller_id: str
    verified: bool  # real-name verified natural person (居民身份证)
    consent_id: str | None = None


@dataclass(frozen=True)
class IssuerMayReverseInvoice:
    """The firm is verified, holds an approved qualification of a kind in force that is valid on the invoice date,
    and is not suspended for unpaid tax (a month recorded unpaid whose filing deadline has passed)."""

    book: ServiceRuleBook

    def check(self, issuer: IssuerFacts, on: date) -> Refusal | None:
        if not issuer.verified:
            return Refusal(
                "issuer_unverified",
                f"firm {issuer.firm_id} is not a verified recycling firm (资源回收企业) on the platform",
            )
        kinds = self.book.rules_for(on).qualification_kinds
        held = [q for q in issuer.qualifications if q.kind in kinds]
        if not held:
            return Refusal(
                "issuer_not_qualified",
                f"firm {issuer.firm_id} holds no approved reverse-invoicing qualification "
                f"(one of: {', '.join(sorted(kinds))})",
            )
        if not any(q.valid_until >= on for q in held):
            last = max(q.valid_until for q in held)
            return Refusal(
                "qualification_expired",
                f"firm {issuer.firm_id}'s qualification expired on {last.isoformat()} "
                f"(invoice date {on.isoformat()})",
            )
        overdue = sorted(p for p in issuer.unpaid_periods if self.book.suspended_from(*p) <= on)
        if overdue:
            y, m = overdue[0]
            deadline = self.book.deadline_for(y, m)
            return Refusal(
                "issuer_suspended",
                f"firm {issuer.firm_id} is suspended from reverse invoicing: the tax of {y:04d}-{m:02d} "
                f"is recorded as unpaid after its filing deadline {deadline.isoformat()}",
            )
        return None


@dataclass(frozen=True)
class SellerMayBeReverseInvoiced:
    """The seller is a real-name-verified natural person and has consented to reverse invoicing and 代办 filing."""

    def check(self, seller: SellerFacts) -> Refusal | None:
        if not seller.verified:
            return Refusal(
                "seller_unverified",
                f"seller {seller.seller_id} has not verified their identity (real name and 居民身份证号); "
                f"only verified natural persons can be reverse-invoiced",
            )
        if not seller.consent_id:
            return Refusal(
                "consent_missing",
                f"seller {seller.seller_id} has not consented to reverse invoicing and to the firm "
                f"filing tax on their behalf (POST /v1/me/consents kind=reverse_invoicing)",
            )
        return None


def first_refusal(checks: Iterable[Refusal | None]) -> Refusal | None:
    return next((r for r in checks if r is not None), None)
