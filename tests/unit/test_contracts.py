"""Every contract round-trips through its topic's parser, and bad messages are refused clearly."""

from __future__ import annotations

import json
import typing
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, ReasonCode
from schemas.issuer_events import AuthorizationExpired
from schemas.policies import CardCaps, WalletCaps
from schemas.registry import TOPIC_MESSAGES, InvalidMessage, parse, serialize
from schemas.topics import Topic, message_key
from schemas.wallet import CreateCard, CreateWallet, RaiseCap, UpdateCaps
from tests.support.samples import NOW, samples, usd

ALL_SAMPLES = [(topic, message) for topic, messages in samples().items() for message in messages]


def _types_on(topic: Topic) -> set[str]:
    kind = TOPIC_MESSAGES[topic]
    members = typing.get_args(typing.get_args(kind)[0]) if typing.get_origin(kind) is typing.Annotated else (kind,)
    return {member.model_fields["type"].default for member in members}


def test_every_contract_has_a_sample() -> None:
    """No contract escapes the round-trip tests: the samples cover every type on every topic."""
    covered = {topic: {message.type for message in messages} for topic, messages in samples().items()}
    assert covered == {topic: _types_on(topic) for topic in Topic}


@pytest.mark.parametrize(("topic", "message"), ALL_SAMPLES, ids=lambda value: getattr(value, "type", str(value)))
def test_contract_round_trips_through_its_topic(topic: Topic, message: BaseModel) -> None:
    """Serialize → parse gives back an equal, frozen value with schema_version 1 (2 only for a
    `MoneyMoved` that places a hold, our deadline's expiry with the request's amount, and caps with
    a weekly, yearly or all-time limit).
    """
    parsed = parse(topic, serialize(message))
    expired_with_amount = isinstance(message, AuthorizationExpired) and message.amount is not None
    new_interval = any(
        caps.needs_version_2()
        for caps in (getattr(message, name, None) for name in ("caps", "wallet_caps", "card_caps"))
        if isinstance(caps, WalletCaps | CardCaps)
    )
    version = 2 if getattr(message, "hold_placed_minor", 0) or expired_with_amount or new_interval else 1
    assert (parsed, parsed.schema_version) == (message, version)
    with pytest.raises(ValidationError):
        setattr(parsed, "schema_version", 3)  # noqa: B010 - mypy rightly refuses the plain assignment


def test_the_amount_of_an_expiry_is_our_deadlines_and_needs_version_2() -> None:
    """Only the gateway's deadline names the request's amount, and only in version 2."""
    expiry = next(
        m for m in samples()[Topic.ISSUER_EVENTS] if getattr(m, "amount", None) and m.type == "authorization_expired"
    )
    for changes in ({"schema_version": 1}, {"cause": "issuer_expired"}):
        with pytest.raises(InvalidMessage, match="needs schema_version 2"):
            parse(Topic.ISSUER_EVENTS, _mutated(expiry, **changes))


def test_a_hold_placed_by_the_issuer_needs_money_moved_version_2() -> None:
    """A reader of version 1 never meets a placed hold: version 1 with one is refused, naming why."""
    placed = next(m for m in samples()[Topic.WALLET_EVENTS] if getattr(m, "hold_placed_minor", 0))
    with pytest.raises(InvalidMessage, match="needs schema_version 2"):
        parse(Topic.WALLET_EVENTS, _mutated(placed, schema_version=1))
    with pytest.raises(InvalidMessage, match="needs schema_version 2"):
        parse(Topic.WALLET_EVENTS, _mutated(placed, schema_version=1, hold_placed_minor=0))


def test_weekly_yearly_and_all_time_caps_need_version_2() -> None:
    """A caps contract that sets an interval added in version 2 is version 2 unless it says 1; one
    that says 1 is refused, naming why (a reader of version 1 would drop the cap).
    """
    for topic in (Topic.WALLET_COMMANDS, Topic.WALLET_EVENTS):
        newer = [m for m in samples()[topic] if getattr(m, "schema_version", 1) == 2 and "caps" in m.type]
        assert newer, f"no caps sample of version 2 on {topic}"
        for message in newer:
            with pytest.raises(InvalidMessage, match="need schema_version 2"):
                parse(topic, _mutated(message, schema_version=1))
            assert parse(topic, _mutated(message, schema_version=...)).schema_version == 2


def test_message_key_is_the_wallet_id() -> None:
    """Every wallet-scoped message is keyed by its wallet id."""
    assert {message_key(message) for _, message in ALL_SAMPLES} == {b"wal_research_01"}


def _mutated(message: BaseModel, **changes: Any) -> bytes:
    payload = json.loads(serialize(message))
    for key, value in changes.items():
        if value is ...:
            payload.pop(key)
        else:
            payload[key] = value
    return json.dumps(payload).encode()


@pytest.mark.parametrize(("topic", "message"), ALL_SAMPLES, ids=lambda value: getattr(value, "type", str(value)))
@pytest.mark.parametrize(
    ("changes", "message_part"),
    [
        ({"schema_version": 3}, "schema_version"),
        ({"wallet_id": ...}, "wallet_id"),
        ({"wallet_id": "has space"}, "wallet_id"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"type": "no_such_type"}, "does not match any of the expected tags"),
    ],
)
def test_bad_messages_are_refused_with_the_field_named(
    topic: Topic, message: BaseModel, changes: dict[str, Any], message_part: str
) -> None:
    """Wrong versions, missing or malformed fields and unknown types raise InvalidMessage naming the problem."""
    raw = _mutated(message, **changes)
    if "type" in changes and topic in (Topic.AUTH_REQUESTS, Topic.AUTH_DECISIONS):
        message_part = "type"  # a single-model topic reports the literal, not a union tag
    with pytest.raises(InvalidMessage, match=message_part):
        parse(topic, raw)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b"null", b'{"type": "authorization_requested"}'])
def test_malformed_bytes_are_refused(raw: bytes) -> None:
    """Bytes that are not a message are refused, never half-parsed."""
    with pytest.raises(InvalidMessage):
        parse(Topic.AUTH_REQUESTS, raw)


def test_naive_timestamps_are_refused() -> None:
    """A time without a zone is ambiguous for a 24 h window: refused."""
    request = samples()[Topic.AUTH_REQUESTS][0]
    with pytest.raises(InvalidMessage, match="timezone"):
        parse(Topic.AUTH_REQUESTS, _mutated(request, requested_at="2026-11-23T12:00:00"))


def test_float_amount_inside_a_message_is_refused() -> None:
    """A float amount deep inside a contract fails with the money message."""
    request = samples()[Topic.AUTH_REQUESTS][0]
    raw = _mutated(request, amount={"amount_minor": 1.2, "currency": "USD"})
    with pytest.raises(InvalidMessage, match="never a float"):
        parse(Topic.AUTH_REQUESTS, raw)


def test_decision_reason_must_agree_with_outcome() -> None:
    """`approved` true with a decline reason (or the reverse) is a contradiction, refused."""
    decline = samples()[Topic.AUTH_DECISIONS][0]
    with pytest.raises(InvalidMessage, match="contradicts reason"):
        parse(Topic.AUTH_DECISIONS, _mutated(decline, approved=True))
    approval = samples()[Topic.AUTH_DECISIONS][1]
    with pytest.raises(InvalidMessage, match="must say when its hold expires"):
        parse(Topic.AUTH_DECISIONS, _mutated(approval, hold_expires_at=None))
    assert ReasonCode.APPROVED.value == "approved"


def test_an_increment_is_version_2_and_version_2_is_an_increment() -> None:
    """A request or decision naming `increment_of` is version 2, and version 2 names it; an
    increment has an id of its own. Either half alone is refused, naming why.
    """
    request = samples()[Topic.AUTH_REQUESTS][0]
    decision = samples()[Topic.AUTH_DECISIONS][0]
    asked = parse(Topic.AUTH_REQUESTS, _mutated(request, schema_version=2, increment_of="iauth_base"))
    answered = parse(Topic.AUTH_DECISIONS, _mutated(decision, schema_version=2, increment_of="iauth_base"))
    assert isinstance(asked, AuthorizationRequested)
    assert isinstance(answered, AuthorizationDecided)
    assert (asked.increment_of, answered.increment_of) == ("iauth_base", "iauth_base")
    own_id = getattr(request, "issuer_authorization_id", "")
    cases: list[tuple[Topic, Any, dict[str, Any]]] = [
        (Topic.AUTH_REQUESTS, request, {"schema_version": 2}),
        (Topic.AUTH_REQUESTS, request, {"increment_of": "iauth_base"}),
        (Topic.AUTH_REQUESTS, request, {"schema_version": 2, "increment_of": own_id}),
        (Topic.AUTH_DECISIONS, decision, {"schema_version": 2}),
        (Topic.AUTH_DECISIONS, decision, {"increment_of": "iauth_base"}),
    ]
    for topic, message, changes in cases:
        with pytest.raises(InvalidMessage, match="increment"):
            parse(topic, _mutated(message, **changes))


def test_request_deadline_cannot_precede_the_request() -> None:
    """A deadline before the request is a clock or shape error."""
    request = samples()[Topic.AUTH_REQUESTS][0]
    raw = _mutated(request, deadline_at=(NOW - timedelta(seconds=1)).isoformat())
    with pytest.raises(InvalidMessage, match="deadline_at is before requested_at"):
        parse(Topic.AUTH_REQUESTS, raw)


def _command(**fields: Any) -> dict[str, Any]:
    return {"command_id": uuid.uuid4(), "wallet_id": "w1", "actor": "ops", "issued_at": NOW, **fields}


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (CreateWallet, {"time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        (CreateWallet, {"currency": "EUR", "raise_step": usd(100)}, "amount in USD on a EUR wallet"),
        (
            CreateWallet,
            {"caps": {"monthly": usd(1), "rolling_24h": {"amount_minor": 1, "currency": "EUR"}}},
            "one currency",
        ),
        (
            CreateCard,
            {"card_id": "c", "issuer": "stripe", "issuer_card_token": "t", "last4": "42"},
            "should match pattern",
        ),
        (
            CreateCard,
            {
                "card_id": "c",
                "issuer": "stripe",
                "issuer_card_token": "t",
                "last4": "4242",
                "mcc_allow": ["5734"],
                "mcc_block": ["5734"],
            },
            "both allowed and blocked",
        ),
        (CreateCard, {"card_id": "c", "issuer": "visa", "issuer_card_token": "t", "last4": "4242"}, "issuer"),
        (UpdateCaps, {"card_id": "c"}, "give card_id with card_caps"),
        (UpdateCaps, {}, "give card_id with card_caps"),
        (RaiseCap, {"cap": CapKind.TRACE, "amount": usd(100), "until": NOW}, "needs trace_id"),
        (RaiseCap, {"cap": CapKind.CARD_MONTHLY, "amount": usd(100), "until": NOW}, "needs card_id"),
        (RaiseCap, {"cap": CapKind.WALLET_MONTHLY, "amount": usd(0), "until": NOW}, "a raise of zero"),
    ],
)
def test_commands_refuse_inconsistent_input(model: type[BaseModel], fields: dict[str, Any], message: str) -> None:
    """Each command checks what only makes sense together, with an error a human can act on."""
    with pytest.raises(ValidationError, match=message):
        model.model_validate(_command(**fields))
