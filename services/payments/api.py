"""Payments routes: the signed-in payee's balance and withdrawals, the Stripe webhook, operator tools.

Holds, captures and refunds are not HTTP routes: the services that own orders ask for them over the bus
(contracts.payments); the payer confirms such a payment here (the sandbox's stand-in for a provider's own client).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from services.kernel.http import Ctx, Reply, Router
from services.kernel.ids import new_id

from . import handlers
from .domain.model import Balance, Withdrawal
from .handlers import Payments
from .hold_requests import hold_requests_of
from .reconcile import reconcile

router = Router("payments")


def payments_of(ctx: Ctx) -> Payments:
    return handlers.payments_of(ctx.runtime)


class WalletOut(BaseModel):
    wallet: str
    balance_fen: int


class BalanceOut(BaseModel):
    user_id: str
    currency: str
    available_fen: int
    in_transit_fen: int
    payout_threshold_fen: int
    wallets: list[WalletOut]


def _balance_out(b: Balance) -> dict[str, Any]:
    return {
        "user_id": b.user_id,
        "currency": b.currency.upper(),
        "available_fen": b.available_fen,
        "in_transit_fen": b.in_transit_fen,
        "payout_threshold_fen": b.threshold_fen,
        "wallets": [{"wallet": k, "balance_fen": v} for k, v in b.wallets.items()],
    }


class WithdrawalIn(BaseModel):
    wallet: Literal["resident", "seller", "firm"] = "resident"
    amount_fen: int | None = Field(None, gt=0, description="default: the whole wallet")


class WithdrawalOut(BaseModel):
    id: str
    wallet: str
    amount_fen: int
    status: str
    provider_ref: str | None
    failure_reason: str | None


class WithdrawalList(BaseModel):
    items: list[WithdrawalOut]
    next_cursor: str | None


class ListQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


def _withdrawal_out(w: Withdrawal) -> dict[str, Any]:
    return {
        "id": w.id,
        "wallet": w.wallet,
        "amount_fen": w.amount_fen,
        "status": str(w.status),
        "provider_ref": w.provider_ref,
        "failure_reason": w.failure_reason,
    }


@router.get("/v1/payments/balance", authenticated=True, response=BalanceOut)
async def get_balance(ctx: Ctx) -> dict[str, Any]:
    """The signed-in user's wallets (what the platform owes them), withdrawals under way, the payout threshold."""
    return _balance_out(await ctx.run(payments_of(ctx).balance, ctx.user.user_id))


@router.post(
    "/v1/payments/withdrawals",
    authenticated=True,
    body=WithdrawalIn,
    response=WithdrawalOut,
    status=201,
    errors=(422, 502),
)
async def create_withdrawal(ctx: Ctx) -> Any:
    """Withdraw from a wallet (提现), below the payout threshold too. Idempotent per Idempotency-Key."""
    key = ctx.request.headers.get("Idempotency-Key")
    command_id = f"api:{ctx.user.user_id}:{key}" if key else new_id("wdcmd")
    body: WithdrawalIn = ctx.body
    w = await ctx.run(
        payments_of(ctx).withdraw,
        command_id=command_id,
        user_id=ctx.user.user_id,
        wallet=body.wallet,
        amount_fen=body.amount_fen,
    )
    return Reply(_withdrawal_out(w), 201)


@router.replay_of(create_withdrawal)
async def create_withdrawal_replayed(ctx: Ctx, made: str) -> Any:
    w = await ctx.run(payments_of(ctx).get_withdrawal, made)
    ctx.require_owner(w.payee_user_id, what="withdrawal")
    return Reply(_withdrawal_out(w), 201)


@router.get("/v1/payments/withdrawals", authenticated=True, query=ListQuery, response=WithdrawalList)
async def list_withdrawals(ctx: Ctx) -> dict[str, Any]:
    """The signed-in user's withdrawals, newest first."""
    q: ListQuery = ctx.query
    items = await ctx.run(payments_of(ctx).list_withdrawals, ctx.user.user_id, q.limit + 1, q.cursor)
    more = len(items) > q.limit
    items = items[: q.limit]
    return {"items": [_withdrawal_out(w) for w in items], "next_cursor": items[-1].id if more else None}


@router.get(
    "/v1/payments/withdrawals/{id}",
    authenticated=True,
    response=WithdrawalOut,
    errors=(403, 404),
    owner="withdrawal",
)
async def get_withdrawal(ctx: Ctx) -> dict[str, Any]:
    """One withdrawal (yours, or any for an admin)."""
    w = await ctx.run(payments_of(ctx).get_withdrawal, ctx.params["id"])
    ctx.require_owner(w.payee_user_id, what="withdrawal", admin_ok=True)
    return _withdrawal_out(w)


class ConfirmIn(BaseModel):
    payment_method: str = Field(
        min_length=1,
        max_length=128,
        description="sandbox/Stripe test methods: pm_card_visa, pm_card_chargeCustomerFail",
    )


class PaymentOut(BaseModel):
    id: str
    status: str  # requires_payment_method | requires_capture | captured | cancelled | refunded
    amount_fen: int
    reference_id: str
    hold_id: str | None
    decline_code: str | None
    decline_message: str | None
    client_secret: str | None


@router.post(
    "/v1/payments/intents/{id}/confirm",
    authenticated=True,
    body=ConfirmIn,
    response=PaymentOut,
    errors=(400, 403, 404, 409, 502),
    owner="payment",
    example={"payment_method": "pm_card_visa"},
)
async def confirm_payment(ctx: Ctx) -> dict[str, Any]:
    """The payer pays a payment another service opened (e.g. an order's escrow): `requires_capture` when the money
    is held, `requires_payment_method` with `decline_code` when the method was declined (try another)."""
    body: ConfirmIn = ctx.body
    return await ctx.run(
        hold_requests_of(ctx.runtime).confirm, ctx.params["id"], ctx.user.user_id, body.payment_method
    )


@router.replay_of(confirm_payment)
async def confirm_payment_replayed(ctx: Ctx, made: str) -> dict[str, Any]:
    return await ctx.run(hold_requests_of(ctx.runtime).confirmed, ctx.params["id"], ctx.user.user_id)


@router.get(
    "/v1/payments/intents/{id}", authenticated=True, response=PaymentOut, errors=(404,), owner="payment"
)
async def get_payment(ctx: Ctx) -> dict[str, Any]:
    """A payment opened for the signed-in payer (or any, for an admin). While it waits for a payer who pays at the
    provider (Stripe.js), the PaymentIntent is read first (at most once per `PAYMENTS_INTENT_REFRESH_S`), so a
    client polling after paying sees `requires_capture` before any webhook."""
    return await ctx.run(
        hold_requests_of(ctx.runtime).get, ctx.params["id"], ctx.user.user_id, ctx.user.has("admin")
    )


class WebhookOut(BaseModel):
    received: bool
    event_id: str
    type: str | None
    outcome: str


@router.post("/v1/payments/webhooks/stripe", public=True, response=WebhookOut, errors=(400, 502))
async def stripe_webhook(ctx: Ctx) -> dict[str, Any]:
    """Stripe's webhook endpoint: the Stripe-Signature header is verified; each event is applied once."""
    payload = await ctx.request.read()
    signature = ctx.request.headers.get("Stripe-Signature")
    return await ctx.run(payments_of(ctx).handle_webhook, payload, signature)


class ReconcileOut(BaseModel):
    provider: str
    ok: bool
    checked: dict[str, int]
    discrepancies: list[dict[str, Any]]
    ledger_problems: list[str]
    events_applied: int
    withdrawals_sent: int


@router.post("/v1/admin/payments/reconcile", roles={"admin"}, response=ReconcileOut)
async def run_reconciliation(ctx: Ctx) -> dict[str, Any]:
    """Compare the ledger with the provider's objects (the reconciliation job, run on demand)."""
    report = await ctx.run(reconcile, payments_of(ctx))
    return report.to_dict()


class TrialBalanceOut(BaseModel):
    total_fen: int
    accounts: dict[str, int]


@router.get("/v1/admin/payments/trial-balance", roles={"admin"}, response=TrialBalanceOut)
async def trial_balance(ctx: Ctx) -> dict[str, Any]:
    """Every ledger account's balance (debit positive); the total is always 0."""
    tb = await ctx.run(payments_of(ctx).trial_balance)
    return {"total_fen": sum(tb.values()), "accounts": tb}
