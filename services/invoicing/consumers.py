"""Which events invoicing listens to, and the handlers that keep its own copies of other services' facts.

Groups (each its own offsets, so a slow one never holds up another):
- `invoicing.accounts`  accounts.user, accounts.firm: sellers (IdentityVerified), consents (ConsentRecorded),
                        issuers (FirmVerified), qualifications (QualificationApproved), accountants (AccountantAdded);
- `invoicing.pickups`   booking.pickup: PickupSettled → the reverse invoice (issuing.py);
- `invoicing.payouts`   payments.payout: PayoutRequested / PayoutPaid of a pickup → the payout evidence.

Every handler is idempotent on its own (upserts keyed by the fact's id), on top of the consumer's inbox.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update

from services.kernel.consumer import ConsumerSpec
from services.kernel.db import UnitOfWork
from services.kernel.events import Envelope
from services.kernel.runtime import ServiceRuntime

from .domain.numbering import MAX_ISSUER_CODE
from .issuing import CONSENT_KIND, next_counter, record_evidence, utcnow, when_pickup_settled_issue_invoice
from .ledger import insert_ignore
from .store import accountants, consents, evidence, invoices, issuers, qualifications, sellers

IDENTITY_VERIFIED = "cn.recycle.accounts.user.identity_verified.v1"
CONSENT_RECORDED = "cn.recycle.accounts.user.consent_recorded.v1"
FIRM_VERIFIED = "cn.recycle.accounts.firm.verified.v1"
QUALIFICATION_APPROVED = "cn.recycle.accounts.firm.qualification_approved.v1"
ACCOUNTANT_ADDED = "cn.recycle.accounts.firm.accountant_added.v1"
PICKUP_SETTLED = "cn.recycle.booking.pickup.settled.v1"
PAYOUT_REQUESTED = "cn.recycle.payments.payout.requested.v1"
PAYOUT_PAID = "cn.recycle.payments.payout.paid.v1"


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def when_identity_verified_keep_seller(env: Envelope, uow: UnitOfWork) -> None:
    """The seller's real name and 身份证号, as ciphertexts (never decrypted here) and masks."""
    d, s, now = env.data, uow.session, utcnow()
    values = dict(
        real_name_enc=d["real_name_enc"],
        id_number_enc=d["id_number_enc"],
        name_masked=d["name_masked"],
        id_number_masked=d["id_number_masked"],
        verified_at=_ts(d["verified_at"]),
        updated_at=now,
    )
    res = s.execute(update(sellers).where(sellers.c.user_id == d["user_id"]).values(**values))
    if res.rowcount == 0:
        s.execute(sellers.insert().values(user_id=d["user_id"], **values))


def when_consent_recorded_keep_consent(env: Envelope, uow: UnitOfWork) -> None:
    d = env.data
    if d.get("kind") != CONSENT_KIND:
        return
    insert_ignore(
        uow.session,
        consents,
        {
            "consent_id": d["consent_id"],
            "user_id": d["user_id"],
            "kind": d["kind"],
            "recorded_at": _ts(d["recorded_at"]),
        },
    )


def when_firm_verified_keep_issuer(env: Envelope, uow: UnitOfWork) -> None:
    """A verified firm may issue (with a qualification): it gets its 8-digit issuer code now, once."""
    d, s, now = env.data, uow.session, utcnow()
    values = dict(
        owner_user_id=d.get("owner_user_id"),
        name=d["name"],
        uscc=d["uscc"],
        address=d["address"],
        city_code=d["city_code"],
        verified_at=_ts(d["verified_at"]),
        updated_at=now,
    )
    res = s.execute(update(issuers).where(issuers.c.firm_id == d["firm_id"]).values(**values))
    if res.rowcount == 0:
        code = next_counter(s, "issuer_code")
        if code > MAX_ISSUER_CODE:
            raise RuntimeError("8-digit issuer codes exhausted")
        s.execute(issuers.insert().values(firm_id=d["firm_id"], issuer_code=code, **values))


def when_qualification_approved_keep_it(env: Envelope, uow: UnitOfWork) -> None:
    d, s = env.data, uow.session
    values = dict(
        firm_id=d["firm_id"],
        kind=d["kind"],
        number=d["number"],
        valid_until=_date(d["valid_until"]),
        approved_at=_ts(d["approved_at"]),
    )
    res = s.execute(
        update(qualifications)
        .where(qualifications.c.qualification_id == d["qualification_id"])
        .values(**values)
    )
    if res.rowcount == 0:
        s.execute(qualifications.insert().values(qualification_id=d["qualification_id"], **values))


def when_accountant_added_keep_it(env: Envelope, uow: UnitOfWork) -> None:
    d = env.data
    insert_ignore(
        uow.session,
        accountants,
        {"firm_id": d["firm_id"], "user_id": d["user_id"], "added_at": _ts(d["added_at"])},
    )


def when_payout_requested_keep_evidence(env: Envelope, uow: UnitOfWork) -> None:
    """The payout booking asked for a pickup: who is paid (三流合一: the seller themselves) and how much."""
    d = env.data
    if d.get("purpose") != "pickup":
        return
    s = uow.session
    seller = s.execute(
        select(invoices.c.seller_id).where(
            invoices.c.pickup_id == d["reference_id"], invoices.c.kind == "blue"
        )
    ).scalar()
    record_evidence(
        s,
        d["reference_id"],
        "payout_requested",
        d["payout_id"],
        {
            "payout_id": d["payout_id"],
            "payee_user_id": d["payee_user_id"],
            "amount_fen": d["amount_fen"],
            "requested_at": d["requested_at"],
            "payee_is_seller": None if seller is None else d["payee_user_id"] == seller,
        },
        utcnow(),
    )


def when_payout_paid_keep_evidence(env: Envelope, uow: UnitOfWork) -> None:
    """The payout record of a pickup (only payouts this service saw requested for a pickup)."""
    d, s = env.data, uow.session
    known = s.execute(
        select(evidence.c.pickup_id).where(
            evidence.c.kind == "payout_requested", evidence.c.ref_id == d["payout_id"]
        )
    ).scalar()
    if known is None:
        return
    record_evidence(
        s,
        known,
        "payout_paid",
        d["payout_id"],
        {
            "payout_id": d["payout_id"],
            "amount_fen": d["amount_fen"],
            "provider_ref": d.get("provider_ref"),
            "destination": d.get("destination", "provider"),
            "paid_at": d["paid_at"],
        },
        utcnow(),
    )


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            "invoicing.accounts",
            ["accounts.user", "accounts.firm"],
            {
                IDENTITY_VERIFIED: when_identity_verified_keep_seller,
                CONSENT_RECORDED: when_consent_recorded_keep_consent,
                FIRM_VERIFIED: when_firm_verified_keep_issuer,
                QUALIFICATION_APPROVED: when_qualification_approved_keep_it,
                ACCOUNTANT_ADDED: when_accountant_added_keep_it,
            },
        ),
        ConsumerSpec(
            "invoicing.pickups",
            ["booking.pickup"],
            {
                PICKUP_SETTLED: when_pickup_settled_issue_invoice(rt),
            },
        ),
        ConsumerSpec(
            "invoicing.payouts",
            ["payments.payout"],
            {
                PAYOUT_REQUESTED: when_payout_requested_keep_evidence,
                PAYOUT_PAID: when_payout_paid_keep_evidence,
            },
        ),
    ]
