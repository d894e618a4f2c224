"""Accounts handlers: one function per command, each one unit of work (load, check, act, emit, commit).

They are blocking (SQLAlchemy); the API runs them with `ctx.run`. Checks that need the caller (is this firm
yours?) are passed in as `authorize` callbacks (`ctx.require_owner`) so they run on the row loaded inside the
transaction.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row, and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.contracts.accounts import (
    AccountantAdded,
    CollectorVerified,
    ConsentRecorded,
    FirmVerified,
    IdentityVerified,
    QualificationApproved,
    RolesChanged,
)
from services.kernel import idempotency, pii
from services.kernel.auth import Principal, TokenPair, issue_tokens, verify_refresh_token
from services.kernel.checkdigits import validate_id_number, validate_uscc
from services.kernel.db import UnitOfWork
from services.kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    RateLimited,
    RuleViolated,
    Unauthorized,
    ValidationFailed,
)
from services.kernel.ids import new_id
from services.kernel.revocation import token_versions
from services.kernel.runtime import ServiceRuntime

from .domain import model
from .domain.events import CollectorRegistered, FirmRegistered, UserRegistered
from .domain.rules import normalize_phone, validate_grant, validate_real_name
from .settings import SETTINGS, AccountsSettings
from .sms import SmsError, SmsProvider, sms_of
from .store import (
    collectors,
    consents,
    firm_accountants,
    firms,
    otp_codes,
    qualifications,
    refresh_tokens,
    user_roles,
    users,
)

Authorize = Callable[..., Any]


class TokenStoreUnavailable(DomainError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class SmsUnavailable(DomainError):
    status = 503
    slug = "sms-unavailable"
    title = "SMS could not be sent"


def _cfg(rt: ServiceRuntime) -> AccountsSettings:
    return rt.ports[SETTINGS]


def _sms(rt: ServiceRuntime) -> SmsProvider:
    return sms_of(rt)


def _ms() -> int:
    return int(time.time() * 1000)


def _cipher(rt: ServiceRuntime) -> pii.PiiCipher:
    return pii.cipher(rt.settings)


def _phone_hash(rt: ServiceRuntime, phone: str) -> str:
    return _cipher(rt).lookup_hash(phone, "phone")


def _code_hash(rt: ServiceRuntime, otp_id: str, code: str) -> str:
    return _cipher(rt).lookup_hash(f"{otp_id}:{code}", "otp")


def _collect(*checks: Callable[[], Any]) -> list[Any]:
    """Run every input check and report all bad fields at once (one 400 naming each field)."""
    values, errors = [], []
    for check in checks:
        try:
            values.append(check())
        except ValidationFailed as exc:
            errors += exc.errors
            values.append(None)
    if errors:
        raise ValidationFailed(errors)
    return values


# --- login ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OtpIssued:
    phone_masked: str
    expires_in_s: int
    code: str  # for the dev environment's `dev_code` and nothing else


def request_otp(rt: ServiceRuntime, raw_phone: str) -> OtpIssued:
    """Send a login code: at most OTP_PER_PHONE_LIMIT per OTP_PER_PHONE_WINDOW_S; a new code replaces the old."""
    cfg = _cfg(rt)
    phone = normalize_phone(raw_phone)
    ph = _phone_hash(rt, phone)
    now = _ms()
    window_ms = cfg.otp_per_phone_window_s * 1000
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        recent = (
            s.execute(
                select(otp_codes.c.created_at_ms)
                .where(otp_codes.c.phone_hash == ph, otp_codes.c.created_at_ms > now - window_ms)
                .order_by(otp_codes.c.created_at_ms)
            )
            .scalars()
            .all()
        )
        if len(recent) >= cfg.otp_per_phone_limit:
            oldest_counted = recent[len(recent) - cfg.otp_per_phone_limit]
            raise RateLimited(
                f"at most {cfg.otp_per_phone_limit} codes per {cfg.otp_per_phone_window_s // 60} "
                "minutes for one phone number",
                retry_after_s=max(1, math.ceil((oldest_counted + window_ms - now) / 1000)),
            )
        s.execute(
            update(otp_codes)
            .where(otp_codes.c.phone_hash == ph, otp_codes.c.closed_at_ms.is_(None))
            .values(closed_at_ms=now, closed_reason="superseded")
        )
        code = "".join(secrets.choice("0123456789") for _ in range(cfg.otp_length))
        otp_id = new_id("ot")
        s.execute(
            otp_codes.insert().values(
                id=otp_id,
                phone_hash=ph,
                code_hash=_code_hash(rt, otp_id, code),
                created_at_ms=now,
                expires_at_ms=now + cfg.otp_ttl_s * 1000,
                attempts=0,
            )
        )
    try:
        _sms(rt).send_code(phone, code, cfg.otp_ttl_s)
    except SmsError as exc:
        raise SmsUnavailable("the SMS provider did not accept the message; try again shortly") from exc
    return OtpIssued(pii.mask_phone(phone), cfg.otp_ttl_s, code)


@dataclass(frozen=True)
class LoginSession:
    """A successful login or refresh: who, what they may do, and their new tokens."""

    user_id: str
    access: model.Access
    tokens: TokenPair


def _load_access(s: Session, user_id: str) -> model.Access:
    granted = s.execute(select(user_roles.c.role).where(user_roles.c.user_id == user_id)).scalars().all()
    owned = (
        s.execute(
            select(firms.c.id).where(firms.c.owner_user_id == user_id, firms.c.status == model.VERIFIED)
        )
        .scalars()
        .all()
    )
    # an accountant acts for a firm only once it is verified (a pending firm is anyone's to create)
    acct = (
        s.execute(
            select(firm_accountants.c.firm_id)
            .join(firms, firms.c.id == firm_accountants.c.firm_id)
            .where(firm_accountants.c.user_id == user_id, firms.c.status == model.VERIFIED)
        )
        .scalars()
        .all()
    )
    coll = (
        s.execute(
            select(collectors.c.firm_id).where(
                collectors.c.user_id == user_id, collectors.c.status == model.VERIFIED
            )
        )
        .scalars()
        .all()
    )
    return model.access_of(granted, owned, acct, coll)


def _principal(user_id: str, access: model.Access, token_version: int) -> Principal:
    return Principal(user_id, access.roles, access.firm_ids, access.firm_roles, token_version)


def _token_version(s: Session, user_id: str) -> int:
    return int(s.execute(select(users.c.token_version).where(users.c.id == user_id)).scalar() or 0)


def _revoke_tokens(s: Session, user_id: str) -> int:
    """Raise the user's token version: every access token issued before is refused from its next request.

    Call `_publish_version` with the result once the transaction has committed."""
    s.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(token_version=users.c.token_version + 1, token_version_at_ms=_ms())
    )
    return _token_version(s, user_id)


def _publish_version(rt: ServiceRuntime, user_id: str, version: int) -> None:
    """Write the committed version into the copy every request is checked against (memory or Redis)."""
    try:
        token_versions(rt.settings).raise_to(user_id, version, rt.settings.access_token_ttl_s)
    except Exception as exc:  # noqa: BLE001 - redis-py raises its own error types
        # committed but not yet in force: say so; repeating the request publishes it again
        raise TokenStoreUnavailable(
            "the change is recorded but could not reach the token store yet; "
            "repeat the request to put it in force"
        ) from exc


def republish_versions(rt: ServiceRuntime) -> int:
    """At start-up: put every version raised within an access token's lifetime back into the copy (a restarted
    process or a flushed Redis has lost them, while tokens issued before them have not expired yet)."""
    since = _ms() - rt.settings.access_token_ttl_s * 1000
    with UnitOfWork(rt.db, readonly=True) as uow:
        rows = uow.session.execute(
            select(users.c.id, users.c.token_version).where(users.c.token_version_at_ms > since)
        ).all()
    for r in rows:
        token_versions(rt.settings).raise_to(r.id, r.token_version, rt.settings.access_token_ttl_s)
    return len(rows)


def _revoke_refresh_tokens(s: Session, user_id: str) -> None:
    s.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at_ms.is_(None))
        .values(revoked_at_ms=_ms())
    )


def _roles_changed(uow: UnitOfWork, user_id: str, access: model.Access) -> None:
    uow.emit(RolesChanged(user_id=user_id, roles=sorted(access.roles), firm_ids=sorted(access.firm_ids)))


def _store_refresh(s: Session, user_id: str, pair: TokenPair) -> None:
    s.execute(
        refresh_tokens.insert().values(
            jti=pair.refresh_jti,
            family=pair.refresh_family,
            user_id=user_id,
            expires_at_ms=pair.refresh_expires_at * 1000,
            created_at_ms=_ms(),
        )
    )


def _admin_phones(rt: ServiceRuntime) -> set[str]:
    out = set()
    for p in rt.settings.admin_phone_set:
        try:
            out.add(normalize_phone(p))
        except ValidationFailed:
            continue
    return out


def login(rt: ServiceRuntime, raw_phone: str, code: str) -> LoginSession:
    """Exchange a login code for tokens; the first login creates the user (resident)."""
    phone = normalize_phone(raw_phone)
    code = (code or "").strip()
    if not code.isascii() or not code.isdigit() or len(code) != _cfg(rt).otp_length:
        raise ValidationFailed.field("code", f"must be the {_cfg(rt).otp_length}-digit code sent by SMS")
    for attempt in range(3):
        try:
            outcome = _login_once(rt, phone, code)
        except IntegrityError:
            if attempt == 2:
                raise
            continue  # a concurrent first login created the user: run again, it exists now
        if isinstance(outcome, LoginSession):
            return outcome
        raise Unauthorized(outcome, reason="otp_invalid")
    raise AssertionError("unreachable")


def _login_once(rt: ServiceRuntime, phone: str, code: str) -> LoginSession | str:
    cfg = _cfg(rt)
    ph = _phone_hash(rt, phone)
    now = _ms()
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        row = s.execute(
            select(otp_codes)
            .where(otp_codes.c.phone_hash == ph, otp_codes.c.closed_at_ms.is_(None))
            .order_by(otp_codes.c.created_at_ms.desc())
            .limit(1)
        ).first()
        if row is None or row.expires_at_ms <= now:
            return "no valid code for this phone number: request a new one (codes expire)"
        counted = s.execute(
            update(otp_codes)
            .where(
                otp_codes.c.id == row.id,
                otp_codes.c.closed_at_ms.is_(None),
                otp_codes.c.attempts < cfg.otp_max_attempts,
            )
            .values(attempts=otp_codes.c.attempts + 1)
        ).rowcount
        if counted != 1:
            return "no valid code for this phone number: request a new one"
        if not hmac.compare_digest(_code_hash(rt, row.id, code), row.code_hash):
            left = cfg.otp_max_attempts - (row.attempts + 1)
            if left <= 0:
                s.execute(
                    update(otp_codes)
                    .where(otp_codes.c.id == row.id)
                    .values(closed_at_ms=now, closed_reason="burned")
                )
                return "wrong code; too many attempts: request a new code"
            return f"wrong code; {left} attempt(s) left"
        used = s.execute(
            update(otp_codes)
            .where(otp_codes.c.id == row.id, otp_codes.c.closed_at_ms.is_(None))
            .values(closed_at_ms=now, closed_reason="used")
        ).rowcount
        if used != 1:
            return "no valid code for this phone number: request a new one"

        user_id = s.execute(select(users.c.id).where(users.c.phone_hash == ph)).scalar()
        if user_id is not None:
            _refuse_suspended(s, user_id)
        at = datetime.now(UTC)
        changed = False
        if user_id is None:
            user_id = new_id("us")
            s.execute(
                users.insert().values(
                    id=user_id,
                    phone_hash=ph,
                    phone_enc=_cipher(rt).encrypt(phone),
                    phone_masked=pii.mask_phone(phone),
                    created_at=at,
                )
            )
            s.execute(user_roles.insert().values(user_id=user_id, role="resident", granted_at=at))
            uow.emit(UserRegistered(user_id=user_id, phone_masked=pii.mask_phone(phone), registered_at=at))
        if phone in _admin_phones(rt):
            has_admin = s.execute(
                select(user_roles.c.role).where(user_roles.c.user_id == user_id, user_roles.c.role == "admin")
            ).first()
            if has_admin is None:
                s.execute(
                    user_roles.insert().values(
                        user_id=user_id, role="admin", granted_at=at, granted_by="bootstrap:ADMIN_PHONES"
                    )
                )
                changed = True
        access = _load_access(s, user_id)
        if changed:
            _roles_changed(uow, user_id, access)
        pair = issue_tokens(rt.settings, _principal(user_id, access, _token_version(s, user_id)))
        _store_refresh(s, user_id, pair)
        return LoginSession(user_id, access, pair)


def refresh(rt: ServiceRuntime, token: str) -> LoginSession:
    """Rotate a refresh token: a new pair with the roles as they are now. A reused token revokes its family."""
    claims = verify_refresh_token(rt.settings, token)
    now = _ms()
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        row = s.execute(select(refresh_tokens).where(refresh_tokens.c.jti == claims.jti)).first()
        if row is None or row.user_id != claims.user_id or row.expires_at_ms <= now:
            outcome = "refresh token unknown or expired: log in again"
        elif (
            row.revoked_at_ms is not None
            or row.used_at_ms is not None
            or (
                s.execute(
                    update(refresh_tokens)
                    .where(
                        refresh_tokens.c.jti == row.jti,
                        refresh_tokens.c.used_at_ms.is_(None),
                        refresh_tokens.c.revoked_at_ms.is_(None),
                    )
                    .values(used_at_ms=now)
                ).rowcount
                != 1
            )
        ):
            _revoke_family(s, row.family, now)
            outcome = "refresh token already used: every session of this login is revoked; log in again"
        elif (
            u := s.execute(
                select(users.c.suspended_at, users.c.token_version).where(users.c.id == row.user_id)
            ).first()
        ) is None:
            outcome = "this account no longer exists"
        elif u.suspended_at is not None:
            outcome = "this account is suspended"
        else:
            access = _load_access(s, row.user_id)
            pair = issue_tokens(
                rt.settings, _principal(row.user_id, access, u.token_version), family=row.family
            )
            _store_refresh(s, row.user_id, pair)
            return LoginSession(row.user_id, access, pair)
    raise Unauthorized(outcome, reason="refresh_invalid")


def _refuse_suspended(s: Session, user_id: str) -> None:
    if s.execute(select(users.c.suspended_at).where(users.c.id == user_id)).scalar() is not None:
        raise Forbidden("this account is suspended; contact support", reason="account_suspended")


def logout(rt: ServiceRuntime, user_id: str) -> dict[str, Any]:
    """Log out everywhere: every access token of the user is refused from its next request, every refresh
    token is revoked."""
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        _user(s, user_id)
        version = _revoke_tokens(s, user_id)
        _revoke_refresh_tokens(s, user_id)
    _publish_version(rt, user_id, version)
    return dict(user_id=user_id, status="logged_out")


def logged_out(rt: ServiceRuntime, user_id: str) -> dict[str, Any]:
    """`logout`'s reply rebuilt (its reply lost after the commit), the version it raised put in force again."""
    _put_in_force(rt, user_id)
    return dict(user_id=user_id, status="logged_out")


def _put_in_force(rt: ServiceRuntime, user_id: str) -> None:
    """Publish the user's committed token version again, as repeating the request that raised it would: a reply
    rebuilt for a change whose publication failed (503) must not say it is in force while it is not."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        version = _token_version(uow.session, user_id)
    _publish_version(rt, user_id, version)


def _revoke_family(s: Session, family: str, now: int) -> None:
    s.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.family == family, refresh_tokens.c.revoked_at_ms.is_(None))
        .values(revoked_at_ms=now)
    )


# --- the user -------------------------------------------------------------------------------------------


def _user(s: Session, user_id: str) -> Row:
    row = s.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFound(f"no user with id {user_id}")
    return row


def me(rt: ServiceRuntime, user_id: str) -> dict[str, Any]:
    with UnitOfWork(rt.db, readonly=True) as uow:
        s = uow.session
        u = _user(s, user_id)
        access = _load_access(s, user_id)
        kinds = s.execute(select(consents.c.kind).where(consents.c.user_id == user_id)).scalars().all()
    return dict(
        user_id=u.id,
        phone_masked=u.phone_masked,
        roles=sorted(access.roles),
        identity_verified=u.identity_verified_at is not None,
        name_masked=u.name_masked,
        id_number_masked=u.id_number_masked,
        firm_ids=sorted(access.firm_ids),
        consents=sorted(kinds),
    )


def verify_identity(rt: ServiceRuntime, user_id: str, raw_name: str, raw_id_number: str) -> dict[str, Any]:
    """实名: the resident's name and 身份证号 (checked: format, region prefix, birth date, check character)."""
    name, id_number = _collect(
        lambda: validate_real_name(raw_name), lambda: validate_id_number(raw_id_number)
    )
    c = _cipher(rt)
    idh = c.lookup_hash(id_number, "id_number")
    try:
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            u = _user(s, user_id)
            if u.identity_verified_at is not None:
                if u.id_number_hash == idh and c.decrypt(u.real_name_enc) == name:
                    return _identity_reply(u.id, u.name_masked, u.id_number_masked, u.identity_verified_at)
                raise Conflict(
                    "this account's identity is already verified with other details", current_state="verified"
                )
            other = s.execute(
                select(users.c.id).where(users.c.id_number_hash == idh, users.c.id != user_id)
            ).first()
            if other is not None:
                raise Conflict("this ID number is already verified on another account", current_state="taken")
            at = datetime.now(UTC)
            name_enc, id_enc = c.encrypt(name), c.encrypt(id_number)
            name_masked, id_masked = pii.mask_name(name), pii.mask_id(id_number)
            s.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    real_name_enc=name_enc,
                    name_masked=name_masked,
                    id_number_enc=id_enc,
                    id_number_hash=idh,
                    id_number_masked=id_masked,
                    identity_verified_at=at,
                )
            )
            uow.emit(
                IdentityVerified(
                    user_id=user_id,
                    real_name_enc=name_enc,
                    id_number_enc=id_enc,
                    name_masked=name_masked,
                    id_number_masked=id_masked,
                    verified_at=at,
                )
            )
    except IntegrityError:
        raise Conflict(
            "this ID number is already verified on another account", current_state="taken"
        ) from None
    return _identity_reply(user_id, name_masked, id_masked, at)


def identity_verified(rt: ServiceRuntime, user_id: str) -> dict[str, Any] | None:
    """`verify_identity`'s reply rebuilt: the identity as verified (None if it is not: nothing to rebuild)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        u = _user(uow.session, user_id)
    if u.identity_verified_at is None:
        return None
    return _identity_reply(u.id, u.name_masked, u.id_number_masked, u.identity_verified_at)


def _identity_reply(user_id: str, name_masked: str, id_masked: str, at: datetime | None) -> dict[str, Any]:
    return dict(
        user_id=user_id,
        identity_verified=True,
        name_masked=name_masked,
        id_number_masked=id_masked,
        verified_at=at,
    )


def record_consent(rt: ServiceRuntime, user_id: str, kind: str) -> dict[str, Any]:
    """The user agrees (e.g. to reverse invoicing and 代办 filing); recording twice keeps the first record."""
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        _user(s, user_id)
        row = s.execute(
            select(consents).where(consents.c.user_id == user_id, consents.c.kind == kind)
        ).first()
        if row is not None:
            idempotency.made(row.id)
            return dict(id=row.id, kind=row.kind, recorded_at=row.recorded_at)
        cid, at = new_id("cs"), datetime.now(UTC)
        idempotency.made(cid)
        s.execute(consents.insert().values(id=cid, user_id=user_id, kind=kind, recorded_at=at))
        uow.emit(ConsentRecorded(user_id=user_id, consent_id=cid, kind=kind, recorded_at=at))
    return dict(id=cid, kind=kind, recorded_at=at)


def consent_made(rt: ServiceRuntime, user_id: str, consent_id: str) -> dict[str, Any]:
    """`record_consent`'s reply for a consent it recorded (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = uow.session.execute(
            select(consents).where(consents.c.id == consent_id, consents.c.user_id == user_id)
        ).first()
    if row is None:
        raise NotFound(f"no consent with id {consent_id}")
    return dict(id=row.id, kind=row.kind, recorded_at=row.recorded_at)


# --- firms ----------------------------------------------------------------------------------------------


def validate_city_code(code: str, field: str = "city_code") -> str:
    """GB/T 2260 code: the region table when it is installed (services.kernel.regions), else the 6-digit format."""
    try:
        from services.kernel.regions import validate_city_code as known
    except ImportError:  # pragma: no cover - the table module is optional
        if not (isinstance(code, str) and len(code) == 6 and code.isascii() and code.isdigit()):
            raise ValidationFailed.field(
                field, "must be a 6-digit administrative division code (GB/T 2260)"
            ) from None
        return code
    return known(code, field)


def _firm(s: Session, firm_id: str) -> Row:
    row = s.execute(select(firms).where(firms.c.id == firm_id)).first()
    if row is None:
        raise NotFound(f"no firm with id {firm_id}")
    return row


def _firm_reply(f: Row) -> dict[str, Any]:
    return dict(
        id=f.id,
        status=f.status,
        name=f.name,
        uscc=f.uscc,
        recycler_filing_no=f.recycler_filing_no,
        address=f.address,
        city_code=f.city_code,
        owner_user_id=f.owner_user_id,
        created_at=f.created_at,
    )


def register_firm(
    rt: ServiceRuntime, user_id: str, name: str, raw_uscc: str, filing_no: str, address: str, city_code: str
) -> dict[str, Any]:
    uscc, city_code = _collect(lambda: validate_uscc(raw_uscc), lambda: validate_city_code(city_code))
    try:
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            _user(s, user_id)
            dup = s.execute(select(firms.c.status).where(firms.c.uscc == uscc)).first()
            if dup is not None:
                raise Conflict(
                    "a firm with this 统一社会信用代码 is already registered", current_state=dup.status
                )
            fid, at = new_id("fm"), datetime.now(UTC)
            idempotency.made(fid)
            values = dict(
                id=fid,
                owner_user_id=user_id,
                name=name,
                uscc=uscc,
                recycler_filing_no=filing_no,
                address=address,
                city_code=city_code,
                status=model.PENDING,
                created_at=at,
            )
            s.execute(firms.insert().values(**values))
            uow.emit(
                FirmRegistered(
                    firm_id=fid,
                    owner_user_id=user_id,
                    name=name,
                    uscc=uscc,
                    recycler_filing_no=filing_no,
                    address=address,
                    city_code=city_code,
                    registered_at=at,
                )
            )
    except IntegrityError:
        raise Conflict(
            "a firm with this 统一社会信用代码 is already registered", current_state="pending"
        ) from None
    return _firm_reply(SimpleNamespace(**values))


def get_firm(rt: ServiceRuntime, firm_id: str, authorize: Authorize) -> dict[str, Any]:
    """A verified firm is public business data; until then only its owner (and admins) see it."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        f = _firm(uow.session, firm_id)
    if f.status != model.VERIFIED:
        authorize(f.owner_user_id, what="firm", admin_ok=True)
    return _firm_reply(f)


def add_qualification(
    rt: ServiceRuntime, firm_id: str, kind: str, number: str, valid_until: date, authorize: Authorize
) -> dict[str, Any]:
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        f = _firm(s, firm_id)
        authorize(f.owner_user_id, what="firm")
        if valid_until <= date.today():  # noqa: DTZ011 - the host's calendar date, as the form shows it
            raise RuleViolated(
                "the qualification has expired (valid_until must be in the future)",
                reason="qualification_expired",
                field="valid_until",
            )
        qid, at = new_id("ql"), datetime.now(UTC)
        idempotency.made(qid)
        s.execute(
            qualifications.insert().values(
                id=qid,
                firm_id=firm_id,
                kind=kind,
                number=number,
                valid_until=valid_until,
                status=model.PENDING,
                created_at=at,
            )
        )
    return dict(
        id=qid, status=model.PENDING, firm_id=firm_id, kind=kind, number=number, valid_until=valid_until
    )


def qualification_made(
    rt: ServiceRuntime, firm_id: str, qualification_id: str, authorize: Authorize
) -> dict[str, Any]:
    """`add_qualification`'s reply for the qualification it added (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        s = uow.session
        authorize(_firm(s, firm_id).owner_user_id, what="firm")
        q = s.execute(
            select(qualifications).where(
                qualifications.c.id == qualification_id, qualifications.c.firm_id == firm_id
            )
        ).first()
    if q is None:
        raise NotFound(f"no qualification with id {qualification_id}")
    return dict(
        id=q.id, status=q.status, firm_id=firm_id, kind=q.kind, number=q.number, valid_until=q.valid_until
    )


def add_accountant(
    rt: ServiceRuntime, firm_id: str, accountant_user_id: str, authorize: Authorize
) -> dict[str, Any]:
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        f = _firm(s, firm_id)
        by = authorize(f.owner_user_id, what="firm").user_id
        if f.status != model.VERIFIED:
            # else anyone could make themselves an accountant through a firm of their own making
            raise RuleViolated(
                "accountants are added to a verified firm only; this one is " + f.status,
                reason="firm_not_verified",
            )
        if s.execute(select(users.c.id).where(users.c.id == accountant_user_id)).first() is None:
            raise RuleViolated(
                f"no user with id {accountant_user_id}: they must log in once first",
                reason="unknown_user",
                field="user_id",
            )
        exists = s.execute(
            select(firm_accountants.c.user_id).where(
                firm_accountants.c.firm_id == firm_id, firm_accountants.c.user_id == accountant_user_id
            )
        ).first()
        idempotency.made(accountant_user_id)
        if exists is None:
            at = datetime.now(UTC)
            s.execute(
                firm_accountants.insert().values(
                    firm_id=firm_id, user_id=accountant_user_id, added_at=at, added_by=by
                )
            )
            uow.emit(AccountantAdded(firm_id=firm_id, user_id=accountant_user_id, added_at=at))
            _roles_changed(uow, accountant_user_id, _load_access(s, accountant_user_id))
    return dict(firm_id=firm_id, user_id=accountant_user_id, role="accountant")


def accountant_made(
    rt: ServiceRuntime, firm_id: str, accountant_user_id: str, authorize: Authorize
) -> dict[str, Any]:
    """`add_accountant`'s reply for the accountant it added (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        s = uow.session
        authorize(_firm(s, firm_id).owner_user_id, what="firm")
        found = s.execute(
            select(firm_accountants.c.user_id).where(
                firm_accountants.c.firm_id == firm_id, firm_accountants.c.user_id == accountant_user_id
            )
        ).first()
    if found is None:
        raise NotFound(f"user {accountant_user_id} is not an accountant of firm {firm_id}")
    return dict(firm_id=firm_id, user_id=accountant_user_id, role="accountant")


# --- collectors -----------------------------------------------------------------------------------------


def register_collector(
    rt: ServiceRuntime,
    user_id: str,
    raw_name: str,
    raw_id_number: str,
    firm_id: str,
    lat: float,
    lng: float,
    radius_km: float,
    categories: list[str],
) -> dict[str, Any]:
    from services.kernel.taxonomy import leaf

    max_km = _cfg(rt).collector_max_radius_km

    def radius() -> float:
        if radius_km > max_km:
            raise ValidationFailed.field("area.radius_km", f"at most {max_km:g} km")
        return radius_km

    name, id_number, _, *cats = _collect(
        lambda: validate_real_name(raw_name),
        lambda: validate_id_number(raw_id_number),
        radius,
        *[(lambda i=i, code=code: leaf(code, f"categories.{i}").code) for i, code in enumerate(categories)],
    )
    cats = list(dict.fromkeys(cats))
    c = _cipher(rt)
    idh = c.lookup_hash(id_number, "id_number")
    try:
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            u = _user(s, user_id)
            f = s.execute(select(firms.c.status).where(firms.c.id == firm_id)).first()
            if f is None or f.status != model.VERIFIED:
                raise RuleViolated(
                    "firm_id must name a verified recycling firm", reason="firm_not_verified", field="firm_id"
                )
            if u.identity_verified_at is not None and u.id_number_hash != idh:
                raise RuleViolated(
                    "the ID number differs from this account's verified identity",
                    reason="identity_mismatch",
                    field="id_number",
                )
            dup = s.execute(
                select(collectors.c.status).where(
                    collectors.c.user_id == user_id, collectors.c.firm_id == firm_id
                )
            ).first()
            if dup is not None:
                raise Conflict("you already applied as a collector for this firm", current_state=dup.status)
            cid, at = new_id("co"), datetime.now(UTC)
            idempotency.made(cid)
            name_masked, id_masked = pii.mask_name(name), pii.mask_id(id_number)
            s.execute(
                collectors.insert().values(
                    id=cid,
                    user_id=user_id,
                    firm_id=firm_id,
                    real_name_enc=c.encrypt(name),
                    name_masked=name_masked,
                    id_number_enc=c.encrypt(id_number),
                    id_number_hash=idh,
                    id_number_masked=id_masked,
                    lat=lat,
                    lng=lng,
                    radius_km=radius_km,
                    categories=json.dumps(cats),
                    status=model.PENDING,
                    created_at=at,
                )
            )
            uow.emit(
                CollectorRegistered(collector_id=cid, user_id=user_id, firm_id=firm_id, registered_at=at)
            )
    except IntegrityError:
        raise Conflict("you already applied as a collector for this firm", current_state="pending") from None
    return _collector_reply(cid, model.PENDING, firm_id, name_masked, id_masked, lat, lng, radius_km, cats)


def _collector_reply(
    cid: str,
    status: str,
    firm_id: str,
    name_masked: str,
    id_masked: str,
    lat: float,
    lng: float,
    radius_km: float,
    cats: list[str],
) -> dict[str, Any]:
    return dict(
        id=cid,
        status=status,
        firm_id=firm_id,
        name_masked=name_masked,
        id_number_masked=id_masked,
        area=dict(lat=lat, lng=lng, radius_km=radius_km),
        categories=cats,
    )


def collector_made(rt: ServiceRuntime, user_id: str, collector_id: str) -> dict[str, Any]:
    """`register_collector`'s reply for the application it recorded (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        c = uow.session.execute(
            select(collectors).where(collectors.c.id == collector_id, collectors.c.user_id == user_id)
        ).first()
    if c is None:
        raise NotFound(f"no collector application with id {collector_id}")
    cats = json.loads(c.categories)
    return _collector_reply(
        c.id, c.status, c.firm_id, c.name_masked, c.id_number_masked, c.lat, c.lng, c.radius_km, cats
    )


# --- admin ----------------------------------------------------------------------------------------------

_KIND_TABLES = {"firm": firms, "qualification": qualifications, "collector": collectors}


def decide(
    rt: ServiceRuntime, admin_id: str, kind: str, record_id: str, verdict: str, reason: str | None = None
) -> dict[str, Any]:
    """Approve (→ verified, with its events) or reject (→ rejected) a pending firm, qualification or collector."""
    table = _KIND_TABLES.get(kind)
    if table is None:
        raise NotFound(f"unknown verification kind {kind!r}; one of {sorted(_KIND_TABLES)}")
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        row = s.execute(select(table).where(table.c.id == record_id)).first()
        if row is None:
            raise NotFound(f"no {kind} with id {record_id}")
        new_status = model.VERIFIED if verdict == "approve" else model.REJECTED
        changes = model.approve(kind, row.status) if verdict == "approve" else model.reject(kind, row.status)
        if changes:
            at = datetime.now(UTC)
            moved = s.execute(
                update(table)
                .where(table.c.id == record_id, table.c.status == model.PENDING)
                .values(status=new_status, status_reason=reason, decided_at=at, decided_by=admin_id)
            ).rowcount
            if moved != 1:  # decided concurrently: report the state it is in now
                raise Conflict(
                    f"this {kind} was decided meanwhile",
                    current_state=s.execute(select(table.c.status).where(table.c.id == record_id)).scalar(),
                )
            if verdict == "approve":
                _on_approved(uow, kind, row, at)
    return dict(id=record_id, kind=kind, status=new_status)


def decided(rt: ServiceRuntime, kind: str, record_id: str) -> dict[str, Any]:
    """`decide`'s reply rebuilt: the record's status as it stands."""
    table = _KIND_TABLES.get(kind)
    if table is None:
        raise NotFound(f"unknown verification kind {kind!r}; one of {sorted(_KIND_TABLES)}")
    with UnitOfWork(rt.db, readonly=True) as uow:
        status = uow.session.execute(select(table.c.status).where(table.c.id == record_id)).scalar()
    if status is None:
        raise NotFound(f"no {kind} with id {record_id}")
    return dict(id=record_id, kind=kind, status=status)


def _on_approved(uow: UnitOfWork, kind: str, row: Row, at: datetime) -> None:
    s = uow.session
    if kind == "firm":
        uow.emit(
            FirmVerified(
                firm_id=row.id,
                owner_user_id=row.owner_user_id,
                name=row.name,
                uscc=row.uscc,
                address=row.address,
                city_code=row.city_code,
                verified_at=at,
            )
        )
        _roles_changed(uow, row.owner_user_id, _load_access(s, row.owner_user_id))
    elif kind == "qualification":
        uow.emit(
            QualificationApproved(
                firm_id=row.firm_id,
                qualification_id=row.id,
                kind=row.kind,
                number=row.number,
                valid_until=row.valid_until,
                approved_at=at,
            )
        )
    else:
        uow.emit(
            CollectorVerified(
                collector_id=row.id,
                user_id=row.user_id,
                firm_id=row.firm_id,
                name_masked=row.name_masked,
                lat=row.lat,
                lng=row.lng,
                radius_km=row.radius_km,
                categories=json.loads(row.categories),
                verified_at=at,
            )
        )
        _roles_changed(uow, row.user_id, _load_access(s, row.user_id))


def list_verifications(
    rt: ServiceRuntime, kind: str | None, status: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Records waiting for (or past) an admin's decision, oldest first; ids sort by creation time."""
    kinds = [kind] if kind else list(_KIND_TABLES)
    items: list[dict[str, Any]] = []
    with UnitOfWork(rt.db, readonly=True) as uow:
        for k in kinds:
            t = _KIND_TABLES[k]
            q = select(t).where(t.c.status == status)
            if cursor:
                q = q.where(t.c.id > cursor)
            for r in uow.session.execute(q.order_by(t.c.id).limit(limit + 1)).all():
                items.append(_verification_item(k, r))
    items.sort(key=lambda i: i["id"])
    page = items[:limit]
    return dict(items=page, next_cursor=page[-1]["id"] if len(items) > limit else None)


def _verification_item(kind: str, r: Row) -> dict[str, Any]:
    if kind == "firm":
        summary = f"{r.name} ({r.uscc}, {r.city_code})"
        firm_id = r.id
    elif kind == "qualification":
        summary = f"{r.kind} {r.number}, valid until {r.valid_until.isoformat()}"
        firm_id = r.firm_id
    else:
        summary = f"{r.name_masked} ({r.id_number_masked}), {r.radius_km:g} km around {r.lat:.4f},{r.lng:.4f}"
        firm_id = r.firm_id
    return dict(
        id=r.id, kind=kind, status=r.status, firm_id=firm_id, summary=summary, created_at=r.created_at
    )


def change_roles(
    rt: ServiceRuntime, admin_id: str, user_id: str, grant: list[str], revoke: list[str]
) -> dict[str, Any]:
    grant = validate_grant(grant, "roles")
    revoke = validate_grant(revoke, "revoke")
    both = set(grant) & set(revoke)
    if both:
        raise ValidationFailed.field("revoke", f"both granted and revoked: {sorted(both)}")
    if user_id == admin_id:
        # a token must never widen (or re-grant) its own holder's power: another admin decides
        raise Forbidden("nobody changes their own roles; ask another admin", reason="self_role_change")
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        _user(s, user_id)
        before = _load_access(s, user_id)
        have = set(s.execute(select(user_roles.c.role).where(user_roles.c.user_id == user_id)).scalars())
        at = datetime.now(UTC)
        for r in grant:
            if r not in have:
                s.execute(
                    user_roles.insert().values(user_id=user_id, role=r, granted_at=at, granted_by=admin_id)
                )
        if revoke:
            s.execute(
                delete(user_roles).where(and_(user_roles.c.user_id == user_id, user_roles.c.role.in_(revoke)))
            )
        after = _load_access(s, user_id)
        if after != before:
            _roles_changed(uow, user_id, after)
        if not (before.roles <= after.roles and before.firm_roles <= after.firm_roles):
            _revoke_tokens(s, user_id)  # power taken away: the tokens that carry it stop working now
        version = _token_version(s, user_id)
    _publish_version(rt, user_id, version)  # also on a repeat: puts a change in force that missed the store
    return dict(user_id=user_id, roles=sorted(after.roles), firm_ids=sorted(after.firm_ids))


def roles_as_they_stand(rt: ServiceRuntime, user_id: str) -> dict[str, Any]:
    """`change_roles`' reply rebuilt: the user's roles as they stand, the token version put in force again."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        _user(uow.session, user_id)
        access = _load_access(uow.session, user_id)
    _put_in_force(rt, user_id)
    return dict(user_id=user_id, roles=sorted(access.roles), firm_ids=sorted(access.firm_ids))


def suspension_as_it_stands(rt: ServiceRuntime, user_id: str) -> dict[str, Any]:
    """`suspend_user`'s and `reinstate_user`'s reply rebuilt, the token version put in force again."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        u = _user(uow.session, user_id)
    _put_in_force(rt, user_id)
    return _suspension_reply(u)


def suspend_user(rt: ServiceRuntime, admin_id: str, user_id: str, reason: str) -> dict[str, Any]:
    """Suspend an account: its tokens stop working on their next request, it cannot log in or refresh."""
    if user_id == admin_id:
        raise Forbidden("nobody suspends their own account", reason="self_suspend")
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        u = _user(s, user_id)
        if u.suspended_at is None:
            s.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(suspended_at=datetime.now(UTC), suspended_by=admin_id, suspended_reason=reason)
            )
            _revoke_tokens(s, user_id)
            _revoke_refresh_tokens(s, user_id)
        version = _token_version(s, user_id)
        u = _user(s, user_id)
    _publish_version(rt, user_id, version)
    return _suspension_reply(u)


def reinstate_user(rt: ServiceRuntime, admin_id: str, user_id: str) -> dict[str, Any]:
    """Lift a suspension: the user logs in again (old tokens stay revoked)."""
    if user_id == admin_id:
        raise Forbidden("nobody lifts their own suspension", reason="self_suspend")
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        _user(s, user_id)
        s.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(suspended_at=None, suspended_by=admin_id, suspended_reason=None)
        )
        u = _user(s, user_id)
    return _suspension_reply(u)


def _suspension_reply(u: Row) -> dict[str, Any]:
    return dict(
        user_id=u.id,
        suspended=u.suspended_at is not None,
        suspended_at=u.suspended_at,
        reason=u.suspended_reason,
    )


def purge_expired(rt: ServiceRuntime, now_ms: int | None = None) -> int:
    """Housekeeping (a daily job): delete login codes older than both their lifetime and the per-phone window,
    and refresh tokens past their expiry (a revoked family no longer matters once its tokens are dead)."""
    cfg = _cfg(rt)
    now = _ms() if now_ms is None else now_ms
    keep_ms = max(cfg.otp_ttl_s, cfg.otp_per_phone_window_s) * 1000
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        n = s.execute(delete(otp_codes).where(otp_codes.c.created_at_ms < now - keep_ms)).rowcount
        n += s.execute(delete(refresh_tokens).where(refresh_tokens.c.expires_at_ms < now)).rowcount
    return n
