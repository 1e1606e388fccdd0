"""One valid instance of every contract, for round-trip tests on and off the broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, CapStatus, Issuer, Merchant, ReasonCode
from schemas.issuer_events import (
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationExpired,
    AuthorizationReversed,
    ForcePosted,
    RefundPosted,
)
from schemas.money import Money
from schemas.policies import CardCaps, PolicyTemplate, WalletCaps
from schemas.registry import Message
from schemas.topics import Topic
from schemas.wallet import (
    BindTrace,
    CapBreachedByIssuer,
    CapRaised,
    CapsUpdated,
    CardCreated,
    CloseCard,
    CloseWallet,
    CommandRejected,
    CreateCard,
    CreateWallet,
    DeclineStreakLimitSet,
    FreezeCard,
    FreezeWallet,
    MerchantCountriesSet,
    MoneyMoved,
    RaiseCap,
    SetDeclineStreakLimit,
    SetMerchantCountries,
    SetVelocityLimit,
    StatusChanged,
    TraceBound,
    UnfreezeCard,
    UnfreezeWallet,
    UpdateCaps,
    VelocityLimitSet,
    WalletCreated,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MERCHANT = Merchant(name="Anthropic", mcc="5734", network_id="anthropic_api_1", country="US", city="San Francisco")


def usd(amount_minor: int) -> Money:
    """Dollars in cents."""
    return Money.of(amount_minor, "USD")


def samples(wallet_id: str = "wal_research_01") -> dict[Topic, list[Message]]:
    """Every contract type, valid, grouped by the topic it travels on."""
    ids: dict[str, Any] = {"wallet_id": wallet_id}
    event: dict[str, Any] = {"event_id": uuid.uuid4(), **ids}
    command: dict[str, Any] = {"command_id": uuid.uuid4(), "actor": "ops@example.com", "issued_at": NOW, **ids}
    wallet_event: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "command_id": uuid.uuid4(),
        "actor": "authorizer",
        "occurred_at": NOW,
        **ids,
    }
    lifecycle: dict[str, Any] = {**event, "card_id": "card_1", "issuer": Issuer.STRIPE, "occurred_at": NOW}
    wallet_caps = WalletCaps(rolling_24h=usd(1500), monthly=usd(30000), per_trace=usd(2000), per_authorization=usd(500))
    card_caps = CardCaps(per_authorization=usd(150), rolling_24h=usd(1000))
    cap = CapStatus(
        cap=CapKind.WALLET_ROLLING_24H,
        scope_id=wallet_id,
        limit=usd(1500),
        spent=usd(1000),
        held=usd(200),
        remaining=usd(300),
        over_by=usd(0),
    )
    return {
        Topic.AUTH_REQUESTS: [
            AuthorizationRequested(
                **event,
                card_id="card_1",
                issuer=Issuer.STRIPE,
                issuer_authorization_id="iauth_1",
                amount=usd(120),
                merchant_amount=Money.of(110, "EUR"),
                merchant=MERCHANT,
                requested_at=NOW,
                deadline_at=NOW + timedelta(milliseconds=1500),
            )
        ],
        Topic.AUTH_DECISIONS: [
            AuthorizationDecided(
                **event,
                request_event_id=uuid.uuid4(),
                card_id="card_1",
                issuer=Issuer.STRIPE,
                issuer_authorization_id="iauth_1",
                approved=False,
                reason=ReasonCode.WALLET_ROLLING_24H_CAP,
                failed_cap=CapKind.WALLET_ROLLING_24H,
                amount=usd(400),
                cap_amount=usd(400),
                merchant=MERCHANT,
                trace_id="PR-4823",
                caps=(cap,),
                decided_at=NOW,
            ),
            AuthorizationDecided(
                **{**event, "event_id": uuid.uuid4()},
                request_event_id=uuid.uuid4(),
                card_id="card_1",
                issuer=Issuer.LITHIC,
                issuer_authorization_id="iauth_2",
                approved=True,
                reason=ReasonCode.APPROVED,
                amount=usd(100),
                cap_amount=usd(100),
                merchant=MERCHANT,
                caps=(cap,),
                decided_at=NOW,
                hold_expires_at=NOW + timedelta(days=7),
            ),
        ],
        Topic.ISSUER_EVENTS: [
            AuthorizationCleared(
                **lifecycle, issuer_authorization_id="iauth_2", issuer_transaction_id="itx_1", amount=usd(90)
            ),
            AuthorizationReversed(**lifecycle, issuer_authorization_id="iauth_3", amount=usd(50), full=False),
            AuthorizationExpired(**lifecycle, issuer_authorization_id="iauth_4", cause="gateway_deadline"),
            AuthorizationExpired(
                **lifecycle | {"event_id": uuid.uuid4()},
                schema_version=2,
                issuer_authorization_id="iauth_5",
                cause="gateway_deadline",
                amount=usd(450),
            ),
            RefundPosted(**lifecycle, issuer_transaction_id="itx_2", issuer_authorization_id="iauth_2", amount=usd(30)),
            ForcePosted(**lifecycle, issuer_transaction_id="itx_3", amount=usd(999), merchant=MERCHANT),
            AuthorizationApprovedByIssuer(
                **lifecycle,
                issuer_authorization_id="iauth_4",
                amount=usd(700),
                merchant_amount=usd(700),
                merchant=MERCHANT,
            ),
        ],
        Topic.WALLET_COMMANDS: [
            CreateWallet(
                **command,
                template=PolicyTemplate.RESEARCH_AGENT,
                time_zone="Europe/Paris",
                label="research agent",
                caps=wallet_caps,
                slack_channel="agent-spend",
                approvers=("U123",),
                raise_step=usd(500),
                max_raise=usd(10000),
            ),
            CreateCard(
                **command | {"command_id": uuid.uuid4()},
                card_id="card_1",
                issuer=Issuer.STRIPE,
                issuer_card_token="ic_1Abc",
                last4="4242",
                label="model APIs",
                funded_amount=usd(2000),
                caps=card_caps,
                mcc_allow=frozenset({"5734", "7372"}),
                mcc_block=frozenset({"7995"}),
                merchant_lock="anthropic_api_1",
                expires_at=NOW + timedelta(days=365),
            ),
            UpdateCaps(**command | {"command_id": uuid.uuid4()}, wallet_caps=wallet_caps),
            UpdateCaps(**command | {"command_id": uuid.uuid4()}, card_id="card_1", card_caps=card_caps),
            FreezeCard(**command | {"command_id": uuid.uuid4()}, card_id="card_1", reason="runaway loop"),
            UnfreezeCard(**command | {"command_id": uuid.uuid4()}, card_id="card_1", reason="fixed"),
            FreezeWallet(**command | {"command_id": uuid.uuid4()}, reason="kill switch"),
            UnfreezeWallet(**command | {"command_id": uuid.uuid4()}, reason="all clear"),
            CloseCard(**command | {"command_id": uuid.uuid4()}, card_id="card_1", reason="task done"),
            CloseWallet(**command | {"command_id": uuid.uuid4()}, reason="agent retired"),
            BindTrace(**command | {"command_id": uuid.uuid4()}, trace_id="PR-4823", card_id="card_1", cap=usd(2000)),
            RaiseCap(
                **command | {"command_id": uuid.uuid4()},
                cap=CapKind.WALLET_ROLLING_24H,
                amount=usd(500),
                until=NOW + timedelta(hours=12),
            ),
            SetVelocityLimit(**command | {"command_id": uuid.uuid4()}, card_id="card_1", max_authorizations=5),
            SetDeclineStreakLimit(**command | {"command_id": uuid.uuid4()}, max_declines=10),
            SetMerchantCountries(
                **command | {"command_id": uuid.uuid4()}, card_id="card_1", allow=frozenset({"US", "CA"})
            ),
            UpdateCaps(  # version 2: an interval added then
                **command | {"command_id": uuid.uuid4()},
                wallet_caps=WalletCaps(weekly=usd(10_000), yearly=usd(500_000), all_time=usd(2_000_000)),
            ),
        ],
        Topic.WALLET_EVENTS: [
            WalletCreated(
                **wallet_event,
                template=PolicyTemplate.STARTER,
                currency="USD",
                time_zone="UTC",
                label="",
                caps=wallet_caps,
                slack_channel=None,
                approvers=(),
                raise_step=usd(1000),
                max_raise=None,
            ),
            CardCreated(
                **wallet_event,
                card_id="card_1",
                issuer=Issuer.STRIPE,
                issuer_card_token="ic_1Abc",
                last4="4242",
                label="",
                funded_amount=None,
                caps=card_caps,
                mcc_allow=frozenset(),
                mcc_block=frozenset(),
                merchant_lock=None,
                expires_at=None,
            ),
            CapsUpdated(**wallet_event, card_id=None, wallet_caps=wallet_caps, card_caps=None),
            StatusChanged(**wallet_event, card_id="card_1", status="frozen", reason="runaway loop"),
            TraceBound(**wallet_event, trace_id="PR-4823", card_id=None, cap=None),
            CapRaised(
                **wallet_event,
                cap=CapKind.TRACE,
                card_id=None,
                trace_id="PR-4823",
                amount=usd(500),
                new_limit=usd(2500),
                until=NOW + timedelta(hours=1),
            ),
            CommandRejected(**wallet_event, command_type="create_card", error="card card_1 already exists"),
            VelocityLimitSet(**wallet_event, card_id=None, max_authorizations=30, per="hour"),
            DeclineStreakLimitSet(**wallet_event, card_id="card_1", max_declines=10),
            MerchantCountriesSet(**wallet_event, card_id=None, allow=frozenset(), block=frozenset({"KP"})),
            CapsUpdated(**wallet_event, card_id="card_1", wallet_caps=None, card_caps=CardCaps(weekly=usd(2_000))),
            CapBreachedByIssuer(
                **wallet_event | {"command_id": None},
                cap=CapKind.WALLET_MONTHLY,
                scope_id=wallet_id,
                limit=usd(30000),
                spent=usd(30999),
                over_by=usd(999),
                issuer_transaction_id="itx_3",
            ),
            MoneyMoved(
                **wallet_event | {"command_id": None, "actor": "issuer"},
                source_event_id=uuid.UUID(int=77),
                source_type="authorization_cleared",
                card_id="card_1",
                trace_id="PR-4823",
                issuer=Issuer.STRIPE,
                issuer_authorization_id="iauth_1",
                issuer_transaction_id="itx_1",
                issuer_amount=usd(1300),
                merchant_amount=None,
                merchant=None,
                currency="USD",
                hold_released_minor=1250,
                spent_minor=1300,
                counted_at=NOW,
            ),
            MoneyMoved(
                **wallet_event | {"event_id": uuid.uuid4(), "command_id": None, "actor": "issuer"},
                schema_version=2,
                source_event_id=uuid.UUID(int=78),
                source_type="authorization_approved_by_issuer",
                card_id="card_1",
                trace_id="PR-4823",
                issuer=Issuer.STRIPE,
                issuer_authorization_id="iauth_4",
                issuer_transaction_id=None,
                issuer_amount=usd(700),
                merchant_amount=usd(700),
                merchant=MERCHANT,
                currency="USD",
                hold_released_minor=0,
                spent_minor=0,
                counted_at=NOW,
                hold_placed_minor=700,
            ),
        ],
    }
