"""Issuer payloads read into one shape; bad ones refused with the reason."""

from __future__ import annotations

import json

import pytest

from schemas.common import Issuer, ReasonCode
from schemas.issuer_events import (
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationReversed,
    ForcePosted,
    RefundPosted,
)
from schemas.money import Money
from services.gateway.issuers import (
    Ask,
    Ignored,
    Notice,
    WebhookInvalid,
    _alpha_2,
    lithic_answer,
    read_generic,
    read_lithic,
    read_stripe,
    stripe_answer,
)
from services.gateway.simulator import (
    generic_authorization_request,
    lithic_asa,
    stripe_amount_changed,
    stripe_authorization_created,
    stripe_authorization_request,
    stripe_capture,
    stripe_incremental_request,
    stripe_refund,
    stripe_reversal,
)


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_a_stripe_authorization_request_reads_amounts_merchant_and_card() -> None:
    """pending_request's amounts, merchant_data's MCC and network id, the card's id."""
    ask = read_stripe(_body(stripe_authorization_request("iauth_1", "ic_1", 1_250)))
    assert isinstance(ask, Ask)
    assert (ask.issuer, ask.issuer_authorization_id, ask.card_token, ask.amount, ask.merchant.mcc) == (
        Issuer.STRIPE,
        "iauth_1",
        "ic_1",
        Money.of(1_250, "USD"),
        "5734",
    )


def test_a_stripe_increment_is_an_ask_of_its_own_naming_the_authorization_it_grows() -> None:
    """Stripe asks again on an approved authorization for an increment (its `amount` is what was
    approved so far, `request_history` the earlier request): the ask has its own id, one per event,
    and names the authorization; a retry of the first request keeps the first request's id.
    """
    first = read_stripe(_body(stripe_authorization_request("iauth_h", "ic_1", 6_000)))
    event = stripe_incremental_request("iauth_h", "ic_1", 2_500, approved_minor=6_000)
    increment = read_stripe(_body(event))
    history_only = read_stripe(_body(event | {"data": {"object": event["data"]["object"] | {"amount": 0}}}))
    assert isinstance(first, Ask)
    assert isinstance(increment, Ask)
    assert isinstance(history_only, Ask)
    assert (first.issuer_authorization_id, first.increment_of) == ("iauth_h", None)
    assert (increment.issuer_authorization_id, increment.increment_of, increment.amount) == (
        f"iauth_h:{event['id']}",
        "iauth_h",
        Money.of(2_500, "USD"),
    )
    assert history_only.increment_of == "iauth_h"


def test_a_stripe_refund_reversed_is_spend_not_another_refund() -> None:
    """A refund's amount is positive; a refund with a negative amount is that refund reversed (the
    merchant takes the money back): spend we were not asked about, like a force capture.
    """
    refunded = read_stripe(_body(stripe_refund("ipi_r1", "ic_1", 600, "iauth_1")))
    taken_back = read_stripe(_body(stripe_refund("ipi_r2", "ic_1", 600, "iauth_1", reversed_=True)))
    assert isinstance(refunded, Notice)
    assert isinstance(taken_back, Notice)
    assert [(n.event_type, n.fields["amount"], n.fields["issuer_transaction_id"]) for n in (refunded, taken_back)] == [
        (RefundPosted, Money.of(600, "USD"), "ipi_r1"),
        (ForcePosted, Money.of(600, "USD"), "ipi_r2"),
    ]


def test_stripe_lifecycle_events_become_our_contracts() -> None:
    """A capture clears, a capture without authorization is a force-post, a reversal releases."""
    cleared = read_stripe(_body(stripe_capture("ipi_1", "ic_1", 900, "iauth_1")))
    forced = read_stripe(_body(stripe_capture("ipi_2", "ic_1", 300, None)))
    reversed_ = read_stripe(_body(stripe_reversal("iauth_1", "ic_1", 1_000)))
    assert isinstance(cleared, Notice)
    assert isinstance(forced, Notice)
    assert isinstance(reversed_, Notice)
    assert [(n.event_type, n.fields.get("amount")) for n in (cleared, forced, reversed_)] == [
        (AuthorizationCleared, Money.of(900, "USD")),
        (ForcePosted, Money.of(300, "USD")),
        (AuthorizationReversed, Money.of(1_000, "USD")),
    ]


def test_an_authorization_stripe_created_approved_is_a_hold_and_a_declined_one_nothing() -> None:
    """issuing_authorization.created: approved, its amount is held at Stripe whoever decided (a
    notice for the gateway to publish unless the approval was ours); declined, it moved no money.
    """
    approved = read_stripe(_body(stripe_authorization_created("iauth_1", "ic_1", 700)))
    assert isinstance(approved, Notice)
    assert (approved.event_type, approved.card_token) == (AuthorizationApprovedByIssuer, "ic_1")
    assert {k: approved.fields[k] for k in ("issuer_authorization_id", "amount", "merchant_amount")} == {
        "issuer_authorization_id": "iauth_1",
        "amount": Money.of(700, "USD"),
        "merchant_amount": Money.of(700, "USD"),
    }
    assert approved.fields["merchant"].mcc == "5734"
    declined = stripe_authorization_created("iauth_2", "ic_1", 700, approved=False, reason="webhook_declined")
    assert read_stripe(_body(declined)) == Ignored("issuing_authorization.created (declined)")


def test_an_informational_stripe_event_is_ignored() -> None:
    """Types we do not act on are acknowledged, not acted on."""
    event = stripe_authorization_request("iauth_1", "ic_1", 100) | {"type": "issuing_card.updated"}
    assert read_stripe(_body(event)) == Ignored("issuing_card.updated")


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda e: e.pop("data"), "data"),
        (lambda e: e["data"]["object"]["pending_request"].update(amount="12.50"), "amount"),
        (lambda e: e["data"]["object"]["pending_request"].update(amount=12.5), "amount"),
        (lambda e: e["data"]["object"]["pending_request"].update(currency="xyz"), "unknown currency"),
        (lambda e: e["data"]["object"]["pending_request"].update(amount=10**12), "less than or equal"),
        (lambda e: e["data"]["object"]["merchant_data"].update(category_code="computer"), "mcc"),
        (lambda e: e["data"]["object"].pop("pending_request"), "pending_request"),
    ],
)
def test_a_bad_stripe_request_is_refused_with_the_reason(mutate: object, says: str) -> None:
    """Missing parts, wrong types, unknown currencies, huge amounts, a non-numeric MCC."""
    event = stripe_authorization_request("iauth_1", "ic_1", 100)
    mutate(event)  # type: ignore[operator]
    with pytest.raises(WebhookInvalid, match=says):
        read_stripe(_body(event))


def test_not_json_is_refused() -> None:
    """A body that is not JSON says so."""
    with pytest.raises(WebhookInvalid, match="not JSON"):
        read_stripe(b"{not json")


def test_lithic_asa_reads_and_answers_in_lithics_words() -> None:
    """The ASA token is the authorization id; our reasons map to Lithic's results."""
    ask = read_lithic(_body(lithic_asa("tok_1", "card_tok", 500)))
    assert (ask.issuer, ask.issuer_authorization_id, ask.card_token, ask.amount, ask.merchant.country) == (
        Issuer.LITHIC,
        "tok_1",
        "card_tok",
        Money.of(500, "USD"),
        "US",  # Lithic sends alpha-3 ("USA"); the contract holds alpha-2
    )
    assert [lithic_answer("tok_1", reason)["result"] for reason in ReasonCode] == [
        "APPROVED", *["CARD_PAUSED"] * 6, *["UNAUTHORIZED_MERCHANT"] * 6, "VELOCITY_EXCEEDED",
        "INSUFFICIENT_FUNDS", "INSUFFICIENT_FUNDS",
        *["VELOCITY_EXCEEDED"] * 11, *["CARD_PAUSED"] * 4,
    ]  # fmt: skip


def test_lithic_statuses_other_than_authorizations_are_refused() -> None:
    """A balance inquiry is not an authorization to decide."""
    with pytest.raises(WebhookInvalid, match="BALANCE_INQUIRY"):
        read_lithic(_body(lithic_asa("tok_1", "card_tok", 0) | {"status": "BALANCE_INQUIRY"}))


def test_the_generic_shape_reads_requests_and_lifecycle_events() -> None:
    """An authorization request, and a clearing in our contract's own fields."""
    ask = read_generic(_body(generic_authorization_request("g1", "gc1", 700)))
    notice = read_generic(
        _body(
            {
                "id": "ev1",
                "type": "authorization_cleared",
                "card_token": "gc1",
                "occurred_at": "2026-11-23T10:00:00Z",
                "issuer_authorization_id": "g1",
                "issuer_transaction_id": "t1",
                "amount": {"amount_minor": 700, "currency": "USD"},
            }
        )
    )
    assert isinstance(ask, Ask)
    assert isinstance(notice, Notice)
    assert (ask.amount, ask.merchant_amount, notice.event_type, notice.fields["issuer_transaction_id"]) == (
        Money.of(700, "USD"),
        Money.of(700, "USD"),
        AuthorizationCleared,
        "t1",
    )


def test_stripe_answers_carry_the_reason_in_metadata() -> None:
    """{"approved": ..., "metadata": {"pursestrings_reason": ...}}."""
    assert stripe_answer(approved=False, reason=ReasonCode.TRACE_CAP) == {
        "approved": False,
        "metadata": {"pursestrings_reason": "trace_cap"},
    }


def test_a_stripe_authorization_held_for_more_is_approved_by_the_issuer_and_for_less_reversed() -> None:
    """issuing_authorization.updated of a pending authorization: a higher amount is an increment
    Stripe approved (we decline those we are asked), held as Stripe holds it (the new total); a
    lower one releases the difference.
    """
    raised = read_stripe(_body(stripe_amount_changed("iauth_1", "ic_1", 900, 600)))
    lowered = read_stripe(_body(stripe_amount_changed("iauth_1", "ic_1", 400, 600)))
    assert isinstance(raised, Notice)
    assert isinstance(lowered, Notice)
    assert [(n.event_type, n.fields["amount"]) for n in (raised, lowered)] == [
        (AuthorizationApprovedByIssuer, Money.of(900, "USD")),
        (AuthorizationReversed, Money.of(200, "USD")),
    ]


def test_merchant_countries_are_read_as_alpha_2_from_either_issuers_code() -> None:
    """Stripe's alpha-2 and Lithic's alpha-3 both become the alpha-2 code country rules name; an
    unknown or malformed code is no country (an allow list then declines it).
    """
    assert [_alpha_2(code) for code in ("US", "ca", "USA", "deu", " FRA ", "XXX", "U1", "", None)] == [
        "US", "CA", "US", "DE", "FR", None, None, None, None,
    ]  # fmt: skip
