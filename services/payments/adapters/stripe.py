"""The Stripe provider, through the official SDK (`stripe.StripeClient`, one client per adapter: no global state).

- Escrow: PaymentIntents with `capture_method=manual` (`payment_method_types=["card"]`): opened unconfirmed for
  the payer's client to confirm with the client secret (`open_intent`; Stripe.js `confirmCardPayment`), or
  confirmed on the payer's behalf (`confirm_intent`), or confirmed at creation (`authorise`); capture (partial:
  `amount_to_capture`), cancel, refunds (full and partial) against the PaymentIntent.
- Payouts: a connected account per payee (`accounts.create`) and a transfer to it (`transfers.create`).
- Every call carries an Idempotency-Key derived from our command id (see `domain.rules.provider_idempotency_key`);
  the SDK's own network retries reuse it.
- Webhooks: `stripe.Webhook.construct_event` checks the `Stripe-Signature` header (HMAC-SHA256 over
  "<timestamp>.<payload>" with the endpoint secret, and a timestamp tolerance against replays).

`STRIPE_API_BASE` points the SDK at another server (tests: localstripe). Calls that find an object already in the
wanted state (a capture retried after a crash, on a server that ignores idempotency keys) read the object and
return it instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import stripe

from services.kernel.settings import ConfigError, Settings

from ..ports import (
    CLIENT_CONFIRMATION,
    CONFIRMS_AGAIN_AFTER_DECLINE,
    CONNECT_PAYOUTS,
    IDEMPOTENCY_KEYS,
    REFUSES_OVER_REFUND,
    WEBHOOKS,
    AuthResult,
    BadSignature,
    CardDeclined,
    IntentSnapshot,
    InvalidRequest,
    OpenedIntent,
    ProviderUnavailable,
    RefundResult,
    TransferResult,
)

OUR_REFUND_TAG = "recycle_command_id"  # metadata key on every refund we create


def _translate(exc: Exception) -> Exception:
    """An SDK error as a provider-port error."""
    if isinstance(exc, stripe.CardError):
        err = exc.error
        code = (getattr(err, "decline_code", None) if err else None) or exc.code or "card_declined"
        pi = getattr(err, "payment_intent", None) if err else None
        ref = pi.get("id") if isinstance(pi, Mapping) else (pi if isinstance(pi, str) else None)
        return CardDeclined(code, exc.user_message or str(exc), ref)
    if isinstance(exc, stripe.IdempotencyError):
        return InvalidRequest(exc.user_message or str(exc), code="idempotency_error", http_status=400)
    if isinstance(exc, stripe.InvalidRequestError):
        return InvalidRequest(
            exc.user_message or str(exc) or "invalid request",
            code=exc.code or None,
            param=exc.param or None,
            http_status=exc.http_status or 400,
        )
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return ProviderUnavailable(
            f"Stripe refused our credentials ({exc.http_status}); check STRIPE_API_KEY"
        )
    if (
        isinstance(exc, stripe.APIError)
        and exc.http_status
        and 400 <= exc.http_status < 500
        and exc.http_status not in (409, 429)
    ):
        # e.g. an endpoint this server does not have (404)
        return InvalidRequest(
            exc.user_message or f"Stripe answered {exc.http_status}",
            code="resource_missing" if exc.http_status == 404 else None,
            http_status=exc.http_status,
        )
    if isinstance(exc, stripe.StripeError):
        return ProviderUnavailable(f"Stripe is unavailable: {type(exc).__name__}: {exc.user_message or exc}")
    return exc


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    try:
        return obj[key]
    except (KeyError, TypeError):
        return default


class StripeProvider:
    name = "stripe"
    capabilities = frozenset(
        {
            CONNECT_PAYOUTS,
            IDEMPOTENCY_KEYS,
            WEBHOOKS,
            REFUSES_OVER_REFUND,
            CLIENT_CONFIRMATION,
            CONFIRMS_AGAIN_AFTER_DECLINE,
        }
    )
    # a payee must be onboarded (Connect onboarding, `register_payee`) before money can be sent to them
    opens_accounts_on_demand = False

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = "",
        webhook_secret: str = "",
        webhook_tolerance_s: int = 300,
        max_network_retries: int = 2,
        timeout_s: float = 30.0,
    ):
        if not api_key:
            raise ConfigError("PAYMENTS=stripe needs STRIPE_API_KEY (sk_test_... or sk_live_...)")
        base = {"api": api_base.rstrip("/")} if api_base else None
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout_s),
        )
        self.webhook_secret = webhook_secret
        self.webhook_tolerance_s = webhook_tolerance_s

    @classmethod
    def from_settings(cls, settings: Settings, webhook_tolerance_s: int = 300) -> StripeProvider:
        return cls(
            settings.stripe_api_key,
            api_base=settings.stripe_api_base,
            webhook_secret=settings.stripe_webhook_secret,
            webhook_tolerance_s=webhook_tolerance_s,
        )

    def close(self) -> None:
        pass

    @staticmethod
    def _call(fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

    # --- PaymentIntents ---------------------------------------------------------------------------------------
    def authorise(
        self,
        *,
        amount_fen: int,
        currency: str,
        payment_method: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> AuthResult:
        params = {
            "amount": amount_fen,
            "currency": currency,
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "capture_method": "manual",
            "confirm": True,
            "metadata": dict(metadata),
        }
        try:
            pi = self._call(
                self.client.v1.payment_intents.create,
                params=params,
                options={"idempotency_key": idempotency_key},
            )
        except CardDeclined as exc:
            return AuthResult(exc.provider_ref or "", "declined", exc.code, exc.detail)
        if pi.status == "requires_capture":
            return AuthResult(pi.id, "authorised")
        # requires_action (3-D Secure) cannot complete server-side: a decline; cancel it so nothing stays reserved
        err = _get(pi, "last_payment_error") or {}
        code = (
            _get(err, "decline_code")
            or _get(err, "code")
            or ("authentication_required" if pi.status == "requires_action" else pi.status)
        )
        if pi.status in ("requires_action", "requires_confirmation"):
            try:
                self._call(
                    self.client.v1.payment_intents.cancel,
                    pi.id,
                    options={"idempotency_key": idempotency_key + ":abandon"},
                )
            except (InvalidRequest, ProviderUnavailable):
                pass  # it lapses on its own; reconciliation reports it meanwhile
        return AuthResult(pi.id, "declined", code, _get(err, "message"))

    def open_intent(
        self, *, amount_fen: int, currency: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> OpenedIntent:
        pi = self._call(
            self.client.v1.payment_intents.create,
            params={
                "amount": amount_fen,
                "currency": currency,
                "payment_method_types": ["card"],
                "capture_method": "manual",
                "metadata": dict(metadata),
            },
            options={"idempotency_key": idempotency_key},
        )
        return OpenedIntent(pi.id, pi.client_secret)

    def confirm_intent(self, provider_ref: str, *, payment_method: str, idempotency_key: str) -> AuthResult:
        # Two calls (attach, then confirm) rather than `confirm(payment_method=...)`: the same on Stripe, and the
        # only way localstripe takes it.
        try:
            self._call(
                self.client.v1.payment_intents.update,
                provider_ref,
                params={"payment_method": payment_method},
                options={"idempotency_key": idempotency_key + ":payment-method"},
            )
        except InvalidRequest as exc:
            if exc.http_status == 404 or exc.param == "payment_method":  # no such payment method
                raise InvalidRequest(exc.detail, code=exc.code, param="payment_method") from None
            raise
        try:
            pi = self._call(
                self.client.v1.payment_intents.confirm,
                provider_ref,
                options={"idempotency_key": idempotency_key},
            )
        except CardDeclined as exc:
            return AuthResult(provider_ref, "declined", exc.code, exc.detail)
        except InvalidRequest as exc:
            if (
                exc.http_status == 404
            ):  # the intent was just updated, so what is missing is the payment method
                raise InvalidRequest(exc.detail, code=exc.code, param="payment_method") from None
            raise
        if pi.status == "requires_capture":
            return AuthResult(pi.id, "authorised")
        # requires_action (3-D Secure): only the payer's client can finish it, with the client secret
        err = _get(pi, "last_payment_error") or {}
        code = _get(err, "decline_code") or _get(err, "code") or "authentication_required"
        return AuthResult(pi.id, "declined", code, _get(err, "message"))

    def capture(self, provider_ref: str, *, amount_fen: int, idempotency_key: str) -> IntentSnapshot:
        try:
            pi = self._call(
                self.client.v1.payment_intents.capture,
                provider_ref,
                params={"amount_to_capture": amount_fen, "expand": ["latest_charge"]},
                options={"idempotency_key": idempotency_key},
            )
        except InvalidRequest:
            snap = self.retrieve_intent(provider_ref)
            if snap.status == "captured":
                return snap
            raise
        snap = self._snapshot(pi)
        if snap.status == "cancelled":
            # Stripe refuses to capture a cancelled intent (a lapsed authorisation); localstripe answers with the
            # cancelled intent instead: the same refusal
            raise InvalidRequest(
                "This PaymentIntent could not be captured because it has a status of canceled.",
                code="payment_intent_unexpected_state",
            )
        return snap

    def cancel(self, provider_ref: str, *, idempotency_key: str) -> IntentSnapshot:
        try:
            pi = self._call(
                self.client.v1.payment_intents.cancel,
                provider_ref,
                options={"idempotency_key": idempotency_key},
            )
        except InvalidRequest:
            snap = self.retrieve_intent(provider_ref)
            if snap.status == "cancelled":
                return snap
            raise
        return self._snapshot(pi)

    def refund(
        self, provider_ref: str, *, amount_fen: int, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundResult:
        meta = dict(metadata)
        meta.setdefault(OUR_REFUND_TAG, idempotency_key)
        r = self._call(
            self.client.v1.refunds.create,
            params={"payment_intent": provider_ref, "amount": amount_fen, "metadata": meta},
            options={"idempotency_key": idempotency_key},
        )
        return self._refund(r)

    # --- Connect ----------------------------------------------------------------------------------------------
    def create_payee_account(
        self, *, user_id: str, kind: str, bank_account: str | None, idempotency_key: str
    ) -> str:
        params: dict[str, Any] = {
            "type": "express",
            "business_type": "company" if kind == "firm" else "individual",
            "capabilities": {"transfers": {"requested": True}},
            "metadata": {"user_id": user_id, "payee_kind": kind},
        }
        acct = self._call(
            self.client.v1.accounts.create, params=params, options={"idempotency_key": idempotency_key}
        )
        return str(acct.id)

    def transfer(
        self,
        *,
        destination: str,
        amount_fen: int,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> TransferResult:
        tr = self._call(
            self.client.v1.transfers.create,
            params={
                "amount": amount_fen,
                "currency": currency,
                "destination": destination,
                "metadata": dict(metadata),
            },
            options={"idempotency_key": idempotency_key},
        )
        return self._transfer(tr)

    # --- reads ------------------------------------------------------------------------------------------------
    def retrieve_intent(self, provider_ref: str) -> IntentSnapshot:
        pi = self._call(
            self.client.v1.payment_intents.retrieve, provider_ref, params={"expand": ["latest_charge"]}
        )
        return self._snapshot(pi)

    def retrieve_refund(self, provider_ref: str) -> RefundResult:
        return self._refund(self._call(self.client.v1.refunds.retrieve, provider_ref))

    def retrieve_transfer(self, provider_ref: str) -> TransferResult:
        return self._transfer(self._call(self.client.v1.transfers.retrieve, provider_ref))

    def _snapshot(self, pi: Any) -> IntentSnapshot:
        raw = pi.to_dict()
        err = raw.get("last_payment_error") or None
        status = {
            "requires_capture": "authorised",
            "succeeded": "captured",
            "canceled": "cancelled",
            "requires_payment_method": "declined" if err else "open",
            "requires_confirmation": "open",
            "requires_action": "open",
            "processing": "open",
        }.get(pi.status, "other")
        latest = raw.get("latest_charge")
        charge = latest if isinstance(latest, Mapping) else None
        charge_ref = _get(charge, "id") if charge is not None else latest
        pm = raw.get("payment_method")
        pm_ref = _get(pm, "id") if isinstance(pm, Mapping) else pm
        captured = raw.get("amount_received")
        refunded = _get(charge, "amount_refunded")
        if captured is None and charge is not None:
            # Servers without `amount_received` (localstripe) record a partial capture as a refund of the rest:
            # count only the refunds we made as refunds, the others as never captured.
            ours = self._our_refunds(pi.id)
            if _get(charge, "captured"):
                captured = int(_get(charge, "amount", 0)) - (int(refunded or 0) - ours)
            else:
                captured = 0
            refunded = ours
        err_pm = _get(err, "payment_method")
        return IntentSnapshot(
            pi.id,
            status,
            int(raw.get("amount") or 0),
            int(captured or 0),
            None if refunded is None else int(refunded),
            raw,
            payment_method=pm_ref,
            decline_code=(_get(err, "decline_code") or _get(err, "code") or "card_declined") if err else None,
            decline_message=_get(err, "message") if err else None,
            # the failed charge; a failure without one (3-D Secure) is told apart by its code and payment method
            attempt_ref=(
                (_get(err, "charge") or charge_ref or f"{_get(err, 'code')}:{_get(err_pm, 'id') or err_pm}")
                if err
                else charge_ref
            ),
        )

    def _our_refunds(self, pi_id: str) -> int:
        listing = self._call(self.client.v1.refunds.list, params={"payment_intent": pi_id, "limit": 100})
        return sum(
            int(r.amount)
            for r in listing.data
            if OUR_REFUND_TAG in (_get(r, "metadata") or {}) and r.status in ("succeeded", "pending")
        )

    @staticmethod
    def _refund(r: Any) -> RefundResult:
        status = {
            "succeeded": "succeeded",
            "pending": "pending",
            "requires_action": "pending",
            "failed": "failed",
            "canceled": "failed",
        }.get(r.status, "pending")
        return RefundResult(r.id, status, int(r.amount), _get(r, "failure_reason"))

    @staticmethod
    def _transfer(t: Any) -> TransferResult:
        reversed_fen = int(_get(t, "amount_reversed", 0) or 0)
        return TransferResult(t.id, "reversed" if reversed_fen else "paid", int(t.amount), reversed_fen)

    # --- webhooks ---------------------------------------------------------------------------------------------
    def verify_webhook(self, payload: bytes, signature: str | None) -> Mapping[str, Any]:
        if not self.webhook_secret:
            raise ProviderUnavailable("STRIPE_WEBHOOK_SECRET is not configured: webhooks cannot be verified")
        if not signature:
            raise BadSignature("missing Stripe-Signature header")
        try:
            stripe.Webhook.construct_event(
                payload, signature, self.webhook_secret, tolerance=self.webhook_tolerance_s
            )
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(f"webhook signature rejected: {exc.user_message or exc}") from None
        except ValueError:
            raise BadSignature("webhook payload is not valid JSON", "body") from None
        event = json.loads(payload)
        if not isinstance(event, dict) or "id" not in event or "type" not in event:
            raise BadSignature("webhook payload is not a Stripe event", "body")
        return event

    def pull_events(self, limit: int = 100) -> list[Mapping[str, Any]]:
        return []  # Stripe pushes webhooks

    def ack_events(self, event_ids: list[str]) -> None:
        pass
