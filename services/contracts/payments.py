"""The payments contracts: holds (escrow, deposits) and payouts, requested by other services and reported by
payments.

Holds: topic `payments.hold`, key = `hold_request_id`, chosen by the requesting service deterministically from its own
aggregate (e.g. `hr_<order id>`), so a re-sent request is the same hold: payments opens, captures and cancels each
request at most once, and the requests and reports of one hold stay in order on one partition.

The flow: a service publishes `HoldRequested` → payments opens a payment that waits for the payer
(`HoldOpened`) → the payer confirms it with a payment method (`POST /v1/payments/intents/{id}/confirm`; the id is
the `hold_request_id`) → `HoldAuthorised` (money reserved) or `HoldDeclined` (the payer may try again). An
authorisation is capturable for `HOLD_VALID_DAYS` only. Later the service asks for `HoldCaptureRequested`
(capture, and release to a payee less a fee) → `HoldCaptured`, or first `HoldEscrowRequested` (capture into the
platform's escrow, pay nobody yet) → `HoldEscrowed` and later the release; or `HoldCancelRequested` →
`HoldCancelled` (an uncaptured hold, or a payment never confirmed) or `HoldRefunded` (captured money given back in
full). A request the hold's state no longer allows is refused, not failed: `HoldCancelRefused` (e.g. the capture
came first and the money went to the payee) or `HoldCaptureRefused` (e.g. the hold was cancelled first); the hold
stays as it is. When the provider lets a held authorisation go (it lapsed), payments reports `HoldCancelled`
(`authorisation_lapsed`) as soon as it learns of it.

Payouts: topic `payments.payout`, key = payout_id (the requester chooses it, deterministically from its own
command, so a retried request is the same payout: payments pays each payout_id at most once); payments reports
`PayoutPaid` or `PayoutFailed`.
"""

from __future__ import annotations

from datetime import datetime

from services.kernel.events import Event

# Requests come from whichever service owns the sale (listings, trading): `requested_by` names it.
CLIENTS = "/payments/clients"

# How long an authorised hold stays capturable after `HoldAuthorised`: Stripe lets an uncaptured card authorisation
# lapse after 7 days (the sandbox does the same). A requester captures (into escrow, if it cannot release yet) or
# cancels within it; money captured into escrow no longer lapses.
HOLD_VALID_DAYS = 7
# `HoldCancelled.reason` (and `HoldCaptureRefused.reason`) when the provider let a held authorisation go
AUTHORISATION_LAPSED = "authorisation_lapsed"


class _HoldEvent(Event):
    topic = "payments.hold"
    key_field = "hold_request_id"
    source = "/payments"
    hold_request_id: str


# --- requests (published by the service that owns the sale) ---------------------------------------------------


class HoldRequested(_HoldEvent):
    type = "cn.recycle.payments.hold.requested.v1"
    source = CLIENTS
    doc = (
        "A service asks payments to reserve `amount_fen` of the payer's money (担保/预授权) for its `reference_id`; "
        "the payer confirms with a payment method."
    )
    payer_user_id: str
    amount_fen: int
    reference_id: str
    requested_by: str
    requested_at: datetime


class HoldCaptureRequested(_HoldEvent):
    type = "cn.recycle.payments.hold.capture_requested.v1"
    source = CLIENTS
    doc = (
        "Capture the whole hold (unless `HoldEscrowRequested` captured it already) and release it to "
        "`payee_user_id` less `fee_fen` (the platform's fee); payments pays the payee through its payouts."
    )
    payee_user_id: str
    payee_kind: str = "seller"
    fee_fen: int = 0
    requested_by: str
    requested_at: datetime


class HoldEscrowRequested(_HoldEvent):
    # A type of its own rather than a flag on HoldCaptureRequested: a payments consumer that predates it skips a
    # type it does not know, where it would have read a capture request with an unknown flag as "capture and pay".
    type = "cn.recycle.payments.hold.escrow_requested.v1"
    source = CLIENTS
    doc = (
        "Capture the whole hold into the platform's escrow now and pay nobody yet (captured money cannot lapse at "
        "the provider): `HoldEscrowed`. Later `HoldCaptureRequested` releases it to the payee less the fee, or "
        "`HoldCancelRequested` refunds it in full (`HoldRefunded`). Refused like a capture (`HoldCaptureRefused`)."
    )
    requested_by: str
    requested_at: datetime


class HoldCancelRequested(_HoldEvent):
    type = "cn.recycle.payments.hold.cancel_requested.v1"
    source = CLIENTS
    doc = (
        "Give the payer's money back in full: an unconfirmed payment is closed, an uncaptured hold released, "
        "money in escrow (`HoldEscrowed`, or captured by the provider outside our capture) refunded; after the "
        "release to the payee it is refused (`HoldCancelRefused`)."
    )
    reason: str
    requested_by: str
    requested_at: datetime


# --- reports (published by payments) ------------------------------------------------------------------------


class HoldOpened(_HoldEvent):
    type = "cn.recycle.payments.hold.opened.v1"
    doc = (
        "The payment waits for the payer: `payment_id` is what the payer confirms; `client_secret` is set when "
        "the provider's own client confirms it (Stripe), null for the sandbox."
    )
    payment_id: str
    client_secret: str | None = None
    amount_fen: int
    reference_id: str
    opened_at: datetime


class HoldAuthorised(_HoldEvent):
    type = "cn.recycle.payments.hold.authorised.v1"
    doc = "The payer's money is reserved (escrow): the sale may go on."
    hold_id: str
    amount_fen: int
    reference_id: str
    authorised_at: datetime


class HoldDeclined(_HoldEvent):
    type = "cn.recycle.payments.hold.declined.v1"
    doc = "The payment method was declined; the payment still waits for the payer (another method may be tried)."
    reference_id: str
    decline_code: str
    reason: str
    declined_at: datetime


class HoldCaptured(_HoldEvent):
    type = "cn.recycle.payments.hold.captured.v1"
    doc = (
        "The hold was captured and released: `payout_id` pays `released_fen` to the payee (its outcome comes as "
        "payout events); `fee_fen` stays with the platform."
    )
    hold_id: str
    reference_id: str
    captured_fen: int
    fee_fen: int
    released_fen: int
    payout_id: str
    captured_at: datetime


class HoldEscrowed(_HoldEvent):
    type = "cn.recycle.payments.hold.escrowed.v1"
    doc = (
        "The hold was captured into the platform's escrow (平台托管): the payer's money is with the platform, owed "
        "to nobody yet, and no longer lapses; a release (`HoldCaptured`) or a refund (`HoldRefunded`) follows."
    )
    hold_id: str
    reference_id: str
    captured_fen: int
    escrowed_at: datetime


class HoldCancelled(_HoldEvent):
    type = "cn.recycle.payments.hold.cancelled.v1"
    doc = (
        "Nothing was taken: the payment was closed before the payer confirmed it, or the hold was released; "
        "`reason` is the requester's, or `authorisation_lapsed` when the provider let a held authorisation go "
        "(reported when payments learns of it, unasked)."
    )
    hold_id: str | None = None
    reference_id: str
    reason: str
    cancelled_at: datetime


class HoldRefunded(_HoldEvent):
    type = "cn.recycle.payments.hold.refunded.v1"
    doc = "Captured money was refunded to the payer in full."
    hold_id: str
    reference_id: str
    refund_id: str
    amount_fen: int
    refunded_at: datetime


class HoldCancelRefused(_HoldEvent):
    type = "cn.recycle.payments.hold.cancel_refused.v1"
    doc = (
        "A cancel request the hold's state no longer allows; nothing changed. `reason`: `already_captured` (the "
        "capture came first and released the money to the payee: nothing is given back). `current_state` is the "
        "request's status."
    )
    reference_id: str
    reason: str
    current_state: str
    refused_at: datetime


class HoldCaptureRefused(_HoldEvent):
    type = "cn.recycle.payments.hold.capture_refused.v1"
    doc = (
        "A capture (or escrow) request the hold's state does not allow; nothing was taken. `reason`: `not_held` "
        "(the payer has not paid yet: the payment still waits), `already_cancelled`, `already_refunded`, "
        "`authorisation_lapsed` (the provider let the hold go; `HoldCancelled` came first), `invalid_fee` / "
        "`invalid_payee_kind` / `invalid_payee` (a request that can never be paid out; the hold stays as it was). "
        "`current_state` is the request's status."
    )
    reference_id: str
    reason: str
    current_state: str
    refused_at: datetime


# --- payouts (topic payments.payout) ----------------------------------------------------------------------


class PayoutRequested(Event):
    type = "cn.recycle.payments.payout.requested.v1"
    topic = "payments.payout"
    key_field = "payout_id"
    source = "/booking"
    doc = (
        "A service asks payments to pay a person or firm (e.g. a resident for a settled pickup, net of withheld tax). "
        "Asked again for a payout id it holds, payments pays nothing twice and announces the payout's outcome again."
    )
    payout_id: str
    payee_user_id: str
    amount_fen: int
    purpose: str  # e.g. "pickup"
    reference_id: str  # e.g. the pickup id
    requested_by: str  # the requesting service
    requested_at: datetime
    # added by payments (optional, so existing producers stay valid): resident | seller | firm. Residents are
    # paid into their wallet and paid out once it reaches the payout threshold; sellers and firms at once.
    payee_kind: str = "resident"


class PayoutPaid(Event):
    type = "cn.recycle.payments.payout.paid.v1"
    topic = "payments.payout"
    key_field = "payout_id"
    source = "/payments"
    doc = (
        "The payout was paid (or credited to the payee's wallet). Its event id is derived from the payout id: "
        "announced again when the payout is requested again, it is the same event to consumers' inboxes."
    )
    payout_id: str
    reference_id: str
    amount_fen: int
    provider_ref: str
    paid_at: datetime
    # added by payments: "provider" = paid out through the provider (provider_ref is its transfer id);
    # "balance" = credited to the payee's wallet below the payout threshold (provider_ref = "balance:<payout_id>").
    destination: str = "provider"


class PayoutFailed(Event):
    type = "cn.recycle.payments.payout.failed.v1"
    topic = "payments.payout"
    key_field = "payout_id"
    source = "/payments"
    doc = (
        "The payout failed or was returned; the ledger entries were reversed. The requester may retry with a new "
        "id. Its event id is derived from the payout id, as payout.paid's."
    )
    payout_id: str
    reference_id: str
    amount_fen: int
    reason: str
    failed_at: datetime
    # added by payments: True when the payout had been reported paid and the provider returned it later
    returned: bool = False
