"""Hold requests over the bus (topic `payments.hold`), each adapter on SQLite and PostgreSQL (the `case` fixture):
what payments answers when a request arrives that the hold's state no longer allows — a cancel after the capture,
a capture after the cancel, a capture before the payer paid. A business refusal is answered with a refusal event
and the request's state is kept; it is never a failing handler whose event ends up parked in the dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from services.contracts.payments import (
    HoldCancelRequested,
    HoldCaptureRequested,
    HoldEscrowRequested,
    HoldRequested,
)
from services.kernel.bus.port import Record
from services.kernel.events import Envelope, Event, topic_of
from services.kernel.ids import new_id
from services.kernel.outbox import outbox_t
from services.payments.hold_requests import hold_requests_of
from services.payments.ports import CONNECT_PAYOUTS
from services.payments.reconcile import reconcile

from .support import Case

AMOUNT_FEN = 5000


def _send(case: Case, *events: Event | Envelope) -> list[Envelope]:
    """Publish requests as the requesting service would, then let payments' consumers catch up."""
    envs = [e if isinstance(e, Envelope) else Envelope.wrap(e) for e in events]
    case.platform.bus.publish(
        [
            Record(topic=topic_of(e.type), key=e.subject, value=e.to_bytes(), headers={"ce_type": e.type})
            for e in envs
        ]
    )
    case.platform.drain()
    return envs


def _now() -> datetime:
    return datetime.now(UTC)


def _request(case: Case, payer: str) -> str:
    hr = new_id("hr")
    _send(
        case,
        HoldRequested(
            hold_request_id=hr,
            payer_user_id=payer,
            amount_fen=AMOUNT_FEN,
            reference_id="ref_" + hr,
            requested_by="tests",
            requested_at=_now(),
        ),
    )
    return hr


def _held(case: Case) -> tuple[str, str]:
    payer = new_id("buyer")
    hr = _request(case, payer)
    out = hold_requests_of(case.platform["payments"]).confirm(hr, payer, "pm_card_visa")
    assert out["status"] == "requires_capture"
    case.platform.drain()
    return hr, payer


def _capture(hr: str) -> HoldCaptureRequested:
    return HoldCaptureRequested(
        hold_request_id=hr,
        payee_user_id=new_id("seller"),
        payee_kind="seller",
        fee_fen=100,
        requested_by="tests",
        requested_at=_now(),
    )


def _escrow(hr: str) -> HoldEscrowRequested:
    return HoldEscrowRequested(hold_request_id=hr, requested_by="tests", requested_at=_now())


def _cancel(hr: str, reason: str = "cancelled_by_buyer") -> HoldCancelRequested:
    return HoldCancelRequested(hold_request_id=hr, reason=reason, requested_by="tests", requested_at=_now())


def _reports(case: Case, hr: str) -> list[tuple[str, dict[str, Any]]]:
    """What payments published about the request, in order: (what, data), e.g. ("captured", {...})."""
    with case.platform["payments"].db.session(readonly=True) as s:
        rows = s.execute(
            select(outbox_t.c.type, outbox_t.c.payload)
            .where(outbox_t.c.topic == "payments.hold", outbox_t.c.key == hr)
            .order_by(outbox_t.c.seq)
        ).all()
    out = []
    for r in rows:
        what = r.type.removeprefix("cn.recycle.payments.hold.").removesuffix(".v1")
        out.append((what, json.loads(r.payload)["data"]))
    return out


def _kinds(case: Case, hr: str) -> list[str]:
    return [k for k, _ in _reports(case, hr)]


def _parked(case: Case) -> int:
    return sum(r.dead_lettered for r in case.platform["payments"].runners)


def _status(case: Case, hr: str) -> str:
    return hold_requests_of(case.platform["payments"]).get(hr, "", admin=True)["status"]


def test_a_cancel_after_the_capture_is_refused_not_parked(case: Case):
    """A buyer's cancel racing the auto-confirm, a deposit's release racing its forfeit, a late duplicate: the
    capture came first and released the money to the payee, so nothing can be given back."""
    hr, _ = _held(case)
    _send(case, _capture(hr))
    assert _status(case, hr) == "captured"
    cancel = _send(case, _cancel(hr))[0]

    assert _parked(case) == 0
    assert _status(case, hr) == "captured"
    assert _kinds(case, hr) == ["opened", "authorised", "captured", "cancel_refused"]
    refusal = _reports(case, hr)[-1][1]
    assert refusal["reason"] == "already_captured" and refusal["current_state"] == "captured"
    assert refusal["reference_id"] == "ref_" + hr
    # nothing was given back (on localstripe the seller's payout fails for want of Connect and its money goes back
    # to the escrow: still the seller's, not refunded by a cancel that came too late)
    hold = case.payments.get_hold(
        hold_requests_of(case.platform["payments"]).get(hr, "", admin=True)["hold_id"]
    )
    assert (str(hold.status), hold.captured_fen, hold.refunded_fen) == ("captured", AMOUNT_FEN, 0)
    assert case.payments.ledger_problems() == []

    # the same request delivered again is answered once
    _send(case, cancel)
    assert _parked(case) == 0
    assert _kinds(case, hr).count("cancel_refused") == 1


def test_a_capture_after_the_cancel_is_refused(case: Case):
    hr, _ = _held(case)
    _send(case, _cancel(hr))
    assert _status(case, hr) == "cancelled"
    _send(case, _capture(hr))

    assert _parked(case) == 0
    assert _status(case, hr) == "cancelled"
    assert _kinds(case, hr) == ["opened", "authorised", "cancelled", "capture_refused"]
    refusal = _reports(case, hr)[-1][1]
    assert refusal["reason"] == "already_cancelled" and refusal["current_state"] == "cancelled"
    hold_id = hold_requests_of(case.platform["payments"]).get(hr, "", admin=True)["hold_id"]
    assert str(case.payments.get_hold(hold_id).status) == "cancelled"
    assert case.payments.ledger_problems() == []


def test_a_capture_before_the_payer_paid_is_refused_and_the_payment_still_waits(case: Case):
    payer = new_id("buyer")
    hr = _request(case, payer)
    _send(case, _capture(hr))

    assert _parked(case) == 0
    assert _kinds(case, hr) == ["opened", "capture_refused"]
    assert _reports(case, hr)[-1][1]["reason"] == "not_held"
    assert _status(case, hr) == "requires_payment_method"
    # the payer can still pay, and the requester capture then
    hold_requests_of(case.platform["payments"]).confirm(hr, payer, "pm_card_visa")
    case.platform.drain()
    _send(case, _capture(hr))
    assert _status(case, hr) == "captured"
    assert _kinds(case, hr)[-2:] == ["authorised", "captured"]


def _hold_of(case: Case, hr: str):  # noqa: ANN202
    return case.payments.get_hold(
        hold_requests_of(case.platform["payments"]).get(hr, "", admin=True)["hold_id"]
    )


def test_a_capture_after_the_authorisation_lapsed_is_refused_and_the_request_cancelled(case: Case):
    """The provider let the hold go (Stripe: 7 days) and told us; the requester asks to capture afterwards."""
    hr, _ = _held(case)
    case.side.expire_authorisation(_hold_of(case, hr))
    case.side.deliver()
    # told at once, unasked: the requester can stop the sale before anything leaves
    assert _kinds(case, hr) == ["opened", "authorised", "cancelled"]
    assert _status(case, hr) == "cancelled"
    _send(case, _capture(hr), _escrow(hr))

    assert _parked(case) == 0
    assert _status(case, hr) == "cancelled"
    assert _kinds(case, hr) == ["opened", "authorised", "cancelled", "capture_refused", "capture_refused"]
    cancelled = _reports(case, hr)[2][1]
    assert cancelled["reason"] == "authorisation_lapsed"
    for _, refusal in _reports(case, hr)[3:]:
        assert (refusal["reason"], refusal["current_state"]) == ("authorisation_lapsed", "cancelled")
    assert str(_hold_of(case, hr).status) == "cancelled"
    assert case.payments.ledger_problems() == []


def test_a_cancel_after_the_authorisation_lapsed_cancels_the_request_once(case: Case):
    hr, _ = _held(case)
    case.side.expire_authorisation(_hold_of(case, hr))
    case.side.deliver()
    _send(case, _cancel(hr), _cancel(hr, "a second request"))

    assert _parked(case) == 0
    assert _status(case, hr) == "cancelled"
    assert _kinds(case, hr) == ["opened", "authorised", "cancelled"]
    assert case.payments.ledger_problems() == []


def test_a_hold_the_provider_captured_is_released_on_capture_and_refunded_on_cancel(case: Case):
    """Captured outside our capture (the dashboard, or our capture's crash before its commit): its event booked it
    into the escrow; the requester's capture releases it, its cancel refunds it."""
    released, _ = _held(case)
    case.side.capture_directly(_hold_of(case, released), AMOUNT_FEN)
    refunded, _ = _held(case)
    case.side.capture_directly(_hold_of(case, refunded), AMOUNT_FEN)
    case.side.deliver()
    assert str(_hold_of(case, released).status) == str(_hold_of(case, refunded).status) == "captured"

    _send(case, _capture(released), _cancel(refunded))
    assert _parked(case) == 0
    assert (_status(case, released), _status(case, refunded)) == ("captured", "refunded")
    assert (
        _kinds(case, released)[-1] == "captured"
        and _reports(case, released)[-1][1]["captured_fen"] == AMOUNT_FEN
    )
    assert _kinds(case, refunded)[-1] == "refunded"
    assert _hold_of(case, refunded).refunded_fen == AMOUNT_FEN
    assert case.payments.ledger_problems() == []


def test_a_capture_that_can_never_be_paid_is_refused_before_anything_is_taken(case: Case):
    """A fee of the whole hold or more, or a payee kind we do not pay: nothing is captured at the provider (it used
    to be captured, then the release failed the handler, rolled back our books and parked the request)."""
    hr, _ = _held(case)
    whole_fee = _capture(hr).model_copy(update={"fee_fen": AMOUNT_FEN})
    odd_payee = _capture(hr).model_copy(update={"payee_kind": "martian"})
    _send(case, whole_fee, odd_payee)

    assert _parked(case) == 0
    assert _status(case, hr) == "requires_capture"
    assert [(k, d["reason"]) for k, d in _reports(case, hr)[2:]] == [
        ("capture_refused", "invalid_fee"),
        ("capture_refused", "invalid_payee_kind"),
    ]
    hold = _hold_of(case, hr)
    assert (str(hold.status), hold.captured_fen) == ("authorised", 0)
    assert reconcile(case.payments).ok  # the provider's intent is still uncaptured, as our books say
    # a valid capture afterwards takes it
    _send(case, _capture(hr))
    assert _status(case, hr) == "captured"


def _escrowed(case: Case) -> str:
    hr, _ = _held(case)
    _send(case, _escrow(hr))
    assert _status(case, hr) == "escrowed"
    return hr


def test_an_escrow_request_captures_into_escrow_and_a_capture_then_releases_it(case: Case):
    """Listings asks for the escrow when the seller ships (so the authorisation cannot lapse in transit) and for
    the release when the buyer confirms: one capture at the provider, then the payout less the fee."""
    hr = _escrowed(case)
    hold = _hold_of(case, hr)
    assert (str(hold.status), hold.captured_fen, hold.released_fen) == ("captured", AMOUNT_FEN, 0)
    assert case.payments.account_balance(f"escrow:{hold.id}") == AMOUNT_FEN
    escrowed = _reports(case, hr)[-1]
    assert escrowed[0] == "escrowed" and (escrowed[1]["captured_fen"], escrowed[1]["hold_id"]) == (
        AMOUNT_FEN,
        hold.id,
    )
    assert reconcile(case.payments).ok  # the provider's intent is captured, as our books say
    # asked again: answered already; the payer's confirm route sees it paid
    _send(case, _escrow(hr))
    assert _kinds(case, hr) == ["opened", "authorised", "escrowed"]
    payer = hold.payer_user_id
    assert (
        hold_requests_of(case.platform["payments"]).confirm(hr, payer, "pm_card_visa")["status"] == "escrowed"
    )

    _send(case, _capture(hr), _capture(hr), _escrow(hr))
    assert _parked(case) == 0
    assert _status(case, hr) == "captured"
    assert _kinds(case, hr) == ["opened", "authorised", "escrowed", "captured"]
    captured = _reports(case, hr)[-1][1]
    assert (captured["captured_fen"], captured["fee_fen"], captured["released_fen"]) == (
        AMOUNT_FEN,
        100,
        AMOUNT_FEN - 100,
    )
    hold = _hold_of(case, hr)
    # on localstripe the seller's payout fails for want of Connect and its money goes back to the escrow
    released = AMOUNT_FEN if case.has(CONNECT_PAYOUTS) else 0
    assert (hold.captured_fen, hold.released_fen, hold.refunded_fen) == (AMOUNT_FEN, released, 0)
    assert case.payments.ledger_problems() == []


def test_a_cancel_after_the_escrow_refunds_it_in_full(case: Case):
    hr = _escrowed(case)
    _send(case, _cancel(hr, "cancelled_by_seller"), _cancel(hr, "again"), _capture(hr))
    assert _parked(case) == 0
    assert _status(case, hr) == "refunded"
    assert _kinds(case, hr) == ["opened", "authorised", "escrowed", "refunded", "capture_refused"]
    refunded, refusal = (d for _, d in _reports(case, hr)[-2:])
    assert refunded["amount_fen"] == AMOUNT_FEN
    assert (refusal["reason"], refusal["current_state"]) == ("already_refunded", "refunded")
    hold = _hold_of(case, hr)
    assert (hold.captured_fen, hold.refunded_fen, hold.released_fen) == (AMOUNT_FEN, AMOUNT_FEN, 0)
    assert case.payments.account_balance(f"escrow:{hold.id}") == 0
    assert case.payments.ledger_problems() == []


def test_an_escrow_request_the_hold_does_not_allow_is_refused(case: Case):
    payer = new_id("buyer")
    unpaid = _request(case, payer)
    cancelled, _ = _held(case)
    _send(case, _cancel(cancelled))
    _send(case, _escrow(unpaid), _escrow(cancelled))

    assert _parked(case) == 0
    assert [(k, d["reason"]) for k, d in _reports(case, unpaid)[1:]] == [("capture_refused", "not_held")]
    assert [(k, d["reason"]) for k, d in _reports(case, cancelled)[3:]] == [
        ("capture_refused", "already_cancelled")
    ]
    assert (_status(case, unpaid), _status(case, cancelled)) == ("requires_payment_method", "cancelled")


def test_a_hold_the_provider_captured_is_escrowed_without_a_second_capture(case: Case):
    hr, _ = _held(case)
    case.side.capture_directly(_hold_of(case, hr), AMOUNT_FEN)
    case.side.deliver()
    _send(case, _escrow(hr))
    assert _status(case, hr) == "escrowed"
    assert _reports(case, hr)[-1][1]["captured_fen"] == AMOUNT_FEN
    _send(case, _capture(hr))
    assert _status(case, hr) == "captured" and _kinds(case, hr).count("captured") == 1
    assert case.payments.ledger_problems() == []


def test_a_lapse_found_by_the_escrow_capture_before_its_event_is_booked_and_refused(case: Case):
    """The provider let the authorisation go and its event (webhook) has not reached us when the escrow request
    comes: the capture fails at the provider, payments reads the intent, books the lapse as the event would and
    refuses; nothing is parked, and the event arriving afterwards changes nothing."""
    hr, _ = _held(case)
    case.side.expire_authorisation(_hold_of(case, hr))  # not delivered yet
    _send(case, _escrow(hr))

    assert _parked(case) == 0
    assert _status(case, hr) == "cancelled"
    assert _kinds(case, hr) == ["opened", "authorised", "cancelled", "capture_refused"]
    assert [d["reason"] for _, d in _reports(case, hr)[2:]] == ["authorisation_lapsed"] * 2
    hold = _hold_of(case, hr)
    assert (str(hold.status), hold.captured_fen) == ("cancelled", 0)
    case.side.deliver()
    _send(case, _capture(hr))
    assert _kinds(case, hr) == ["opened", "authorised", "cancelled", "capture_refused", "capture_refused"]
    assert case.payments.ledger_problems() == []
    assert reconcile(case.payments).ok
