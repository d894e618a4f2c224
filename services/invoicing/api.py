"""Invoicing routes: reverse invoices, red letters, retries, seller ledgers, tax exports, issuer suspension.

Access (checked on every route, after a missing resource answers 404):
- an invoice: its seller, an accountant of its issuing firm (token `firm_roles`/`firms`, see access.py), or an admin;
- red letter: an accountant of the issuing firm; retry: an accountant of the issuing firm or an admin;
- exports: accountants of the firm; the file only to that firm's accountants;
- a seller's cap ledger / annual statement: the seller, an admin, or an accountant of a firm that invoiced them
  (the annual statement then covers that accountant's firms only);
- tax-unpaid / issuer status: an admin, or an accountant of that firm.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from services.kernel.db import UnitOfWork
from services.kernel.errors import Forbidden, NotFound, ValidationFailed
from services.kernel.http import Ctx, Reply, Router
from services.kernel.inputs import EntityId, Text, decimal_str

from .access import accountant_firms, is_accountant_of, may_read_invoice, require_accountant_of
from .domain.tax import RedLetterLine
from .export_jobs import choose_runner, create_export, dispatch, export_path, load_export
from .exports import ReportSpec
from .issuing import issue_red_letter, retry_blocked, still_blocked
from .ledger import month_bounds, parse_period
from .settings import settings_of, tax_rule_book
from .store import invoices
from .suspension import record_tax_status, status_of
from .views import annual_statement, cap_ledger_view, invoice_detail, render_many

router = Router("invoicing")


# ---------------------------------------------------------------------------------------------------- models


class InvoiceLineOut(BaseModel):
    category: str
    category_name: str | None = None
    tax_code: str
    qty: str
    unit: str
    unit_price_fen: int
    amount_fen: int
    sales_excl_fen: int | None = None
    vat_fen: int | None = None
    iit_fen: int | None = None
    blue_line_no: int | None = None


class SellerOut(BaseModel):
    name_masked: str | None
    id_number_masked: str | None
    id_type: str


class BuyerOut(BaseModel):
    firm_id: str
    name: str | None
    uscc: str | None
    address: str | None
    city_code: str | None


class InvoiceOut(BaseModel):
    id: str
    number: str | None
    issuer_firm_id: str
    seller_id: str
    pickup_id: str
    kind: Literal["blue", "red"]
    status: Literal["issued", "blocked"]
    blocked_reason: str | None
    blocked_detail: str | None = None
    red_letter_of: str | None
    red_letter_id: str | None = None
    red_reason: str | None = None
    issued_at: datetime | None
    invoice_date: date | None = None
    lines: list[InvoiceLineOut]
    total_fen: int
    sales_excl_fen: int | None
    vat_rate: str | None
    exempt: bool | None = None
    vat_fen: int | None
    surcharges: dict[str, int] | None = None
    surcharges_fen: int | None
    iit_fen: int | None
    withheld_fen: int | None
    net_fen: int | None = None
    withholding: bool | None = None
    three_flows: bool | None = None
    retried: bool = False
    seller: SellerOut
    buyer: BuyerOut | None = None
    special_business: str | None = None
    sale_type: str | None = None
    evidence: list[dict[str, Any]] | None = None
    attempts: list[dict[str, Any]] | None = None


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    next_cursor: str | None


class InvoiceQuery(BaseModel):
    seller_id: str | None = None
    period: str | None = Field(None, description="YYYY-MM: invoices dated in that month")
    issuer_firm_id: str | None = None
    status: Literal["issued", "blocked"] | None = None
    kind: Literal["blue", "red"] | None = None
    limit: int | None = Field(None, ge=1)
    cursor: str | None = None

    @field_validator("period")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        if v is not None:
            y, m = parse_period(v)
            return f"{y:04d}-{m:02d}"
        return v


class RedLineIn(BaseModel):
    line_index: int = Field(..., ge=0, description="which line of the blue invoice (0-based)")
    amount_fen: int = Field(..., gt=0, description="the amount (VAT included) taken back")
    qty: str = Field("0", description="the quantity taken back (0 for a price allowance 销售折让)")

    @field_validator("qty")
    @classmethod
    def _qty(cls, v: str) -> str:
        q = decimal_str(v)  # plain decimal only: Decimal() alone reads "２_１" as 21 and "1E2" as 100
        if q < 0:
            raise ValueError("qty must be a non-negative decimal")
        return v


class RedLetterIn(BaseModel):
    reason: Text = Field(..., min_length=1, max_length=500, description="开票有误 / 销货退回 / 销售折让 ...")
    lines: list[RedLineIn] | None = Field(None, description="omit for a full red letter")


class CapLedgerQuery(BaseModel):
    on: date | None = None


class AnnualQuery(BaseModel):
    year: int = Field(..., ge=2024, le=2099)


class ExportIn(BaseModel):
    period: str = Field(..., description="YYYY-MM (annual: YYYY)")
    format: Literal["csv", "xlsx"]
    kind: Literal["detail", "summary", "annual"] = "detail"
    firm_id: EntityId | None = Field(None, description="needed when you keep books for several firms")
    pii: Literal["masked", "full"] = "masked"


class ExportOut(BaseModel):
    id: str
    status: str
    progress: float
    download_url: str | None
    kind: str
    period: str
    format: str
    firm_id: str
    rows_done: int
    rows_total: int | None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class TaxStatusIn(BaseModel):
    firm_id: EntityId = Field(description="a verified firm known to invoicing")
    period: str = Field(..., description="YYYY-MM")
    status: Literal["unpaid", "paid"] = "unpaid"
    amount_fen: int | None = Field(None, ge=0)
    note: Text | None = Field(None, max_length=500)


# ---------------------------------------------------------------------------------------------------- invoices


def _load(s: Any, invoice_id: str) -> Any:
    row = s.execute(select(invoices).where(invoices.c.id == invoice_id)).one_or_none()
    if row is None:
        raise NotFound(f"no invoice with id {invoice_id}")
    return row


@router.get("/v1/invoices", authenticated=True, query=InvoiceQuery, response=InvoicePage, errors=(403,))
async def list_invoices(ctx: Ctx) -> dict:
    """Reverse invoices: the seller's own, or those issued by the firms the caller keeps books for."""
    q: InvoiceQuery = ctx.query
    user = ctx.user
    firms = accountant_firms(user)
    cfg = settings_of(ctx.runtime)
    c = invoices.c
    where: list[Any] = []
    if q.issuer_firm_id is not None:
        if q.issuer_firm_id not in firms and not user.has("admin") and q.seller_id != user.user_id:
            raise Forbidden(
                f"you do not keep books for firm {q.issuer_firm_id}", reason="not_firm_accountant"
            )
        where.append(c.issuer_firm_id == q.issuer_firm_id)
    if q.seller_id is not None and q.seller_id == user.user_id:
        where.append(c.seller_id == user.user_id)
    elif q.seller_id is not None:
        if firms:
            where += [c.seller_id == q.seller_id, c.issuer_firm_id.in_(sorted(firms))]
        elif user.has("admin"):
            where.append(c.seller_id == q.seller_id)
        else:
            raise Forbidden("you may list only your own invoices", reason="not_owner")
    elif firms:
        where.append(c.issuer_firm_id.in_(sorted(firms)))
    elif not user.has("admin"):
        where.append(c.seller_id == user.user_id)
    if q.period:
        where.append(c.invoice_date.between(*month_bounds(*parse_period(q.period))))
    if q.status:
        where.append(c.status == q.status)
    if q.kind:
        where.append(c.kind == q.kind)
    if q.cursor:
        where.append(c.id < q.cursor)
    limit = min(q.limit or cfg.list_default_limit, cfg.list_max_limit)

    def load() -> dict:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            rows = uow.session.execute(
                select(invoices).where(*where).order_by(c.id.desc()).limit(limit + 1)
            ).all()
            items = render_many(uow.session, rows[:limit])
        return {"items": items, "next_cursor": rows[limit - 1].id if len(rows) > limit else None}

    return await ctx.run(load)


@router.get("/v1/invoices/{id}", authenticated=True, response=InvoiceOut, errors=(403, 404), owner="invoice")
async def get_invoice(ctx: Ctx) -> dict:
    """One invoice with its lines, taxes, evidence and issue attempts."""
    invoice_id = ctx.params["id"]
    user = ctx.user

    def load() -> dict:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            row = _load(uow.session, invoice_id)
            if not may_read_invoice(user, row.seller_id, row.issuer_firm_id):
                raise Forbidden("this invoice is not yours", reason="not_owner")
            return invoice_detail(uow.session, row)

    return await ctx.run(load)


def _detail(ctx: Ctx, invoice_id: str) -> dict:
    with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
        return invoice_detail(uow.session, _load(uow.session, invoice_id))


@router.post(
    "/v1/invoices/{id}/red-letter",
    roles={"accountant"},
    body=RedLetterIn,
    response=InvoiceOut,
    status=201,
    errors=(403, 404, 409, 422),
    owner="firm_invoice",
    example={"reason": "开票有误"},
)
async def red_letter_invoice(ctx: Ctx) -> dict:
    """Offset an issued blue invoice with its red-letter (红字) invoice, fully or by lines; 1:1, with a reason."""
    body: RedLetterIn = ctx.body
    user = ctx.user
    lines = (
        None
        if body.lines is None
        else [RedLetterLine(ln.line_index, ln.amount_fen, Decimal(ln.qty)) for ln in body.lines]
    )

    def act() -> dict:
        red_id = issue_red_letter(
            ctx.runtime,
            ctx.params["id"],
            reason=body.reason,
            lines=lines,
            by=user.user_id,
            authorize=lambda row: require_accountant_of(user, row.issuer_firm_id),
        )
        return _detail(ctx, red_id)

    return await ctx.run(act)


@router.replay_of(red_letter_invoice)
async def red_letter_invoice_replayed(ctx: Ctx, made: str) -> dict:
    def red() -> dict:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            row = _load(uow.session, made)
            if row.red_letter_of != ctx.params["id"]:
                raise NotFound(f"no red-letter invoice {made} of invoice {ctx.params['id']}")
            require_accountant_of(ctx.user, row.issuer_firm_id)
            return invoice_detail(uow.session, row)

    return await ctx.run(red)


@router.post(
    "/v1/invoices/{id}/retry",
    roles={"accountant", "admin"},
    response=InvoiceOut,
    errors=(403, 404, 409, 422),
    owner="firm_invoice",
)
async def retry_invoice(ctx: Ctx) -> dict:
    """Issue a blocked invoice now that its missing precondition has arrived (422 with the reason if not)."""
    user = ctx.user

    def act() -> dict:
        out = retry_blocked(
            ctx.runtime,
            ctx.params["id"],
            user.user_id,
            authorize=lambda row: require_accountant_of(user, row.issuer_firm_id, admin_ok=True),
        )
        return _detail(ctx, out.invoice_id)

    return await ctx.run(act)


@router.replays(retry_invoice)
async def retry_invoice_replayed(ctx: Ctx) -> dict:
    """The retry's outcome as the invoice stands: issued (its detail), or still blocked (the 422 it gave)."""
    user = ctx.user

    def load() -> dict:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            row = _load(uow.session, ctx.params["id"])
            require_accountant_of(user, row.issuer_firm_id, admin_ok=True)
            if row.status == "blocked":
                raise still_blocked(row.id, row.blocked_reason, row.blocked_detail)
            return invoice_detail(uow.session, row)

    return await ctx.run(load)


# ---------------------------------------------------------------------------------------------------- sellers


def _may_see_seller(s: Any, user: Any, seller_id: str) -> frozenset[str] | None:
    """None: everything (the seller, an admin); a set: only these firms' invoices (their accountant)."""
    if user.user_id == seller_id or user.has("admin"):
        return None
    firms = accountant_firms(user)
    if firms:
        c = invoices.c
        hit = s.execute(
            select(c.id).where(c.seller_id == seller_id, c.issuer_firm_id.in_(sorted(firms))).limit(1)
        ).first()
        if hit is not None:
            return firms
    raise Forbidden("you may see only your own ledger, or your firms' sellers'", reason="not_owner")


@router.get(
    "/v1/sellers/{id}/cap-ledger", authenticated=True, query=CapLedgerQuery, errors=(403,), owner="seller"
)
async def seller_cap_ledger(ctx: Ctx) -> dict:
    """The seller's rolling 12-natural-month reverse-invoicing ledger against the 5,000,000-yuan cap."""
    seller_id = ctx.params["id"]
    rt = ctx.runtime
    on = ctx.query.on or settings_of(rt).today()
    rules = tax_rule_book(rt).rules_for(on)

    def load() -> dict:
        with UnitOfWork(rt.db, readonly=True) as uow:
            _may_see_seller(uow.session, ctx.user, seller_id)
            return cap_ledger_view(
                uow.session, seller_id, on, rules.rolling_cap.sales_excl_fen, rules.rolling_cap.months
            )

    return await ctx.run(load)


@router.get(
    "/v1/sellers/{id}/annual-statement",
    authenticated=True,
    query=AnnualQuery,
    errors=(403,),
    owner="seller",
    query_example={"year": "2026"},
)
async def seller_annual_statement(ctx: Ctx) -> dict:
    """The seller's year: amounts and taxes withheld/prepaid, by month and issuer (for 汇算清缴 by 31 March)."""
    seller_id = ctx.params["id"]

    def load() -> dict:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            scope = _may_see_seller(uow.session, ctx.user, seller_id)
            return annual_statement(uow.session, seller_id, ctx.query.year, scope)

    return await ctx.run(load)


# ---------------------------------------------------------------------------------------------------- exports


def _export_out(job: dict) -> dict:
    return {
        **{
            k: job[k]
            for k in (
                "id",
                "status",
                "progress",
                "kind",
                "period",
                "format",
                "firm_id",
                "rows_done",
                "rows_total",
                "error",
                "created_at",
                "finished_at",
            )
        },
        "download_url": f"/v1/tax/exports/{job['id']}/file" if job["status"] == "done" else None,
    }


@router.post(
    "/v1/tax/exports", roles={"accountant"}, body=ExportIn, response=ExportOut, status=202, errors=(403, 422)
)
async def start_export(ctx: Ctx) -> Reply:
    """Generate the month's 代办税费明细报告表 (detail), 代办税费报告表 (summary) or annual statements (annual)."""
    body: ExportIn = ctx.body
    user = ctx.user
    firms = accountant_firms(user)
    firm_id = body.firm_id
    if firm_id is None:
        if len(firms) != 1:
            raise ValidationFailed.field(
                "firm_id",
                "name the firm: you keep books for " + (f"{len(firms)} firms" if firms else "no firm"),
            )
        (firm_id,) = firms
    require_accountant_of(user, firm_id)
    spec = ReportSpec(firm_id, body.kind, body.period, body.format, body.pii)
    rt = ctx.runtime
    runner = choose_runner(rt)

    def act() -> dict:
        job = create_export(rt.db, spec, user.user_id, runner)
        dispatch(rt, job["id"], runner)
        return _export_out(job)

    out = await ctx.run(act)
    return Reply(out, 202, {"Location": f"/v1/tax/exports/{out['id']}"})


@router.replay_of(start_export)
async def start_export_replayed(ctx: Ctx, made: str) -> Reply:
    out = _export_out(await ctx.run(_own_export, ctx, made))
    return Reply(out, 202, {"Location": f"/v1/tax/exports/{out['id']}"})


def _own_export(ctx: Ctx, export_id: str | None = None) -> dict:
    job = load_export(ctx.runtime.db, export_id or ctx.params["id"])
    if not is_accountant_of(ctx.user, job["firm_id"]):
        raise Forbidden("only the firm's accountants may see its exports", reason="not_firm_accountant")
    return job


@router.get(
    "/v1/tax/exports/{id}", roles={"accountant"}, response=ExportOut, errors=(403, 404), owner="export"
)
async def get_export(ctx: Ctx) -> dict:
    """An export's status and progress; `download_url` once it is done."""
    return _export_out(await ctx.run(_own_export, ctx))


@router.get(
    "/v1/tax/exports/{id}/file", roles={"accountant"}, raw=True, errors=(403, 404, 409), owner="export"
)
async def download_export(ctx: Ctx) -> web.StreamResponse:
    """The export's file, streamed (CSV: UTF-8 with BOM; XLSX)."""
    from services.kernel.errors import Conflict

    job = await ctx.run(_own_export, ctx)
    if job["status"] != "done":
        raise Conflict(f"export {job['id']} is {job['status']}", current_state=job["status"])
    path = export_path(ctx.runtime, job)
    if not path.exists():
        raise NotFound(f"the file of export {job['id']} is gone; request it again")
    ctype = (
        "text/csv; charset=utf-8"
        if job["format"] == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    return web.FileResponse(
        path,
        chunk_size=settings_of(ctx.runtime).export_chunk_bytes,
        headers={
            "Content-Type": ctype,
            "Content-Disposition": f'attachment; filename="{job["file_name"]}"',
            "Cache-Control": "private, no-store",
        },
    )


# ---------------------------------------------------------------------------------------------------- issuers


@router.post(
    "/v1/admin/invoicing/tax-unpaid",
    roles={"admin", "accountant"},
    body=TaxStatusIn,
    status=201,
    errors=(403, 409),
)
async def record_tax_unpaid(ctx: Ctx) -> dict:
    """Record a month's tax of an issuer as unpaid (it suspends the issuer after the filing deadline) or, admins
    only, as paid (it lifts the suspension; who did is recorded)."""
    body: TaxStatusIn = ctx.body
    user = require_accountant_of(ctx.user, body.firm_id, admin_ok=True)
    if body.status == "paid" and not user.has("admin"):
        # lifting a suspension is the tax authority's word, relayed by an admin: never the firm's own
        raise Forbidden(
            "only an admin records a month's tax as paid (it lifts the suspension)", reason="admin_only"
        )
    return await ctx.run(
        lambda: record_tax_status(
            ctx.runtime,
            firm_id=body.firm_id,
            period=body.period,
            status=body.status,
            by=user.user_id,
            amount_fen=body.amount_fen,
            note=body.note,
        )
    )


@router.replay_of(record_tax_unpaid)
async def record_tax_unpaid_replayed(ctx: Ctx, made: str) -> dict:
    require_accountant_of(ctx.user, made, admin_ok=True)
    return await ctx.run(status_of, ctx.runtime, made)


@router.get(
    "/v1/admin/invoicing/issuers/{firm_id}", roles={"admin", "accountant"}, errors=(403,), owner="firm_books"
)
async def get_issuer_status(ctx: Ctx) -> dict:
    """May this firm reverse-invoice today: verified, qualifications, unpaid months, suspension."""
    firm_id = ctx.params["firm_id"]
    require_accountant_of(ctx.user, firm_id, admin_ok=True)
    return await ctx.run(status_of, ctx.runtime, firm_id)
