"""Accounts domain: verification states and what a user's roles are. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.kernel.errors import Conflict

PENDING, VERIFIED, REJECTED = "pending", "verified", "rejected"


def approve(kind: str, current: str) -> bool:
    """Whether approving changes anything: pending → verified; verified stays (idempotent); rejected refuses."""
    if current == PENDING:
        return True
    if current == VERIFIED:
        return False
    raise Conflict(f"this {kind} was {current}; it cannot be approved", current_state=current)


def reject(kind: str, current: str) -> bool:
    """pending → rejected; rejected stays; a verified record is not rejected (revocation is another process)."""
    if current == PENDING:
        return True
    if current == REJECTED:
        return False
    raise Conflict(f"this {kind} is {current}; it cannot be rejected", current_state=current)


@dataclass(frozen=True)
class Access:
    """What a user may do, as tokens carry it: roles, and how they act for which firms."""

    roles: frozenset[str]
    firm_roles: frozenset[tuple[str, str]]  # (firm_id, owner|accountant|collector)

    @property
    def firm_ids(self) -> frozenset[str]:
        return frozenset(f for f, _ in self.firm_roles)


def access_of(
    granted: Iterable[str],
    owned_verified_firms: Iterable[str],
    accountant_of: Iterable[str],
    verified_collector_firms: Iterable[str],
) -> Access:
    """Roles = those granted (resident, admin, accountant, erasure_operator) plus those that follow from records:
    firm for the owner of a verified firm, collector for a verified collector, accountant for a firm's accountant."""
    roles = set(granted) | {"resident"}
    firm_roles: set[tuple[str, str]] = set()
    for f in owned_verified_firms:
        roles.add("firm")
        firm_roles.add((f, "owner"))
    for f in accountant_of:
        roles.add("accountant")
        firm_roles.add((f, "accountant"))
    for f in verified_collector_firms:
        roles.add("collector")
        firm_roles.add((f, "collector"))
    return Access(frozenset(roles), frozenset(firm_roles))
