"""Which events invoicing listens to, and the handlers that keep its own copies of other services' facts.

Groups (each its own offsets, so a slow one never holds up another):
- `invoicing.accounts`  accounts.user, accounts.firm: sellers (IdentityVerified), consents (ConsentRecorded),
                        issuers (FirmVerified), qualifications (QualificationApproved), accountants (AccountantAdded);
- `invoicing.pickups`   booking.pickup: PickupSettled → the reverse invoice (issuing.py);
- `invoicing.payouts`   payments.payout: PayoutRequested / PayoutPaid of a pickup → the payout evidence.

Every handler is idempotent on its own (upserts keyed by the fact's id), on top of the consumer's inbox.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select, update

from services.contracts.accounts import (
    AccountantAdded,
    ConsentRecorded,
    FirmVerified,
    IdentityVerified,
    QualificationApproved,
)
from services.contracts.booking import PickupSettled
from services.contracts.payments import PayoutPaid, PayoutRequested
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.runtime import ServiceRuntime

from .domain.numbering import MAX_ISSUER_CODE
from .issuing import CONSENT_KIND, next_counter, record_evidence, when_pickup_settled_issue_invoice
from .ledger import insert_ignore
from .store import accountants, consents, evidence, invoices, issuers, qualifications, sellers


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        group(
            "invoicing.accounts",
            {
                IdentityVerified: when_identity_verified_keep_seller,
                ConsentRecorded: when_consent_recorded_keep_consent,
                FirmVerified: when_firm_verified_keep_issuer,
                QualificationApproved: when_qualification_approved_keep_it,
                AccountantAdded: when_accountant_added_keep_it,
            },
        ),
        group("invoicing.pickups", {PickupSettled: partial(when_pickup_settled_issue_invoice, rt=rt)}),
        group(
            "invoicing.payouts",
            {
                PayoutRequested: when_payout_requested_keep_evidence,
                PayoutPaid: when_payout_paid_keep_evidence,
            },
        ),
    ]


def when_identity_verified_keep_seller(event: IdentityVerified, uow: UnitOfWork) -> None:
    """The seller's real name and 身份证号, as ciphertexts (never decrypted here) and masks."""
    s, now = uow.session, datetime.now(UTC)
    values = dict(
        real_name_enc=event.real_name_enc,
        id_number_enc=event.id_number_enc,
        name_masked=event.name_masked,
        id_number_masked=event.id_number_masked,
        verified_at=event.verified_at,
        updated_at=now,
    )
    res = s.execute(update(sellers).where(sellers.c.user_id == event.user_id).values(**values))
    if res.rowcount == 0:
        s.execute(sellers.insert().values(user_id=event.user_id, **values))


def when_consent_recorded_keep_consent(event: ConsentRecorded, uow: UnitOfWork) -> None:
    if event.kind != CONSENT_KIND:
        return
    insert_ignore(
        uow.session,
        consents,
        {
            "consent_id": event.consent_id,
            "user_id": event.user_id,
            "kind": event.kind,
            "recorded_at": event.recorded_at,
        },
    )


def when_firm_verified_keep_issuer(event: FirmVerified, uow: UnitOfWork) -> None:
    """A verified firm may issue (with a qualification): it gets its 8-digit issuer code now, once."""
    s, now = uow.session, datetime.now(UTC)
    values = dict(
        owner_user_id=event.owner_user_id,
        name=event.name,
        uscc=event.uscc,
        address=event.address,
        city_code=event.city_code,
        verified_at=event.verified_at,
        updated_at=now,
    )
    res = s.execute(update(issuers).where(issuers.c.firm_id == event.firm_id).values(**values))
    if res.rowcount == 0:
        code = next_counter(s, "issuer_code")
        if code > MAX_ISSUER_CODE:
            raise RuntimeError("8-digit issuer codes exhausted")
        s.execute(issuers.insert().values(firm_id=event.firm_id, issuer_code=code, **values))


def when_qualification_approved_keep_it(event: QualificationApproved, uow: UnitOfWork) -> None:
    s = uow.session
    values = dict(
        firm_id=event.firm_id,
        kind=event.kind,
        number=event.number,
        valid_until=event.valid_until,
        approved_at=event.approved_at,
    )
    res = s.execute(
        update(qualifications)
        .where(qualifications.c.qualification_id == event.qualification_id)
        .values(**values)
    )
    if res.rowcount == 0:
        s.execute(qualifications.insert().values(qualification_id=event.qualification_id, **values))


def when_accountant_added_keep_it(event: AccountantAdded, uow: UnitOfWork) -> None:
    insert_ignore(
        uow.session,
        accountants,
        {"firm_id": event.firm_id, "user_id": event.user_id, "added_at": event.added_at},
    )


def when_payout_requested_keep_evidence(event: PayoutRequested, uow: UnitOfWork) -> None:
    """The payout booking asked for a pickup: who is paid (三流合一: the seller themselves) and how much."""
    if event.purpose != "pickup":
        return
    s = uow.session
    seller = s.execute(
        select(invoices.c.seller_id).where(
            invoices.c.pickup_id == event.reference_id, invoices.c.kind == "blue"
        )
    ).scalar()
    d = event.model_dump(mode="json")  # the evidence keeps the fields as they travelled
    record_evidence(
        s,
        event.reference_id,
        "payout_requested",
        event.payout_id,
        {
            "payout_id": d["payout_id"],
            "payee_user_id": d["payee_user_id"],
            "amount_fen": d["amount_fen"],
            "requested_at": d["requested_at"],
            "payee_is_seller": None if seller is None else event.payee_user_id == seller,
        },
        datetime.now(UTC),
    )


def when_payout_paid_keep_evidence(event: PayoutPaid, uow: UnitOfWork) -> None:
    """The payout record of a pickup (only payouts this service saw requested for a pickup)."""
    s = uow.session
    known = s.execute(
        select(evidence.c.pickup_id).where(
            evidence.c.kind == "payout_requested", evidence.c.ref_id == event.payout_id
        )
    ).scalar()
    if known is None:
        return
    d = event.model_dump(mode="json")
    record_evidence(
        s,
        known,
        "payout_paid",
        event.payout_id,
        {
            "payout_id": d["payout_id"],
            "amount_fen": d["amount_fen"],
            "provider_ref": d["provider_ref"],
            "destination": d["destination"],
            "paid_at": d["paid_at"],
        },
        datetime.now(UTC),
    )
