"""The wipe service's use cases: tools, reports → certificates, secondary verification, revocation, blocklist.

Each runs in one unit of work; events go through the outbox in the same transaction (`uow.emit`). Decisions are
the domain's (`domain/policy.py`); this module reads and writes the tables around them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select, text, update
from sqlalchemy.exc import IntegrityError

from services.contracts.wipe import CertificateIssued, CertificateRevoked, device_key
from services.kernel import idempotency
from services.kernel.checkdigits import validate_imei
from services.kernel.db import UnitOfWork
from services.kernel.errors import NotFound, RuleViolated, ValidationFailed
from services.kernel.ids import new_id
from services.kernel.pii import decrypt, encrypt, mask_device_id

from .domain.certificate import (
    CONTRACT_KIND,
    device_keys,
    drawn_for_secondary,
    report_digest,
)
from .domain.nwipe import parse_nwipe_log
from .domain.policy import WipePolicy, decide, secondary_check
from .domain.report import MalformedReport, Report, parse_json_report
from .domain.signing import BadKey, key_fingerprint, parse_public_key, signature_valid
from .settings import policy_of, settings_of
from .store import (
    attempts,
    blocklist,
    certificate_devices,
    certificates,
    evidence,
    revocations,
    secondary_checks,
    tools,
)

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime


class WipeRefused(RuleViolated):
    """422 with `reason` (WIPE.md) and, when a report breaks several rules, all of them in `refusals`."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        refusals: list[dict[str, Any]] | None = None,
        errors: list[dict[str, str]] | None = None,
    ):
        super().__init__(detail, reason=reason)
        if refusals:
            self.extra["refusals"] = refusals
        if errors:
            self.errors = errors


# --- tools ---------------------------------------------------------------------------------------------------


def register_tool(rt: ServiceRuntime, admin_id: str, name: str, public_key: str) -> dict[str, Any]:
    try:
        raw = parse_public_key(public_key)
    except BadKey as exc:
        raise ValidationFailed.field("public_key", str(exc)) from None
    key_b64 = base64.b64encode(raw).decode()
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        if s.execute(select(tools.c.id).where(tools.c.public_key == key_b64)).first():
            raise RuleViolated(
                "a tool with this public key is registered already",
                reason="duplicate_key",
                field="public_key",
            )
        row = dict(
            id=idempotency.made(new_id("wt")),
            name=name,
            public_key=key_b64,
            fingerprint=key_fingerprint(raw),
            created_at=datetime.now(UTC),
            created_by=admin_id,
        )
        s.execute(tools.insert().values(**row))
    return _tool_out(row)


def tool_registered(rt: ServiceRuntime, tool_id: str) -> dict[str, Any]:
    """`register_tool`'s reply for the tool it registered (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = uow.session.execute(select(tools).where(tools.c.id == tool_id)).mappings().first()
    if row is None:
        raise NotFound(f"no erasure tool with id {tool_id}")
    return _tool_out(dict(row))


def revoke_tool(rt: ServiceRuntime, admin_id: str, tool_id: str) -> dict[str, Any]:
    """Revoke a tool's key: its reports are refused from now on and (by default) its certificates revoked."""
    now = datetime.now(UTC)
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        _serialise(uow)
        row = s.execute(select(tools).where(tools.c.id == tool_id).with_for_update()).mappings().first()
        if row is None:
            raise NotFound(f"no erasure tool with id {tool_id}")
        if row["revoked_at"] is None:
            s.execute(update(tools).where(tools.c.id == tool_id).values(revoked_at=now, revoked_by=admin_id))
        revoked = 0
        if settings_of(rt).revoke_certificates_with_tool:
            ids = (
                s.execute(
                    select(certificates.c.id).where(
                        certificates.c.tool_id == tool_id,
                        ~exists().where(revocations.c.certificate_id == certificates.c.id),
                    )
                )
                .scalars()
                .all()
            )
            for cid in ids:
                revoked += _revoke(
                    uow, cid, "tool_revoked", f"the erasure tool {tool_id} was revoked", admin_id, now
                )
        row = s.execute(select(tools).where(tools.c.id == tool_id)).mappings().one()
        idempotency.made(str(revoked))  # what this request revoked, which the tool's row does not say
    return _tool_out(dict(row)) | {"certificates_revoked": revoked}


def tool_revoked(rt: ServiceRuntime, tool_id: str, revoked: int) -> dict[str, Any]:
    """`revoke_tool`'s reply rebuilt (lost after the commit): the tool as it stands, and what the request revoked."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = uow.session.execute(select(tools).where(tools.c.id == tool_id)).mappings().first()
    if row is None:
        raise NotFound(f"no erasure tool with id {tool_id}")
    return _tool_out(dict(row)) | {"certificates_revoked": revoked}


def list_tools(rt: ServiceRuntime) -> list[dict[str, Any]]:
    with UnitOfWork(rt.db, readonly=True) as uow:
        rows = uow.session.execute(select(tools).order_by(tools.c.created_at)).mappings().all()
    return [_tool_out(dict(r)) for r in rows]


def _tool_out(row: dict[str, Any]) -> dict[str, Any]:
    revoked_at = row.get("revoked_at")
    return {
        "id": row["id"],
        "name": row["name"],
        "public_key": row["public_key"],
        "fingerprint": row["fingerprint"],
        "created_at": row["created_at"],
        "status": "revoked" if revoked_at else "active",
        "revoked_at": revoked_at if revoked_at else None,
    }


@dataclass(frozen=True)
class _Tool:
    id: str
    public_key: bytes
    fingerprint: str
    revoked: bool


def _tool(uow: UnitOfWork, tool_id: str) -> _Tool | None:
    row = uow.session.execute(select(tools).where(tools.c.id == tool_id)).mappings().first()
    if row is None:
        return None
    return _Tool(
        row["id"], base64.b64decode(row["public_key"]), row["fingerprint"], row["revoked_at"] is not None
    )


# --- reports → certificates ------------------------------------------------------------------------------------


def parse_report(policy: WipePolicy, fmt: str, text: str) -> Report:
    needing = frozenset(policy.device.kinds_needing_identity)
    if fmt == "json":
        return parse_json_report(text, needing)
    return parse_nwipe_log(text, policy.nwipe, needing)


def _malformed(exc: MalformedReport) -> WipeRefused:
    return WipeRefused(
        "malformed_report",
        f"the report cannot be read: {exc}",
        errors=[
            {"field": f"report.{f}" if f != "report" else "report", "message": m} for f, m in exc.problems
        ],
    )


def _check_tool(
    tool: _Tool | None, tool_id: str, report: str, signature: str, *, allow_revoked: bool = False
) -> _Tool:
    if tool is None:
        raise WipeRefused("unknown_tool", f"no erasure tool with id {tool_id} is registered")
    if not signature_valid(tool.public_key, report, signature):
        raise WipeRefused(
            "bad_signature",
            "the signature does not verify over the report with this tool's key "
            "(Ed25519 over the UTF-8 bytes of `report` exactly as sent)",
        )
    if tool.revoked and not allow_revoked:
        raise WipeRefused("tool_revoked", f"the erasure tool {tool_id} has been revoked")
    return tool


def submit_report(
    rt: ServiceRuntime,
    operator_id: str,
    tool_id: str,
    fmt: str,
    report: str,
    signature: str,
    *,
    now: datetime | None = None,
) -> tuple[dict[str, Any], bool]:
    """Check a signed report against the policy; issue its certificate (True) or return the one it already has
    (False). A refusal raises WipeRefused (422) naming the reason; every attempt is recorded."""
    now = now or datetime.now(UTC)
    policy = policy_of(rt)
    digest = report_digest(tool_id, report)
    try:
        with UnitOfWork(rt.db, readonly=True) as uow:
            tool = _check_tool(_tool(uow, tool_id), tool_id, report, signature, allow_revoked=True)
            existing = _certificate_by_digest(uow, digest)
        if existing is not None:
            idempotency.made(f"200 {existing['certificate_id']}")  # what the reply is rebuilt from
            _record_attempt(
                rt, operator_id, tool_id, fmt, digest, "replayed", None, None, existing["certificate_id"]
            )
            return existing, False
        if tool.revoked:
            raise WipeRefused("tool_revoked", f"the erasure tool {tool_id} has been revoked")
        try:
            parsed = parse_report(policy, fmt, report)
        except MalformedReport as exc:
            raise _malformed(exc) from None
        keys = device_keys(parsed)
        with UnitOfWork(rt.db, readonly=True) as uow:
            blocked = _blocklisted_any(uow, keys)
        refusals = decide(policy, parsed, now, blocklisted=blocked)
        if refusals:
            raise WipeRefused(
                refusals[0].reason,
                refusals[0].detail,
                refusals=[{"reason": r.reason, "detail": r.detail, "medium": r.medium} for r in refusals],
            )
    except WipeRefused as exc:
        _record_attempt(
            rt, operator_id, tool_id, fmt, digest, "refused", exc.extra.get("reason"), exc.detail, None
        )
        raise
    try:
        cert = _issue(rt, policy, operator_id, tool, fmt, report, signature, digest, parsed, keys, now)
    except WipeRefused as exc:
        _record_attempt(
            rt, operator_id, tool_id, fmt, digest, "refused", exc.extra.get("reason"), exc.detail, None
        )
        raise
    except IntegrityError:
        # the same report raced in on another request: it has its certificate now
        with UnitOfWork(rt.db, readonly=True) as uow:
            existing = _certificate_by_digest(uow, digest)
        if existing is None:
            raise
        return existing, False
    return cert, True


def report_certified(rt: ServiceRuntime, made: str) -> tuple[dict[str, Any], int]:
    """`submit_report`'s reply (and status) for the certificate it issued or found (its reply lost after the
    commit): `made` is "<status> <certificate id>"."""
    status, cert_id = made.split(" ", 1)
    with UnitOfWork(rt.db, readonly=True) as uow:
        if uow.session.execute(select(certificates.c.id).where(certificates.c.id == cert_id)).first() is None:
            raise NotFound(f"no certificate with id {cert_id}")
        return _certificate_summary(uow, cert_id), int(status)


def _issue(
    rt: ServiceRuntime,
    policy: WipePolicy,
    operator_id: str,
    tool: _Tool,
    fmt: str,
    report: str,
    signature: str,
    digest: str,
    parsed: Report,
    keys: list[str],
    now: datetime,
) -> dict[str, Any]:
    cert_id = new_id("wc")
    media = [
        {
            "type": m.type,
            "method": m.method,
            "passes": m.passes,
            "random_passes": m.random_passes,
            "serial_masked": mask_device_id(m.serial),
            "verification": None
            if m.verification is None
            else {
                "mode": m.verification.mode,
                "result": m.verification.result,
                "subsections": m.verification.subsections,
                "locations_per_subsection": m.verification.locations_per_subsection,
                "coverage_pct": m.verification.coverage_pct,
            },
        }
        for m in parsed.media
    ]
    d = parsed.device
    retained = _years_after(now.date(), policy.certificates.retention_years)
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        # the tool and the list as they stand now, under the lock a revocation or a blocklisting takes: checked
        # before this transaction, either could have landed in between and missed this certificate
        _serialise(uow)
        if s.execute(select(tools.c.revoked_at).where(tools.c.id == tool.id)).scalar() is not None:
            raise WipeRefused("tool_revoked", f"the erasure tool {tool.id} has been revoked")
        if policy.device.refuse_blocklisted and _blocklisted_any(uow, keys):
            raise WipeRefused("device_blocklisted", "this device is on the lost/stolen list")
        idempotency.made(f"201 {cert_id}")
        s.execute(
            certificates.insert().values(
                id=cert_id,
                report_digest=digest,
                tool_id=tool.id,
                tool_fingerprint=tool.fingerprint,
                format=fmt,
                report_id=parsed.report_id,
                report_created_at=parsed.created_at,
                device_kind=d.kind,
                device_make=d.make,
                device_model=d.model,
                imei_masked=mask_device_id(d.imei),
                serial_masked=mask_device_id(d.serial),
                media_json=json.dumps(media, ensure_ascii=False),
                issued_at=now,
                issued_by=operator_id,
                retained_until=retained,
                secondary_required=drawn_for_secondary(cert_id, policy.secondary.share),
            )
        )
        s.execute(certificate_devices.insert(), [{"device_key": k, "certificate_id": cert_id} for k in keys])
        s.execute(
            evidence.insert().values(
                certificate_id=cert_id, report_enc=encrypt(rt.settings, report), signature=signature
            )
        )
        s.execute(
            attempts.insert().values(
                at=now,
                by=operator_id,
                tool_id=tool.id,
                format=fmt,
                report_digest=digest,
                outcome="certified",
                certificate_id=cert_id,
            )
        )
        first = parsed.media[0]
        uow.emit(
            CertificateIssued(
                certificate_id=cert_id,
                device_keys=keys,
                device_kind=CONTRACT_KIND[d.kind],
                media_type=first.type,
                method=first.method,
                tool_id=tool.id,
                issued_at=now,
            )
        )
        return _certificate_summary(uow, cert_id)


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return date(day.year + years, 3, 1)


def _record_attempt(
    rt: ServiceRuntime,
    by: str,
    tool_id: str,
    fmt: str,
    digest: str,
    outcome: str,
    reason: str | None,
    detail: str | None,
    certificate_id: str | None,
) -> None:
    with UnitOfWork(rt.db) as uow:
        uow.session.execute(
            attempts.insert().values(
                at=datetime.now(UTC),
                by=by,
                tool_id=tool_id[:40],
                format=fmt,
                report_digest=digest,
                outcome=outcome,
                reason=reason,
                detail=(detail or "")[:2000] or None,
                certificate_id=certificate_id,
            )
        )


def _certificate_by_digest(uow: UnitOfWork, digest: str) -> dict[str, Any] | None:
    cid = uow.session.execute(
        select(certificates.c.id).where(certificates.c.report_digest == digest)
    ).scalar()
    return None if cid is None else _certificate_summary(uow, cid)


def _certificate_summary(uow: UnitOfWork, cert_id: str) -> dict[str, Any]:
    revoked = uow.session.execute(
        select(revocations.c.reason).where(revocations.c.certificate_id == cert_id)
    ).scalar()
    return {"certificate_id": cert_id, "status": "revoked" if revoked else "verified"}


# --- revocation ------------------------------------------------------------------------------------------------


def _revoke(uow: UnitOfWork, cert_id: str, reason: str, detail: str | None, by: str, now: datetime) -> int:
    """Revoke one certificate (once) and publish it; 1 if it was revoked now, 0 if it was already."""
    s = uow.session
    if s.execute(select(revocations.c.certificate_id).where(revocations.c.certificate_id == cert_id)).first():
        return 0
    s.execute(
        revocations.insert().values(
            certificate_id=cert_id, reason=reason, detail=detail, revoked_at=now, revoked_by=by
        )
    )
    keys = (
        s.execute(
            select(certificate_devices.c.device_key)
            .where(certificate_devices.c.certificate_id == cert_id)
            .order_by(certificate_devices.c.device_key)
        )
        .scalars()
        .all()
    )
    uow.emit(
        CertificateRevoked(certificate_id=cert_id, device_keys=list(keys), reason=reason, revoked_at=now)
    )
    return 1


def revoke_certificate(rt: ServiceRuntime, admin_id: str, cert_id: str, reason: str) -> dict[str, Any]:
    with UnitOfWork(rt.db) as uow:
        if uow.session.execute(select(certificates.c.id).where(certificates.c.id == cert_id)).first() is None:
            raise NotFound(f"no certificate with id {cert_id}")
        _revoke(uow, cert_id, "admin_decision", reason, admin_id, datetime.now(UTC))
    return certificate_view(rt, cert_id)


def blocklist_device(rt: ServiceRuntime, admin_id: str, imei: str) -> tuple[dict[str, Any], bool]:
    """Put a lost or stolen device on the list: it gets no certificate, and those it has are revoked."""
    imei = validate_imei(imei, "imei")
    key = device_key("imei", imei)
    now = datetime.now(UTC)
    with UnitOfWork(rt.db) as uow:
        s = uow.session
        _serialise(uow)
        created = (
            s.execute(select(blocklist.c.device_key).where(blocklist.c.device_key == key)).first() is None
        )
        if created:
            s.execute(
                blocklist.insert().values(
                    device_key=key, imei_masked=mask_device_id(imei), added_at=now, added_by=admin_id
                )
            )
        ids = (
            s.execute(
                select(certificate_devices.c.certificate_id)
                .where(certificate_devices.c.device_key.in_(_same_device(uow, [key])))
                .distinct()
                .order_by(certificate_devices.c.certificate_id)
            )
            .scalars()
            .all()
        )
        revoked = sum(
            _revoke(uow, cid, "device_blocklisted", "the device was reported lost or stolen", admin_id, now)
            for cid in ids
        )
        idempotency.made(f"{201 if created else 200} {revoked}")  # what the reply is rebuilt from
    return _blocklisted(imei, key, revoked), created


def _serialise(uow: UnitOfWork) -> None:
    """Issuing a certificate, revoking a tool and blocklisting a device take turns: each reads what the others
    write (a tool's revocation, the list, the certificates to revoke). SQLite's write transactions already do
    (BEGIN IMMEDIATE); on PostgreSQL a transaction-scoped advisory lock. Certificates come at the pace of erasure
    stations, so one lock costs nothing that matters."""
    if uow.session.get_bind().dialect.name == "postgresql":
        uow.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('wipe:certificates'))"))


def _same_device(uow: UnitOfWork, keys: list[str]) -> set[str]:
    """`keys` and every key a certificate named together with one of them: the same device's other identifiers
    (its serial, its media's serials). The list is kept by IMEI; without this a listed phone's report that leaves
    its IMEI out would name only identifiers the list does not hold."""
    if not keys:
        return set()
    sharing = select(certificate_devices.c.certificate_id).where(certificate_devices.c.device_key.in_(keys))
    linked = uow.session.execute(
        select(certificate_devices.c.device_key).where(certificate_devices.c.certificate_id.in_(sharing))
    ).scalars()
    return set(keys) | set(linked)


def _blocklisted_any(uow: UnitOfWork, keys: list[str]) -> bool:
    """Whether the device these keys name is on the lost/stolen list, by any of its known identifiers."""
    known = _same_device(uow, keys)
    return (
        bool(known)
        and uow.session.execute(
            select(blocklist.c.device_key).where(blocklist.c.device_key.in_(known))
        ).first()
        is not None
    )


def _blocklisted(imei: str, key: str, revoked: int) -> dict[str, Any]:
    return {
        "imei_masked": mask_device_id(imei),
        "device_key": key,
        "blocklisted": True,
        "certificates_revoked": revoked,
    }


def device_blocklisted(rt: ServiceRuntime, imei: str, made: str) -> tuple[dict[str, Any], int]:
    """`blocklist_device`'s reply (and status) for a device it listed (its reply lost after the commit): `made`
    is "<status> <certificates it revoked>"."""
    imei = validate_imei(imei, "imei")
    key = device_key("imei", imei)
    status, revoked = made.split(" ", 1)
    with UnitOfWork(rt.db, readonly=True) as uow:
        if (
            uow.session.execute(select(blocklist.c.device_key).where(blocklist.c.device_key == key)).first()
            is None
        ):
            raise NotFound("this device is not on the list")
    return _blocklisted(imei, key, int(revoked)), int(status)


# --- secondary verification ------------------------------------------------------------------------------------


def secondary_verification(
    rt: ServiceRuntime,
    operator_id: str,
    cert_id: str,
    tool_id: str,
    fmt: str,
    report: str,
    signature: str,
    *,
    now: datetime | None = None,
) -> tuple[dict[str, Any], bool]:
    """Another registered tool re-verifies a certified device. A failure revokes the certificate (an event)."""
    now = now or datetime.now(UTC)
    policy = policy_of(rt)
    digest = report_digest(tool_id, report)
    with UnitOfWork(rt.db, readonly=True) as uow:
        s = uow.session
        cert = s.execute(select(certificates).where(certificates.c.id == cert_id)).mappings().first()
        if cert is None:
            raise NotFound(f"no certificate with id {cert_id}")
        tool = _check_tool(_tool(uow, tool_id), tool_id, report, signature)
        done = (
            s.execute(
                select(secondary_checks).where(
                    secondary_checks.c.certificate_id == cert_id, secondary_checks.c.report_digest == digest
                )
            )
            .mappings()
            .first()
        )
        if done is not None:
            return _secondary_out(uow, dict(done)), False
        cert_keys = set(
            s.execute(
                select(certificate_devices.c.device_key).where(
                    certificate_devices.c.certificate_id == cert_id
                )
            ).scalars()
        )
    if tool.id == cert["tool_id"]:
        raise WipeRefused(
            "same_tool", "secondary verification needs a different tool from the one that erased"
        )
    try:
        parsed = parse_report(policy, fmt, report)
    except MalformedReport as exc:
        raise _malformed(exc) from None
    if not cert_keys & set(device_keys(parsed)) or _names_another(cert, cert_keys, parsed):
        raise WipeRefused("device_mismatch", "the report names another device than the certificate")
    if now - parsed.created_at > _max_age(policy):
        raise WipeRefused("report_too_old", f"the report is older than {policy.report.max_age_days} days")
    media = json.loads(cert["media_json"])
    # the certificate keeps masked serials only: match the report's media by the device keys of their serials
    certified = [m for m in parsed.media if m.serial and device_key("serial", m.serial) in cert_keys]
    outcome, detail = secondary_check(policy, parsed, [m.serial for m in certified])
    if outcome == "passed" and len(certified) < sum(1 for m in media if m.get("serial_masked")):
        outcome, detail = "verification_insufficient", "not every certified medium is in this report"
    if outcome == "verification_insufficient":
        raise WipeRefused("verification_insufficient", detail)
    with UnitOfWork(rt.db) as uow:
        row = dict(
            id=idempotency.made(new_id("ws")),
            certificate_id=cert_id,
            tool_id=tool.id,
            report_digest=digest,
            outcome=outcome,
            detail=detail or None,
            report_enc=encrypt(rt.settings, report),
            signature=signature,
            checked_at=now,
            checked_by=operator_id,
        )
        uow.session.execute(secondary_checks.insert().values(**row))
        if outcome == "failed":
            _revoke(uow, cert_id, "secondary_verification_failed", detail, operator_id, now)
        return _secondary_out(uow, row), True


def _names_another(cert: Any, cert_keys: set[str], parsed: Report) -> bool:
    """A report sharing a storage serial with the certificate but naming another IMEI or device serial than the
    certificate's is another device (its storage moved, or a mistake): it must neither pass nor revoke it."""
    d = parsed.device
    return bool(
        (d.imei and cert["imei_masked"] and device_key("imei", d.imei) not in cert_keys)
        or (d.serial and cert["serial_masked"] and device_key("serial", d.serial) not in cert_keys)
    )


def secondary_checked(rt: ServiceRuntime, cert_id: str, check_id: str) -> dict[str, Any]:
    """`secondary_verification`'s reply for the check it recorded (its reply lost after the commit)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = (
            uow.session.execute(
                select(secondary_checks).where(
                    secondary_checks.c.id == check_id, secondary_checks.c.certificate_id == cert_id
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"no secondary check with id {check_id}")
        return _secondary_out(uow, dict(row))


def _max_age(policy: WipePolicy):  # noqa: ANN202
    from datetime import timedelta

    return timedelta(days=policy.report.max_age_days)


def _secondary_out(uow: UnitOfWork, row: dict[str, Any]) -> dict[str, Any]:
    summary = _certificate_summary(uow, row["certificate_id"])
    return {
        "id": row["id"],
        "certificate_id": row["certificate_id"],
        "tool_id": row["tool_id"],
        "outcome": row["outcome"],
        "detail": row["detail"],
        "checked_at": row["checked_at"],
        "certificate_status": summary["status"],
    }


def pending_secondary(rt: ServiceRuntime, limit: int) -> list[dict[str, Any]]:
    """Certificates drawn for secondary verification that no other tool has settled yet (oldest first)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        rows = (
            uow.session.execute(
                select(
                    certificates.c.id,
                    certificates.c.tool_id,
                    certificates.c.device_kind,
                    certificates.c.issued_at,
                )
                .where(
                    certificates.c.secondary_required.is_(True),
                    ~exists().where(secondary_checks.c.certificate_id == certificates.c.id),
                    ~exists().where(revocations.c.certificate_id == certificates.c.id),
                )
                .order_by(certificates.c.issued_at)
                .limit(limit)
            )
            .mappings()
            .all()
        )
    return [
        {
            "certificate_id": r["id"],
            "tool_id": r["tool_id"],
            "device_kind": r["device_kind"],
            "issued_at": r["issued_at"],
        }
        for r in rows
    ]


# --- the public view -------------------------------------------------------------------------------------------


def certificate_view(rt: ServiceRuntime, cert_id: str) -> dict[str, Any]:
    """What anyone may see of a certificate: no personal data (identifiers masked, no operator)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        s = uow.session
        c = s.execute(select(certificates).where(certificates.c.id == cert_id)).mappings().first()
        if c is None:
            raise NotFound(f"no certificate with id {cert_id}")
        rev = s.execute(select(revocations).where(revocations.c.certificate_id == cert_id)).mappings().first()
        checks = s.execute(
            select(secondary_checks.c.outcome, secondary_checks.c.checked_at)
            .where(secondary_checks.c.certificate_id == cert_id)
            .order_by(secondary_checks.c.checked_at)
        ).all()
        tool = s.execute(select(tools.c.name).where(tools.c.id == c["tool_id"])).scalar()
    if checks:
        secondary = "failed" if any(o == "failed" for o, _ in checks) else "passed"
    else:
        secondary = "pending" if c["secondary_required"] else "not_drawn"
    return {
        "id": c["id"],
        "device": {
            "kind": c["device_kind"],
            "make": c["device_make"],
            "model": c["device_model"],
            "imei_masked": c["imei_masked"],
            "serial_masked": c["serial_masked"],
        },
        "media": json.loads(c["media_json"]),
        "issued_at": c["issued_at"],
        "report_created_at": c["report_created_at"],
        "format": c["format"],
        "tool": {"id": c["tool_id"], "name": tool, "fingerprint": c["tool_fingerprint"]},
        "valid": rev is None,
        "revoked_reason": rev["reason"] if rev else None,
        "revoked_at": rev["revoked_at"] if rev else None,
        "secondary_verification": secondary,
        "retained_until": c["retained_until"],
    }


def evidence_report(rt: ServiceRuntime, cert_id: str) -> dict[str, Any]:
    """(admin) The signed report behind a certificate, decrypted, with its signature: re-verifiable offline."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = (
            uow.session.execute(
                select(evidence, certificates.c.tool_id, certificates.c.format)
                .join(certificates, certificates.c.id == evidence.c.certificate_id)
                .where(evidence.c.certificate_id == cert_id)
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"no certificate with id {cert_id}")
    return {
        "certificate_id": cert_id,
        "tool_id": row["tool_id"],
        "format": row["format"],
        "report": decrypt(rt.settings, row["report_enc"]),
        "signature": row["signature"],
    }
