"""Access and refresh tokens (PyJWT, HS256). Issued by accounts, verified by the gateway and every service."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

from .errors import Unauthorized
from .ids import new_id
from .settings import Settings

ROLES = frozenset({"resident", "collector", "firm", "erasure_operator", "accountant", "admin"})
ISSUER = "recycle-platform"


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    # firms the user may act for: as owner ("firm"), accountant or collector
    firm_ids: frozenset[str] = field(default_factory=frozenset)

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def issue_token(settings: Settings, principal: Principal, typ: str = "access") -> str:
    now = int(time.time())
    ttl = settings.access_token_ttl_s if typ == "access" else settings.refresh_token_ttl_s
    claims = {
        "iss": ISSUER,
        "sub": principal.user_id,
        "roles": sorted(principal.roles),
        "firms": sorted(principal.firm_ids),
        "typ": typ,
        "iat": now,
        "exp": now + ttl,
        "jti": new_id(),
    }
    return jwt.encode(claims, settings.secret("jwt_secret"), algorithm="HS256")


def verify_token(settings: Settings, token: str, typ: str = "access") -> Principal:
    try:
        claims = jwt.decode(token, settings.secret("jwt_secret"), algorithms=["HS256"], issuer=ISSUER,
                            options={"require": ["exp", "sub", "typ"]})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid token") from exc
    if claims.get("typ") != typ:
        raise Unauthorized(f"not an {typ} token")
    return Principal(claims["sub"], frozenset(claims.get("roles", [])), frozenset(claims.get("firms", [])))
