"""Wipe routes (API.md, Wipe; the report format and refusal reasons in WIPE.md).

Admins register and revoke erasure tools and keep the lost/stolen list; erasure operators submit signed reports
and secondary verifications; anyone checks a certificate by id (JSON, or a printable page with a QR code).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from services.kernel.http import Ctx, Reply, Router

from . import handlers
from .pages import certificate_page
from .settings import settings_of

router = Router("wipe")

REPORT_MAX = 2_000_000


class ToolIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    public_key: str = Field(
        min_length=40, max_length=64, description="Ed25519 public key: base64 of the raw 32 bytes"
    )


class ToolOut(BaseModel):
    id: str
    name: str
    public_key: str
    fingerprint: str = Field(description="SHA-256 of the raw public key (hex)")
    created_at: datetime
    status: Literal["active", "revoked"]
    revoked_at: datetime | None


class ToolRevokedOut(ToolOut):
    certificates_revoked: int


class ToolList(BaseModel):
    items: list[ToolOut]


class ReportIn(BaseModel):
    tool_id: str = Field(min_length=1, max_length=40)
    format: Literal["json", "nwipe"]
    report: str = Field(
        min_length=1,
        max_length=REPORT_MAX,
        description="the JSON report (wipe-report/1) or the nwipe log, exactly as signed",
    )
    signature: str = Field(min_length=1, max_length=200, description="base64 Ed25519 signature over `report`")


class CertificateIssuedOut(BaseModel):
    certificate_id: str
    status: Literal["verified", "revoked"]


class VerificationOut(BaseModel):
    mode: str
    result: str
    subsections: int | None = None
    locations_per_subsection: int | None = None
    coverage_pct: float | None = None


class MediumOut(BaseModel):
    type: str
    method: str
    passes: int
    random_passes: int
    serial_masked: str | None
    verification: VerificationOut | None


class DeviceOut(BaseModel):
    kind: str
    make: str
    model: str
    imei_masked: str | None
    serial_masked: str | None


class ToolRef(BaseModel):
    id: str
    name: str | None
    fingerprint: str


class CertificateOut(BaseModel):
    id: str
    device: DeviceOut
    media: list[MediumOut]
    issued_at: datetime
    report_created_at: datetime
    format: str
    tool: ToolRef
    valid: bool
    revoked_reason: str | None
    revoked_at: datetime | None
    secondary_verification: Literal["not_drawn", "pending", "passed", "failed"]
    retained_until: date


class SecondaryOut(BaseModel):
    id: str
    certificate_id: str
    tool_id: str
    outcome: Literal["passed", "failed"]
    detail: str | None
    checked_at: datetime
    certificate_status: Literal["verified", "revoked"]


class PendingItem(BaseModel):
    certificate_id: str
    tool_id: str
    device_kind: str
    issued_at: datetime


class PendingQuery(BaseModel):
    limit: int = Field(50, ge=1, le=200)


class PendingList(BaseModel):
    items: list[PendingItem]


class RevokeIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why (kept with the revocation)")


class BlocklistIn(BaseModel):
    imei: str = Field(min_length=15, max_length=20)


class BlocklistOut(BaseModel):
    imei_masked: str
    device_key: str
    blocklisted: bool
    certificates_revoked: int


class EvidenceOut(BaseModel):
    certificate_id: str
    tool_id: str
    format: str
    report: str
    signature: str


# --- tools -----------------------------------------------------------------------------------------------------


@router.post("/v1/wipe/tools", roles={"admin"}, body=ToolIn, response=ToolOut, status=201, errors=(400, 422))
async def register_tool(ctx: Ctx) -> Any:
    """(admin) Register an erasure tool by its Ed25519 public key."""
    body: ToolIn = ctx.body
    return Reply(
        await ctx.run(handlers.register_tool, ctx.runtime, ctx.user.user_id, body.name, body.public_key), 201
    )


@router.replay_of(register_tool)
async def register_tool_replayed(ctx: Ctx, made: str) -> Any:
    return Reply(await ctx.run(handlers.tool_registered, ctx.runtime, made), 201)


@router.get("/v1/wipe/tools", roles={"admin", "erasure_operator"}, response=ToolList)
async def list_tools(ctx: Ctx) -> Any:
    """(admin, erasure operator) The registered tools and whether each is active."""
    return {"items": await ctx.run(handlers.list_tools, ctx.runtime)}


@router.post(
    "/v1/wipe/tools/{id}/revoke",
    roles={"admin"},
    response=ToolRevokedOut,
    errors=(404,),
    not_owned="an admin revokes any tool",
)
async def revoke_tool(ctx: Ctx) -> Any:
    """(admin) Revoke a tool: its reports are refused from now on and the certificates it signed are revoked."""
    return await ctx.run(handlers.revoke_tool, ctx.runtime, ctx.user.user_id, ctx.params["id"])


@router.replay_of(revoke_tool)
async def revoke_tool_replayed(ctx: Ctx, made: str) -> Any:
    return await ctx.run(handlers.tool_revoked, ctx.runtime, ctx.params["id"], int(made))


# --- reports and certificates ----------------------------------------------------------------------------------


@router.post(
    "/v1/wipe/reports",
    roles={"erasure_operator"},
    body=ReportIn,
    response=CertificateIssuedOut,
    status=201,
    also=(200,),
    errors=(400, 422),
)
async def submit_report(ctx: Ctx) -> Any:
    """(erasure operator) Submit a signed report; 201 with its certificate, 200 with the same one for the same
    report again, or 422 with the `reason` of WIPE.md (all broken rules in `refusals`)."""
    body: ReportIn = ctx.body
    out, created = await ctx.run(
        handlers.submit_report,
        ctx.runtime,
        ctx.user.user_id,
        body.tool_id,
        body.format,
        body.report,
        body.signature,
    )
    return Reply(out, 201 if created else 200)


@router.replay_of(submit_report)
async def submit_report_replayed(ctx: Ctx, made: str) -> Any:
    return Reply(*await ctx.run(handlers.report_certified, ctx.runtime, made))


@router.get(
    "/v1/wipe/certificates/{id}",
    public=True,
    response=CertificateOut,
    errors=(404,),
    not_owned="a certificate is a public proof (identifiers masked)",
)
async def get_certificate(ctx: Ctx) -> Any:
    """(public) A certificate by id: device (masked identifiers), media, methods, verification, validity."""
    return await ctx.run(handlers.certificate_view, ctx.runtime, ctx.params["id"])


@router.get(
    "/v1/wipe/certificates/{id}/page",
    public=True,
    raw=True,
    errors=(404,),
    not_owned="a certificate is a public proof (identifiers masked)",
)
async def certificate_html(ctx: Ctx) -> web.StreamResponse:
    """(public) The printable certificate page (HTML) with a QR code of its address."""
    view = await ctx.run(handlers.certificate_view, ctx.runtime, ctx.params["id"])
    base = settings_of(ctx.runtime).public_base_url.rstrip("/") or _public_base(ctx.request)
    url = f"{base}/v1/wipe/certificates/{view['id']}/page"
    return web.Response(
        text=certificate_page(view, url),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _public_base(request: web.Request) -> str:
    """The address the client used: through the distributed gateway, the one it forwards (X-Forwarded-Host/Proto)."""
    host = request.headers.get("X-Forwarded-Host") or request.host
    proto = request.headers.get("X-Forwarded-Proto") or request.scheme
    return f"{proto}://{host}"


@router.post(
    "/v1/wipe/certificates/{id}/secondary",
    roles={"erasure_operator"},
    body=ReportIn,
    response=SecondaryOut,
    status=201,
    also=(200,),
    errors=(400, 404, 422),
    not_owned="any erasure operator verifies with a different tool",
)
async def secondary_verification(ctx: Ctx) -> Any:
    """(erasure operator) Secondary verification of a certificate by a different tool; a failure revokes it."""
    body: ReportIn = ctx.body
    out, created = await ctx.run(
        handlers.secondary_verification,
        ctx.runtime,
        ctx.user.user_id,
        ctx.params["id"],
        body.tool_id,
        body.format,
        body.report,
        body.signature,
    )
    return Reply(out, 201 if created else 200)


@router.replay_of(secondary_verification)
async def secondary_verification_replayed(ctx: Ctx, made: str) -> Any:
    return Reply(await ctx.run(handlers.secondary_checked, ctx.runtime, ctx.params["id"], made), 201)


@router.get(
    "/v1/wipe/secondary/pending",
    roles={"admin", "erasure_operator"},
    query=PendingQuery,
    response=PendingList,
)
async def pending_secondary(ctx: Ctx) -> Any:
    """(admin, erasure operator) Certificates drawn for secondary verification and not yet checked."""
    q: PendingQuery = ctx.query
    return {"items": await ctx.run(handlers.pending_secondary, ctx.runtime, q.limit)}


@router.post(
    "/v1/wipe/certificates/{id}/revoke",
    roles={"admin"},
    body=RevokeIn,
    response=CertificateOut,
    errors=(400, 404),
    not_owned="an admin revokes any certificate",
)
async def revoke_certificate(ctx: Ctx) -> Any:
    """(admin) Revoke a certificate (an admin decision); listings relying on it are unpublished."""
    return await ctx.run(
        handlers.revoke_certificate, ctx.runtime, ctx.user.user_id, ctx.params["id"], ctx.body.reason
    )


@router.replays(revoke_certificate)
async def certificate_as_it_stands(ctx: Ctx) -> Any:
    return await ctx.run(handlers.certificate_view, ctx.runtime, ctx.params["id"])


@router.get(
    "/v1/wipe/certificates/{id}/evidence",
    roles={"admin"},
    response=EvidenceOut,
    errors=(404,),
    not_owned="admins re-verify any certificate",
)
async def certificate_evidence(ctx: Ctx) -> Any:
    """(admin) The signed report behind a certificate (decrypted) and its signature, to re-verify offline."""
    return await ctx.run(handlers.evidence_report, ctx.runtime, ctx.params["id"])


@router.post(
    "/v1/admin/devices/blocklist",
    roles={"admin"},
    body=BlocklistIn,
    response=BlocklistOut,
    status=201,
    also=(200,),
    errors=(400,),
)
async def blocklist_device(ctx: Ctx) -> Any:
    """(admin) Put a lost or stolen device (IMEI) on the list: no certificate, and its certificates are revoked."""
    out, created = await ctx.run(handlers.blocklist_device, ctx.runtime, ctx.user.user_id, ctx.body.imei)
    return Reply(out, 201 if created else 200)


@router.replay_of(blocklist_device)
async def blocklist_device_replayed(ctx: Ctx, made: str) -> Any:
    return Reply(*await ctx.run(handlers.device_blocklisted, ctx.runtime, ctx.body.imei, made))
