"""Access and refresh tokens (PyJWT, HS256). Issued by accounts, verified by the gateway and every service.

- The access token is short-lived (ACCESS_TOKEN_TTL_S) and self-contained: `sub` (user id), `roles`, `firms` (the
  firm ids the user may act for) and `firm_roles` ({firm_id: [owner|accountant|collector]}) are all a service needs
  to authorize a request without calling accounts.
- The refresh token (REFRESH_TOKEN_TTL_S) carries only `sub`, its own `jti` and a `fam` (family) id. Accounts keeps
  each refresh token's jti and lets it be used once: refreshing returns a new pair (rotation) with the roles as
  they are *now*; presenting a used refresh token again revokes the whole family (a stolen token is detected the
  moment either party uses it after the other).
- Access tokens carry `ver`, the user's token version at issue; a request is refused once the user's version has
  moved past it (role taken away, suspension, logout): see services/kernel/revocation.py.
- Only HS256 is accepted (no `alg: none`, no algorithm confusion); `typ` keeps the two kinds apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import jwt

from .errors import Unauthorized
from .ids import new_id
from .settings import Settings

# regulator: a 商务/统计 authority reading material-flow statistics (stats) for every region and firm
ROLES = frozenset({"resident", "collector", "firm", "erasure_operator", "accountant", "admin", "regulator"})
# What a user may be for a particular firm (the `firm_roles` claim).
FIRM_ROLES = frozenset({"owner", "accountant", "collector"})
ISSUER = "recycle-platform"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    # firms the user may act for: as owner ("firm"), accountant or collector
    firm_ids: frozenset[str] = field(default_factory=frozenset)
    # (firm_id, owner|accountant|collector) pairs: *how* the user acts for each firm
    firm_roles: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    # the user's token version when the token was issued (claim `ver`; see services/kernel/revocation.py)
    token_version: int = 0

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def acts_for(self, firm_id: str, *as_: str) -> bool:
        """True if the user may act for `firm_id` (in one of the firm roles `as_`, when given)."""
        if firm_id not in self.firm_ids:
            return False
        if not as_:
            return True
        return any((firm_id, r) in self.firm_roles for r in as_)

    @staticmethod
    def firm_roles_from(mapping: Mapping[str, Iterable[str]]) -> frozenset[tuple[str, str]]:
        return frozenset((f, r) for f, roles in mapping.items() for r in roles)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    access_expires_in: int
    refresh_expires_in: int
    refresh_jti: str
    refresh_family: str
    refresh_expires_at: int  # epoch seconds


@dataclass(frozen=True)
class RefreshClaims:
    user_id: str
    jti: str
    family: str
    expires_at: int


def issue_token(
    settings: Settings,
    principal: Principal,
    typ: str = "access",
    *,
    jti: str | None = None,
    family: str | None = None,
    now: int | None = None,
) -> str:
    now = int(time.time()) if now is None else now
    ttl = settings.access_token_ttl_s if typ == "access" else settings.refresh_token_ttl_s
    claims: dict = {
        "iss": ISSUER,
        "sub": principal.user_id,
        "typ": typ,
        "iat": now,
        "exp": now + ttl,
        "jti": jti or new_id(),
    }
    if typ == "access":
        firm_roles: dict[str, list[str]] = {}
        for firm_id, role in sorted(principal.firm_roles):
            firm_roles.setdefault(firm_id, []).append(role)
        claims |= {
            "roles": sorted(principal.roles),
            "firms": sorted(principal.firm_ids),
            "firm_roles": firm_roles,
            "ver": principal.token_version,
        }
    else:
        claims["fam"] = family or new_id("rf")
    return jwt.encode(claims, settings.secret("jwt_secret"), algorithm=ALGORITHM)


def issue_tokens(settings: Settings, principal: Principal, family: str | None = None) -> TokenPair:
    """A new access + refresh pair; `family` continues a refresh-token family (rotation)."""
    now = int(time.time())
    jti, fam = new_id("rt"), family or new_id("rf")
    return TokenPair(
        access_token=issue_token(settings, principal, "access", now=now),
        refresh_token=issue_token(settings, principal, "refresh", jti=jti, family=fam, now=now),
        access_expires_in=settings.access_token_ttl_s,
        refresh_expires_in=settings.refresh_token_ttl_s,
        refresh_jti=jti,
        refresh_family=fam,
        refresh_expires_at=now + settings.refresh_token_ttl_s,
    )


def _decode(settings: Settings, token: str, typ: str) -> dict:
    try:
        claims = jwt.decode(
            token,
            settings.secret("jwt_secret"),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "typ", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired", reason="token_expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid token", reason="token_invalid") from exc
    if claims.get("typ") != typ:
        raise Unauthorized(f"not an {typ} token", reason="token_invalid")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise Unauthorized("invalid token", reason="token_invalid")
    return claims


# Verified access tokens, so a client's next requests skip the signature check (PyJWT's decode is a large share
# of a small request). Keyed by the secret too, and each entry dies with its token's expiry.
_VERIFIED: dict[tuple[str, str], tuple[Principal, int]] = {}
_VERIFIED_MAX = 10_000


def verify_token(settings: Settings, token: str, typ: str = "access") -> Principal:
    if typ == "access":
        key = (settings.secret("jwt_secret"), token)
        hit = _VERIFIED.get(key)
        if hit is not None:
            if hit[1] > time.time():
                return hit[0]
            _VERIFIED.pop(key, None)
    principal, exp = _verify(settings, token, typ)
    if typ == "access":
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = (principal, exp)
    return principal


def _verify(settings: Settings, token: str, typ: str) -> tuple[Principal, int]:
    claims = _decode(settings, token, typ)
    try:
        roles = frozenset(str(r) for r in claims.get("roles", []))
        firms = frozenset(str(f) for f in claims.get("firms", []))
        firm_roles = Principal.firm_roles_from(claims.get("firm_roles") or {})
        version = claims.get("ver", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError("ver")
    except (TypeError, AttributeError) as exc:
        raise Unauthorized("invalid token", reason="token_invalid") from exc
    return Principal(claims["sub"], roles, firms, firm_roles, version), int(claims["exp"])


def verify_refresh_token(settings: Settings, token: str) -> RefreshClaims:
    claims = _decode(settings, token, "refresh")
    if not claims.get("jti") or not claims.get("fam"):
        raise Unauthorized("invalid token", reason="token_invalid")
    return RefreshClaims(claims["sub"], str(claims["jti"]), str(claims["fam"]), int(claims["exp"]))
