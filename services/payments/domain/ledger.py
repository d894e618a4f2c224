"""The double-entry ledger (复式记账) behind every movement of money. Pure: no I/O.

Every entry is a set of lines; a line is (account, amount in fen) with debits positive and credits negative, and
the lines of one entry sum to zero. Balances are sums of lines, derived on demand, never stored on their own.

The chart of accounts (see docs/payments.md for the diagram):

| account                     | side   | what its balance means                                          |
|-----------------------------|--------|-----------------------------------------------------------------|
| `provider_cash`             | debit  | money we hold at the provider (Stripe balance / sandbox)        |
| `card_authorisations`       | debit  | memo: card funds the provider has put on hold for us            |
| `hold:<hold_id>`            | credit | memo: the open (uncaptured, unreleased) part of one hold        |
| `escrow:<hold_id>`          | credit | captured buyer money kept for one order (平台托管) until release  |
| `resident_payable:<user>`   | credit | what we owe a resident (居民): their wallet balance               |
| `seller_payable:<user>`     | credit | what we owe a second-hand seller                                |
| `firm_payable:<user>`       | credit | what we owe a firm (回收企业)                                     |
| `payouts_in_transit`        | credit | payouts reserved from a wallet, not yet confirmed by the provider |
| `platform_fees`             | credit | the platform's fee income                                        |
| `funding:<service>`         | debit  | payouts a service asked for (e.g. booking pays residents): what that business line owes the platform |

A credit-side account must never go below zero: no wallet pays out more than it holds, no escrow refunds more
than was captured, no hold captures or releases more than was authorised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PROVIDER_CASH = "provider_cash"
CARD_AUTHORISATIONS = "card_authorisations"
PAYOUTS_IN_TRANSIT = "payouts_in_transit"
PLATFORM_FEES = "platform_fees"

WALLET_KINDS = ("resident", "seller", "firm")


def hold_account(hold_id: str) -> str:
    return f"hold:{hold_id}"


def escrow_account(hold_id: str) -> str:
    return f"escrow:{hold_id}"


def wallet_account(kind: str, user_id: str) -> str:
    if kind not in WALLET_KINDS:
        raise ValueError(f"unknown wallet kind {kind!r}; one of {WALLET_KINDS}")
    return f"{kind}_payable:{user_id}"


def funding_account(service: str) -> str:
    return f"funding:{service}"


_CREDIT_PREFIXES = ("hold:", "escrow:", "resident_payable:", "seller_payable:", "firm_payable:")
_CREDIT_ACCOUNTS = {PAYOUTS_IN_TRANSIT, PLATFORM_FEES}
# Accounts whose normal balance may legitimately be negative: the provider balance (top-ups from the bank are
# outside this ledger) and the funding accounts (a business line can be owed by the platform after reversals).
_UNCONSTRAINED = (PROVIDER_CASH, "funding:")


def is_credit_side(account: str) -> bool:
    return account in _CREDIT_ACCOUNTS or account.startswith(_CREDIT_PREFIXES)


def normal_balance(account: str, raw_sum_fen: int) -> int:
    """The balance as a person reads it: positive on the account's normal side."""
    return -raw_sum_fen if is_credit_side(account) else raw_sum_fen


def must_stay_non_negative(account: str) -> bool:
    return not (account == PROVIDER_CASH or account.startswith("funding:"))


class UnbalancedEntry(ValueError):
    """An entry whose lines do not sum to zero (a bug, never a user error)."""


@dataclass(frozen=True)
class Line:
    account: str
    amount_fen: int  # debit > 0, credit < 0


@dataclass(frozen=True)
class Entry:
    """One balanced posting: what moved, why (`kind`), and for which aggregate (`ref`)."""

    kind: str
    ref: str
    lines: tuple[Line, ...]
    memo: str = ""

    def __post_init__(self) -> None:
        check_balanced(self.lines)


def check_balanced(lines: Iterable[Line]) -> None:
    lines = list(lines)
    if len(lines) < 2:
        raise UnbalancedEntry("an entry needs at least two lines")
    for ln in lines:
        if not isinstance(ln.amount_fen, int) or isinstance(ln.amount_fen, bool):
            raise UnbalancedEntry(
                f"amount of {ln.account} is not an integer number of fen: {ln.amount_fen!r}"
            )
        if ln.amount_fen == 0:
            raise UnbalancedEntry(f"zero line on {ln.account}")
        if not ln.account:
            raise UnbalancedEntry("a line without an account")
    total = sum(ln.amount_fen for ln in lines)
    if total != 0:
        raise UnbalancedEntry(f"entry does not balance: lines sum to {total} fen")


def transfer(kind: str, ref: str, debit: str, credit: str, amount_fen: int, memo: str = "") -> Entry:
    """The common two-line entry: `amount_fen` moves from `credit` to `debit`."""
    if amount_fen <= 0:
        raise UnbalancedEntry(f"a transfer moves a positive amount, not {amount_fen}")
    return Entry(kind, ref, (Line(debit, amount_fen), Line(credit, -amount_fen)), memo)


def entry(kind: str, ref: str, *pairs: tuple[str, int], memo: str = "") -> Entry:
    """An entry from (account, signed amount) pairs; zero pairs are dropped (e.g. a zero fee)."""
    return Entry(kind, ref, tuple(Line(a, v) for a, v in pairs if v != 0), memo)


def reversal(original: Entry, kind: str | None = None, memo: str = "") -> Entry:
    """The entry that undoes `original` (a reversal is a new posting; nothing is ever edited)."""
    return Entry(
        kind or f"{original.kind}_reversal",
        original.ref,
        tuple(Line(ln.account, -ln.amount_fen) for ln in original.lines),
        memo,
    )


def invariant_violations(balances: Mapping[str, int], entry_sums: Iterable[int] = ()) -> list[str]:
    """What is wrong with a ledger, given raw balances per account and the line sum of every entry."""
    problems = [f"an entry sums to {s} fen" for s in entry_sums if s != 0]
    total = sum(balances.values())
    if total != 0:
        problems.append(f"the ledger sums to {total} fen, not 0")
    for account, raw in sorted(balances.items()):
        if must_stay_non_negative(account) and normal_balance(account, raw) < 0:
            problems.append(f"{account} is negative: {normal_balance(account, raw)} fen")
    return problems
