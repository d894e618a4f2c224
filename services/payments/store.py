"""Payments' tables and the ledger repository.

Balances are never stored: `balance()` sums the lines of an account. The rows of `holds`, `payees` and
`withdrawals` carry state (and serve as the row locks that serialise work on one hold or one payee's wallets).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from services.kernel.db import Timestamp, new_metadata
from services.kernel.ids import new_id

from .domain.ledger import Entry, check_balanced

metadata = new_metadata()

Money = BigInteger  # fen

holds = Table(
    "holds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("command_id", String(255), nullable=False, unique=True),
    Column("payer_user_id", String(64), nullable=False, index=True),
    Column("reference_id", String(128), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_method", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("provider_ref", String(128), nullable=True, unique=True),
    Column("decline_code", String(64), nullable=True),
    Column("decline_message", Text, nullable=True),
    Column(
        "status_reason", Text, nullable=True
    ),  # why the provider changed it (e.g. the authorisation lapsed)
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
)

# Holds other services ask for over the bus (contracts.payments: HoldRequested, ...): a PaymentIntent opened at the
# provider waits for the payer to confirm it (their client with the client secret, or our route); the hold it makes
# is a row of `holds` (command id `hr:<id>:intent`; `hr:<id>:<n>` for requests opened before intents were).
hold_requests = Table(
    "hold_requests",
    metadata,
    Column("id", String(80), primary_key=True),  # the requester's hold_request_id (also the payment id)
    Column("payer_user_id", String(64), nullable=False, index=True),
    Column("amount_fen", Money, nullable=False),
    Column("reference_id", String(128), nullable=False),
    Column("requested_by", String(32), nullable=False),
    # requires_payment_method → requires_capture (held) → [escrowed →] captured | cancelled | refunded
    Column("status", String(32), nullable=False),
    Column("hold_id", String(64), nullable=True),
    Column("declines", Integer, nullable=False, default=0),
    Column("decline_code", String(64), nullable=True),
    Column("decline_message", Text, nullable=True),
    Column("client_secret", Text, nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
    Column("provider_ref", String(128), nullable=True, unique=True),  # the PaymentIntent
    Column("attempt_ref", String(128), nullable=True),  # the payer's last attempt already reported
)

# Every command that acted on a hold (capture, cancel, release): a repeated command id answers with the first
# outcome instead of acting twice; the same id for a different operation is refused.
hold_commands = Table(
    "hold_commands",
    metadata,
    Column("command_id", String(255), primary_key=True),
    Column("op", String(16), nullable=False),
    Column("hold_id", String(64), nullable=False, index=True),
    Column("amount_fen", Money, nullable=True),
    Column("created_at", Timestamp(), nullable=False),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("command_id", String(255), nullable=False, unique=True),
    Column("hold_id", String(64), nullable=False, index=True),
    Column("amount_fen", Money, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider_ref", String(128), nullable=True, unique=True),
    Column("reason", Text, nullable=False, default=""),
    Column("failure_reason", Text, nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
)

# One row per payee: the provider account money is paid to, and the lock that serialises their wallets.
payees = Table(
    "payees",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("provider_account_ref", String(128), nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
)

payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", String(128), primary_key=True),  # chosen by the requester: at most one payout per id
    Column("payee_user_id", String(64), nullable=False, index=True),
    Column("payee_kind", String(16), nullable=False),
    Column("wallet", String(16), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("reference_id", String(128), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("source_account", String(160), nullable=False),  # where the money came from (reversals go back)
    Column("status", String(16), nullable=False),
    Column("withdrawal_id", String(64), nullable=True, index=True),
    Column("provider_ref", String(160), nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("requested_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("command_id", String(255), nullable=False, unique=True),
    Column("payee_user_id", String(64), nullable=False, index=True),
    Column("wallet", String(16), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider_ref", String(128), nullable=True, unique=True),
    Column("trigger_payout_id", String(128), nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("created_at", Timestamp(), nullable=False),
    Column("updated_at", Timestamp(), nullable=False),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("ref", String(160), nullable=False, index=True),
    Column("memo", Text, nullable=False, default=""),
    Column("created_at", Timestamp(), nullable=False),
    # one entry per (kind, ref): a retried command or redelivered event cannot book the same fact twice
    Index("uq_ledger_entries_kind_ref", "kind", "ref", unique=True),
)

ledger_lines = Table(
    "ledger_lines",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # checked at commit: an entry is written lines first (the header's insert checks they balance)
    Column(
        "entry_id",
        String(64),
        ForeignKey("ledger_entries.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
        index=True,
    ),
    Column("account", String(160), nullable=False),
    Column("amount_fen", Money, nullable=False),
    Index("ix_ledger_lines_account_amount", "account", "amount_fen"),
)

# Every provider event (webhook or sandbox), once per event id, kept as the object's history.
provider_events = Table(
    "provider_events",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("type", String(64), nullable=False),
    Column("object_kind", String(32), nullable=False),
    Column("object_ref", String(128), nullable=False, index=True),
    Column("parent_ref", String(128), nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("status", String(16), nullable=True),
    Column("amount_fen", Money, nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("payload", Text, nullable=False),
    Column("received_at", Timestamp(), nullable=False),
)


# --- the ledger repository ---------------------------------------------------------------------------------


def post(session: Session, entry: Entry) -> str:
    """Write one balanced entry. Entries are append-only: a correction is a new (reversing) entry.

    Lines first, then the header: the database checks, when the header goes in, that the lines balance (see the
    migration `ledger invariants in the database`)."""
    check_balanced(entry.lines)
    entry_id = new_id("le")
    session.execute(
        insert(ledger_lines),
        [dict(entry_id=entry_id, account=ln.account, amount_fen=ln.amount_fen) for ln in entry.lines],
    )
    session.execute(
        insert(ledger_entries).values(
            id=entry_id, kind=entry.kind, ref=entry.ref, memo=entry.memo, created_at=datetime.now(UTC)
        )
    )
    return entry_id


def post_all(session: Session, entries: Iterable[Entry]) -> list[str]:
    return [post(session, e) for e in entries]


def raw_balance(session: Session, account: str) -> int:
    return int(
        session.execute(
            select(func.coalesce(func.sum(ledger_lines.c.amount_fen), 0)).where(
                ledger_lines.c.account == account
            )
        ).scalar_one()
    )


def raw_balances(
    session: Session, accounts: Iterable[str] | None = None, prefix: str | None = None
) -> dict[str, int]:
    q = select(ledger_lines.c.account, func.sum(ledger_lines.c.amount_fen)).group_by(ledger_lines.c.account)
    if accounts is not None:
        q = q.where(ledger_lines.c.account.in_(list(accounts)))
    if prefix is not None:
        q = q.where(ledger_lines.c.account.startswith(prefix, autoescape=True))
    return {a: int(s) for a, s in session.execute(q).all()}


def account_movements(session: Session, account: str) -> dict[str, int]:
    """Sum of an account's lines per entry kind (e.g. how much of an escrow was captured, refunded, released)."""
    q = (
        select(ledger_entries.c.kind, func.sum(ledger_lines.c.amount_fen))
        .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
        .where(ledger_lines.c.account == account)
        .group_by(ledger_entries.c.kind)
    )
    return {k: int(s) for k, s in session.execute(q).all()}


def unbalanced_entries(session: Session) -> list[tuple[str, int]]:
    """Entries whose lines do not sum to zero (always empty unless someone wrote around `post`)."""
    q = (
        select(ledger_lines.c.entry_id, func.sum(ledger_lines.c.amount_fen))
        .group_by(ledger_lines.c.entry_id)
        .having(func.sum(ledger_lines.c.amount_fen) != 0)
    )
    return [(e, int(s)) for e, s in session.execute(q).all()]
