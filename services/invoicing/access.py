"""Who may see and act on invoices: the seller for their own, the accountants of the issuing firm, admins.

An accountant's firms come from the token: `firm_roles` pairs (firm, "accountant") when the token carries them;
a token that names a firm in `firms` without saying how (no `firm_roles` entry for it) counts when the user holds
the accountant role. A user who acts for a firm only as its collector or owner is not its accountant.
"""

from __future__ import annotations

from services.kernel.auth import Principal
from services.kernel.errors import Forbidden


def accountant_firms(user: Principal) -> frozenset[str]:
    """The firms `user` keeps books for."""
    out = {f for f, role in user.firm_roles if role == "accountant"}
    if user.has("accountant"):
        described = {f for f, _ in user.firm_roles}
        out |= {f for f in user.firm_ids if f not in described}
    return frozenset(out)


def is_accountant_of(user: Principal, firm_id: str | None) -> bool:
    return firm_id is not None and firm_id in accountant_firms(user)


def require_accountant_of(user: Principal, firm_id: str | None, *, admin_ok: bool = False) -> Principal:
    if is_accountant_of(user, firm_id) or (admin_ok and user.has("admin")):
        return user
    raise Forbidden(f"only an accountant of firm {firm_id} may do this", reason="not_firm_accountant")


def may_read_invoice(user: Principal, seller_id: str, issuer_firm_id: str) -> bool:
    return user.user_id == seller_id or is_accountant_of(user, issuer_firm_id) or user.has("admin")
