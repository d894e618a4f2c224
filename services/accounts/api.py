"""Accounts routes: phone login (OTP), tokens, the user's identity and consents, firms, collectors, admin."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.kernel.http import Budget, Ctx, Reply, Router
from services.kernel.inputs import EntityId, Identifier, Name, Text

from . import handlers
from .domain.rules import CONSENT_KINDS

router = Router("accounts")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- models: auth -----------------------------------------------------------------------------------------


class OtpIn(_In):
    phone: str = Field(
        min_length=11,
        max_length=20,
        description="mainland mobile number, e.g. 13812345678",
        examples=["13812345678"],
    )


class OtpOut(BaseModel):
    status: Literal["sent"]
    phone_masked: str
    expires_in_s: int
    dev_code: str | None = Field(None, description="only in the dev environment (the embedded default)")


class TokenIn(_In):
    phone: str = Field(min_length=11, max_length=20)
    code: str = Field(min_length=4, max_length=8, pattern=r"^[0-9]+$")


class RefreshIn(_In):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_expires_in: int
    user_id: str
    roles: list[str]
    firm_ids: list[str]


def _tokens(sess: handlers.LoginSession) -> TokenOut:
    return TokenOut(
        access_token=sess.tokens.access_token,
        refresh_token=sess.tokens.refresh_token,
        token_type="bearer",
        expires_in=sess.tokens.access_expires_in,
        refresh_expires_in=sess.tokens.refresh_expires_in,
        user_id=sess.user_id,
        roles=sorted(sess.access.roles),
        firm_ids=sorted(sess.access.firm_ids),
    )


# SMS pumping: every code costs an SMS. Besides the per-phone limit (accounts), budgets per client address and
# for the whole platform (OTP_PER_CLIENT_LIMIT per 10 minutes, OTP_GLOBAL_LIMIT per minute), kept by the gateway.
OTP_BUDGETS = (
    Budget("otp", "client", "otp_per_client_limit", 600),
    Budget("otp", "global", "otp_global_limit", 60),
)


@router.post(
    "/v1/auth/otp",
    public=True,
    body=OtpIn,
    response=OtpOut,
    status=202,
    errors=(429, 503),
    budgets=OTP_BUDGETS,
)
async def request_otp(ctx: Ctx) -> Reply:
    """Send a one-time login code by SMS (the dev environment also returns it as dev_code)."""
    sent = await ctx.run(handlers.request_otp, ctx.runtime, ctx.body.phone)
    out = OtpOut(
        status="sent",
        phone_masked=sent.phone_masked,
        expires_in_s=sent.expires_in_s,
        dev_code=sent.code if ctx.runtime.settings.env == "dev" else None,
    )
    return Reply(out.model_dump(mode="json", exclude_none=True), status=202)


@router.post("/v1/auth/token", public=True, body=TokenIn, response=TokenOut)
async def issue_token(ctx: Ctx) -> TokenOut:
    """Log in with the phone number and its code: access and refresh tokens (the first login registers)."""
    return _tokens(await ctx.run(handlers.login, ctx.runtime, ctx.body.phone, ctx.body.code))


@router.post("/v1/auth/refresh", public=True, body=RefreshIn, response=TokenOut)
async def refresh_token(ctx: Ctx) -> TokenOut:
    """Exchange a refresh token (once) for a new pair carrying the current roles."""
    return _tokens(await ctx.run(handlers.refresh, ctx.runtime, ctx.body.refresh_token))


class LogoutOut(BaseModel):
    user_id: str
    status: Literal["logged_out"]


@router.post("/v1/auth/logout", authenticated=True, response=LogoutOut)
async def logout(ctx: Ctx) -> LogoutOut:
    """Log out everywhere: every access token stops working on its next request; every refresh token is revoked."""
    return LogoutOut(**await ctx.run(handlers.logout, ctx.runtime, ctx.user.user_id))


# --- models: the user -------------------------------------------------------------------------------------


class MeOut(BaseModel):
    user_id: str
    phone_masked: str
    roles: list[str]
    identity_verified: bool
    name_masked: str | None
    id_number_masked: str | None
    firm_ids: list[str]
    consents: list[str]


class IdentityIn(_In):
    real_name: str = Field(min_length=1, max_length=50)
    id_number: str = Field(
        min_length=18, max_length=18, description="居民身份证号码 (GB 11643), 18 characters"
    )


class IdentityOut(BaseModel):
    user_id: str
    identity_verified: bool
    name_masked: str
    id_number_masked: str
    verified_at: datetime


class ConsentIn(_In):
    kind: Literal[CONSENT_KINDS]  # type: ignore[valid-type]


class ConsentOut(BaseModel):
    id: str
    kind: str
    recorded_at: datetime


@router.get("/v1/me", authenticated=True, response=MeOut)
async def get_me(ctx: Ctx) -> MeOut:
    """The signed-in user: masked phone, current roles, identity status."""
    return MeOut(**await ctx.run(handlers.me, ctx.runtime, ctx.user.user_id))


@router.post("/v1/me/identity", authenticated=True, body=IdentityIn, response=IdentityOut)
async def verify_identity(ctx: Ctx) -> IdentityOut:
    """实名: record the resident's real name and 身份证号 (checked, stored encrypted, shown masked)."""
    return IdentityOut(
        **await ctx.run(
            handlers.verify_identity, ctx.runtime, ctx.user.user_id, ctx.body.real_name, ctx.body.id_number
        )
    )


@router.post("/v1/me/consents", authenticated=True, body=ConsentIn, response=ConsentOut, status=201)
async def record_consent(ctx: Ctx) -> ConsentOut:
    """Agree to reverse invoicing (反向开票) and to the firm filing tax on your behalf (代办)."""
    return ConsentOut(**await ctx.run(handlers.record_consent, ctx.runtime, ctx.user.user_id, ctx.body.kind))


@router.replay_of(record_consent)
async def record_consent_replayed(ctx: Ctx, made: str) -> ConsentOut:
    return ConsentOut(**await ctx.run(handlers.consent_made, ctx.runtime, ctx.user.user_id, made))


# --- models: firms and collectors -----------------------------------------------------------------------


class FirmIn(_In):
    name: Name = Field(min_length=1, max_length=200)
    uscc: str = Field(min_length=18, max_length=18, description="统一社会信用代码 (GB 32100)")
    recycler_filing_no: Identifier = Field(
        min_length=1, max_length=64, description="再生资源回收经营者备案号"
    )
    address: Text = Field(min_length=1, max_length=300)
    city_code: str = Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$", description="GB/T 2260 code")


class FirmOut(BaseModel):
    id: str
    status: Literal["pending", "verified", "rejected"]
    name: str
    uscc: str
    recycler_filing_no: str
    address: str
    city_code: str
    owner_user_id: str
    created_at: datetime


class QualificationIn(_In):
    kind: Literal["recycler_filing", "hazardous_waste", "elv"]
    number: Identifier = Field(min_length=1, max_length=64)
    valid_until: date


class QualificationOut(BaseModel):
    id: str
    status: Literal["pending", "verified", "rejected"]
    firm_id: str
    kind: str
    number: str
    valid_until: date


class AccountantIn(_In):
    user_id: EntityId = Field(description="a user of the platform (they logged in once)")


class AccountantOut(BaseModel):
    firm_id: str
    user_id: str
    role: Literal["accountant"]


class Area(_In):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    radius_km: float = Field(gt=0, le=1000)


class CollectorIn(_In):
    real_name: str = Field(min_length=1, max_length=50)
    id_number: str = Field(min_length=18, max_length=18)
    firm_id: EntityId = Field(description="the verified firm the collector buys for")
    area: Area
    categories: list[str] = Field(min_length=1, max_length=100, description="taxonomy leaf codes")


class AreaOut(BaseModel):
    lat: float
    lng: float
    radius_km: float


class CollectorOut(BaseModel):
    id: str
    status: Literal["pending", "verified", "rejected"]
    firm_id: str
    name_masked: str
    id_number_masked: str
    area: AreaOut
    categories: list[str]


@router.post("/v1/firms", authenticated=True, body=FirmIn, response=FirmOut, status=201)
async def register_firm(ctx: Ctx) -> FirmOut:
    """Register a recycling firm (pending until an admin verifies it); the caller becomes its owner."""
    b = ctx.body
    return FirmOut(
        **await ctx.run(
            handlers.register_firm,
            ctx.runtime,
            ctx.user.user_id,
            b.name,
            b.uscc,
            b.recycler_filing_no,
            b.address,
            b.city_code,
        )
    )


@router.replay_of(register_firm)
async def register_firm_replayed(ctx: Ctx, made: str) -> FirmOut:
    return FirmOut(**await ctx.run(handlers.get_firm, ctx.runtime, made, ctx.require_owner))


@router.get("/v1/firms/{id}", authenticated=True, response=FirmOut, owner="firm")
async def get_firm(ctx: Ctx) -> FirmOut:
    """A firm's registration (public business data once verified; until then its owner's and admins') and status."""
    return FirmOut(**await ctx.run(handlers.get_firm, ctx.runtime, ctx.params["id"], ctx.require_owner))


@router.post(
    "/v1/firms/{id}/qualifications",
    authenticated=True,
    body=QualificationIn,
    response=QualificationOut,
    status=201,
    owner="firm",
    example={"kind": "recycler_filing", "number": "京商备2024001", "valid_until": "2099-12-31"},
)
async def add_qualification(ctx: Ctx) -> QualificationOut:
    """(firm owner) Submit a qualification (recycler_filing | hazardous_waste | elv) for verification."""
    b = ctx.body
    return QualificationOut(
        **await ctx.run(
            handlers.add_qualification,
            ctx.runtime,
            ctx.params["id"],
            b.kind,
            b.number,
            b.valid_until,
            ctx.require_owner,
        )
    )


@router.replay_of(add_qualification)
async def add_qualification_replayed(ctx: Ctx, made: str) -> QualificationOut:
    return QualificationOut(
        **await ctx.run(handlers.qualification_made, ctx.runtime, ctx.params["id"], made, ctx.require_owner)
    )


@router.post(
    "/v1/firms/{id}/accountants",
    authenticated=True,
    body=AccountantIn,
    response=AccountantOut,
    status=201,
    owner="firm",
    example={"user_id": "us_0190f0c2a1b27c3d8e9f0a1b2c3d4e5f"},
)
async def add_accountant(ctx: Ctx) -> AccountantOut:
    """(firm owner) Make a user the firm's accountant (role accountant, the firm in their firm_ids)."""
    return AccountantOut(
        **await ctx.run(
            handlers.add_accountant, ctx.runtime, ctx.params["id"], ctx.body.user_id, ctx.require_owner
        )
    )


@router.replay_of(add_accountant)
async def add_accountant_replayed(ctx: Ctx, made: str) -> AccountantOut:
    return AccountantOut(
        **await ctx.run(handlers.accountant_made, ctx.runtime, ctx.params["id"], made, ctx.require_owner)
    )


@router.post("/v1/collectors", authenticated=True, body=CollectorIn, response=CollectorOut, status=201)
async def register_collector(ctx: Ctx) -> CollectorOut:
    """Apply as a collector (回收员) buying for a verified firm, in an area and for some categories."""
    b = ctx.body
    return CollectorOut(
        **await ctx.run(
            handlers.register_collector,
            ctx.runtime,
            ctx.user.user_id,
            b.real_name,
            b.id_number,
            b.firm_id,
            b.area.lat,
            b.area.lng,
            b.area.radius_km,
            b.categories,
        )
    )


@router.replay_of(register_collector)
async def register_collector_replayed(ctx: Ctx, made: str) -> CollectorOut:
    return CollectorOut(**await ctx.run(handlers.collector_made, ctx.runtime, ctx.user.user_id, made))


# --- admin ------------------------------------------------------------------------------------------------


class VerificationOut(BaseModel):
    id: str
    kind: Literal["collector", "firm", "qualification"]
    status: Literal["pending", "verified", "rejected"]


class RejectIn(_In):
    reason: Text = Field(min_length=1, max_length=300)


class VerificationsQuery(BaseModel):
    kind: Literal["collector", "firm", "qualification"] | None = None
    status: Literal["pending", "verified", "rejected"] = "pending"
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=40)


class VerificationItem(BaseModel):
    id: str
    kind: Literal["collector", "firm", "qualification"]
    status: Literal["pending", "verified", "rejected"]
    firm_id: str
    summary: str
    created_at: datetime


class VerificationPage(BaseModel):
    items: list[VerificationItem]
    next_cursor: str | None


class RolesIn(_In):
    roles: list[str] = Field(
        max_length=10, description="roles to grant: accountant, erasure_operator, admin, regulator"
    )
    revoke: list[str] = Field(default_factory=list, max_length=10, description="roles to take away")


class RolesOut(BaseModel):
    user_id: str
    roles: list[str]
    firm_ids: list[str]


@router.get("/v1/admin/verifications", roles={"admin"}, query=VerificationsQuery, response=VerificationPage)
async def list_verifications(ctx: Ctx) -> VerificationPage:
    """(admin) Firms, qualifications and collectors by status (pending first of all), oldest first."""
    q = ctx.query
    return VerificationPage(
        **await ctx.run(handlers.list_verifications, ctx.runtime, q.kind, q.status, q.limit, q.cursor)
    )


@router.post(
    "/v1/admin/verifications/{kind}/{id}/approve",
    roles={"admin"},
    response=VerificationOut,
    not_owned="an admin decides on anyone's application",
)
async def approve(ctx: Ctx) -> VerificationOut:
    """(admin) Verify a firm, qualification or collector; the user holds the firm/collector role from then on."""
    return VerificationOut(
        **await ctx.run(
            handlers.decide, ctx.runtime, ctx.user.user_id, ctx.params["kind"], ctx.params["id"], "approve"
        )
    )


@router.post(
    "/v1/admin/verifications/{kind}/{id}/reject",
    roles={"admin"},
    body=RejectIn,
    response=VerificationOut,
    not_owned="an admin decides on anyone's application",
)
async def reject(ctx: Ctx) -> VerificationOut:
    """(admin) Refuse a pending firm, qualification or collector, with the reason."""
    return VerificationOut(
        **await ctx.run(
            handlers.decide,
            ctx.runtime,
            ctx.user.user_id,
            ctx.params["kind"],
            ctx.params["id"],
            "reject",
            ctx.body.reason,
        )
    )


@router.post(
    "/v1/admin/users/{id}/roles",
    roles={"admin"},
    body=RolesIn,
    response=RolesOut,
    not_owned="an admin manages any other user (never themselves)",
)
async def change_roles(ctx: Ctx) -> RolesOut:
    """(admin) Grant (and optionally revoke) accountant, erasure_operator, admin, regulator — never one's own. Revoking
    stops the user's current tokens on their next request (they refresh to get the roles as they are now)."""
    return RolesOut(
        **await ctx.run(
            handlers.change_roles,
            ctx.runtime,
            ctx.user.user_id,
            ctx.params["id"],
            ctx.body.roles,
            ctx.body.revoke,
        )
    )


class SuspendIn(_In):
    reason: Text = Field(min_length=1, max_length=300)


class SuspensionOut(BaseModel):
    user_id: str
    suspended: bool
    suspended_at: datetime | None
    reason: str | None


@router.post(
    "/v1/admin/users/{id}/suspend",
    roles={"admin"},
    body=SuspendIn,
    response=SuspensionOut,
    not_owned="an admin manages any other user (never themselves)",
)
async def suspend_user(ctx: Ctx) -> SuspensionOut:
    """(admin) Suspend an account: its tokens stop working on their next request; no login or refresh."""
    return SuspensionOut(
        **await ctx.run(
            handlers.suspend_user, ctx.runtime, ctx.user.user_id, ctx.params["id"], ctx.body.reason
        )
    )


@router.post(
    "/v1/admin/users/{id}/reinstate",
    roles={"admin"},
    response=SuspensionOut,
    not_owned="an admin manages any other user (never themselves)",
)
async def reinstate_user(ctx: Ctx) -> SuspensionOut:
    """(admin) Lift a suspension: the user may log in again."""
    return SuspensionOut(
        **await ctx.run(handlers.reinstate_user, ctx.runtime, ctx.user.user_id, ctx.params["id"])
    )


# --- replies rebuilt for a retry whose reply was lost after the commit (services/kernel/idempotency.py) ----------


@router.replays(logout)
async def logged_out(ctx: Ctx) -> LogoutOut:
    return LogoutOut(**await ctx.run(handlers.logged_out, ctx.runtime, ctx.user.user_id))


@router.replays(verify_identity)
async def identity_verified(ctx: Ctx) -> IdentityOut | None:
    out = await ctx.run(handlers.identity_verified, ctx.runtime, ctx.user.user_id)
    return None if out is None else IdentityOut(**out)


@router.replays(approve, reject)
async def decided(ctx: Ctx) -> VerificationOut:
    return VerificationOut(
        **await ctx.run(handlers.decided, ctx.runtime, ctx.params["kind"], ctx.params["id"])
    )


@router.replays(change_roles)
async def roles_as_they_stand(ctx: Ctx) -> RolesOut:
    return RolesOut(**await ctx.run(handlers.roles_as_they_stand, ctx.runtime, ctx.params["id"]))


@router.replays(suspend_user, reinstate_user)
async def suspension_as_it_stands(ctx: Ctx) -> SuspensionOut:
    return SuspensionOut(**await ctx.run(handlers.suspension_as_it_stands, ctx.runtime, ctx.params["id"]))
