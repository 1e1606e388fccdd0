"""Wallet contracts: commands on `wallet.commands` (gateway, CLI, notifier → authorizer) and the
events on `wallet.events` each applied command produces (authorizer → ledger, notifier, gateway).
Pure data.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, model_validator

from schemas.common import (
    Actor,
    CapKind,
    Contract,
    CountryCode,
    Identifier,
    Issuer,
    Mcc,
    Merchant,
    Reason,
    Timestamp,
    TraceId,
)
from schemas.money import MAX_AMOUNT_MINOR, CurrencyCode, Money
from schemas.policies import INTERVALS_OF_VERSION_2, CardCaps, PolicyTemplate, WalletCaps


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Paris'") from error
    return name


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_time_zone)]
Last4 = Annotated[str, Field(pattern=r"^[0-9]{4}$")]
SlackChannel = Annotated[str, Field(pattern=r"^[A-Za-z0-9#_-]{1,80}$")]


class _Command(Contract):
    schema_version: Literal[1] = 1
    command_id: UUID = Field(description="the idempotency key: a command seen twice is applied once")
    wallet_id: Identifier
    actor: Actor
    issued_at: Timestamp


class _CarriesCaps(Contract):
    """A contract with caps in it. Version 2 (2026-12-05) adds the weekly, yearly and all-time caps:
    a message that sets one is version 2 (made so when it does not say), and one that says version 1
    is refused, so a reader that has not learnt them dead-letters it rather than drop a cap (0002).
    """

    schema_version: Literal[1, 2] = 1

    @model_validator(mode="before")
    @classmethod
    def _version_2_unless_said(cls, data: object) -> object:
        if (
            isinstance(data, dict)
            and "schema_version" not in data
            and any(_sets_version_2_interval(data.get(name)) for name in _CAPS_FIELDS)
        ):
            return {**data, "schema_version": 2}
        return data

    @model_validator(mode="after")
    def _version_1_has_no_new_interval(self) -> Self:
        if self.schema_version == 1 and any(
            _sets_version_2_interval(getattr(self, name, None)) for name in _CAPS_FIELDS
        ):
            raise ValueError(f"caps {', '.join(INTERVALS_OF_VERSION_2)} need schema_version 2")
        return self


_CAPS_FIELDS = ("caps", "wallet_caps", "card_caps")


def _sets_version_2_interval(caps: object) -> bool:
    if isinstance(caps, CardCaps | WalletCaps):
        return caps.needs_version_2()
    return isinstance(caps, dict) and any(caps.get(name) is not None for name in INTERVALS_OF_VERSION_2)


class CreateWallet(_CarriesCaps, _Command):
    """Create a wallet from a policy template; `caps` overrides the template where given."""

    type: Literal["create_wallet"] = "create_wallet"
    template: PolicyTemplate = PolicyTemplate.STARTER
    currency: CurrencyCode = "USD"
    time_zone: TimeZoneName = "UTC"
    label: str = Field(default="", max_length=200)
    caps: WalletCaps | None = None
    slack_channel: SlackChannel | None = None
    approvers: tuple[Actor, ...] = ()
    raise_step: Money | None = None
    max_raise: Money | None = Field(default=None, description="no approval may raise a cap above this")

    @model_validator(mode="after")
    def _amounts_in_wallet_currency(self) -> Self:
        amounts = [self.raise_step, self.max_raise]
        if self.caps is not None:
            amounts += self.caps.amounts()
        for amount in amounts:
            if amount is not None and amount.currency != self.currency:
                raise ValueError(f"amount in {amount.currency} on a {self.currency} wallet")
        return self


class CreateCard(_CarriesCaps, _Command):
    """Issue a card to the wallet; no card number, only the issuer's token and the last 4."""

    type: Literal["create_card"] = "create_card"
    card_id: Identifier = Field(description="unique across all wallets")
    issuer: Issuer
    issuer_card_token: Identifier = Field(description="one card per issuer token, across all wallets")
    last4: Last4
    label: str = Field(default="", max_length=200)
    funded_amount: Money | None = Field(default=None, description="load-based card: the hard ceiling")
    caps: CardCaps = CardCaps()
    mcc_allow: frozenset[Mcc] = Field(default=frozenset(), description="empty: every MCC not blocked")
    mcc_block: frozenset[Mcc] = frozenset()
    merchant_lock: str | None = Field(default=None, max_length=64, description="only this merchant network id")
    expires_at: Timestamp | None = None

    @model_validator(mode="after")
    def _lists_disjoint(self) -> Self:
        if both := self.mcc_allow & self.mcc_block:
            raise ValueError(f"MCCs both allowed and blocked: {sorted(both)}")
        return self


class UpdateCaps(_CarriesCaps, _Command):
    """Replace the wallet's caps, or one card's (when `card_id` is given)."""

    type: Literal["update_caps"] = "update_caps"
    card_id: Identifier | None = None
    wallet_caps: WalletCaps | None = None
    card_caps: CardCaps | None = None

    @model_validator(mode="after")
    def _target_matches_caps(self) -> Self:
        if (self.card_id is None) != (self.card_caps is None) or (self.card_id is None) == (self.wallet_caps is None):
            raise ValueError("give card_id with card_caps, or wallet_caps alone")
        return self


class FreezeCard(_Command):
    """Stop a card: every authorization after this in the wallet's log is declined."""

    type: Literal["freeze_card"] = "freeze_card"
    card_id: Identifier
    reason: Reason


class UnfreezeCard(_Command):
    """Let a frozen card be used again."""

    type: Literal["unfreeze_card"] = "unfreeze_card"
    card_id: Identifier
    reason: Reason


class FreezeWallet(_Command):
    """The kill switch: every card of the wallet is declined from this point of the log on."""

    type: Literal["freeze_wallet"] = "freeze_wallet"
    reason: Reason


class UnfreezeWallet(_Command):
    """Lift the kill switch."""

    type: Literal["unfreeze_wallet"] = "unfreeze_wallet"
    reason: Reason


class CloseCard(_Command):
    """Close a card for good; holds already placed still clear or expire."""

    type: Literal["close_card"] = "close_card"
    card_id: Identifier
    reason: Reason


class CloseWallet(_Command):
    """Close a wallet and all its cards for good."""

    type: Literal["close_wallet"] = "close_wallet"
    reason: Reason


class BindTrace(_Command):
    """Stamp later authorizations of a card (or of the whole wallet) with a trace id and its cap."""

    type: Literal["bind_trace"] = "bind_trace"
    trace_id: TraceId
    card_id: Identifier | None = Field(default=None, description="None binds the trace to the whole wallet")
    cap: Money | None = Field(default=None, description="None: the wallet's per-trace default")


class RaiseCap(_Command):
    """Raise one cap by `amount` until `until` (a Slack approval, an operator's override)."""

    type: Literal["raise_cap"] = "raise_cap"
    cap: CapKind
    card_id: Identifier | None = None
    trace_id: TraceId | None = None
    amount: Money
    until: Timestamp

    @model_validator(mode="after")
    def _scope_matches_cap(self) -> Self:
        if self.amount.amount_minor == 0:
            raise ValueError("a raise of zero changes nothing")
        card_cap = self.cap in (
            CapKind.PER_AUTHORIZATION,
            CapKind.CARD_FUNDED,
            CapKind.CARD_ROLLING_24H,
            CapKind.CARD_MONTHLY,
        )
        if card_cap and self.card_id is None and self.cap != CapKind.PER_AUTHORIZATION:
            raise ValueError(f"raising {self.cap.value} needs card_id")
        if self.cap == CapKind.TRACE and self.trace_id is None:
            raise ValueError("raising the trace cap needs trace_id")
        return self


class SetVelocityLimit(_Command):
    """At most `max_authorizations` authorizations per rolling `per` on a card (or on the whole
    wallet), whatever their amounts: a runaway agent retrying in a loop is declined `velocity_limit`
    from the next one on. Every authorization asked counts, declined ones too. None lifts the limit.
    """

    type: Literal["set_velocity_limit"] = "set_velocity_limit"
    card_id: Identifier | None = Field(default=None, description="None: the whole wallet")
    max_authorizations: int | None = Field(ge=1, le=100_000, description="None lifts the limit")
    per: Literal["minute", "hour"] = "minute"


class SetDeclineStreakLimit(_Command):
    """Freeze a card automatically after `max_declines` declined authorizations in a row on it (a
    runaway agent hammering a declined card); on one card, or on every card of the wallet. The
    freeze is a `status_changed` with no command, said in Slack. None lifts the limit.
    """

    type: Literal["set_decline_streak_limit"] = "set_decline_streak_limit"
    card_id: Identifier | None = Field(default=None, description="None: every card of the wallet")
    max_declines: int | None = Field(ge=1, le=100_000, description="None lifts the limit")


class SetMerchantCountries(_Command):
    """Where a card (or every card of the wallet) may buy, by the merchant's country as the network
    gives it: with an allow list, only there (a merchant whose country is not given is declined
    `merchant_country_not_allowed`); with a block list, never there (`merchant_country_blocked`).
    Both empty lifts the rules. The wallet's rules and a card's own both apply.
    """

    type: Literal["set_merchant_countries"] = "set_merchant_countries"
    card_id: Identifier | None = Field(default=None, description="None: every card of the wallet")
    allow: frozenset[CountryCode] = Field(default=frozenset(), description="empty: every country not blocked")
    block: frozenset[CountryCode] = frozenset()

    @model_validator(mode="after")
    def _lists_disjoint(self) -> Self:
        if both := self.allow & self.block:
            raise ValueError(f"countries both allowed and blocked: {sorted(both)}")
        return self


AnyWalletCommand = (
    CreateWallet
    | CreateCard
    | UpdateCaps
    | FreezeCard
    | UnfreezeCard
    | FreezeWallet
    | UnfreezeWallet
    | CloseCard
    | CloseWallet
    | BindTrace
    | RaiseCap
    | SetVelocityLimit
    | SetDeclineStreakLimit
    | SetMerchantCountries
)
WalletCommand = Annotated[AnyWalletCommand, Field(discriminator="type")]


class _WalletEvent(Contract):
    schema_version: Literal[1] = 1
    event_id: UUID
    command_id: UUID | None = Field(description="the command this applied; None when no command caused it")
    wallet_id: Identifier
    actor: Actor
    occurred_at: Timestamp


class WalletCreated(_CarriesCaps, _WalletEvent):
    """A wallet exists, with the caps its template and overrides resolved to."""

    type: Literal["wallet_created"] = "wallet_created"
    template: PolicyTemplate
    currency: CurrencyCode
    time_zone: TimeZoneName
    label: str
    caps: WalletCaps
    slack_channel: SlackChannel | None
    approvers: tuple[Actor, ...]
    raise_step: Money
    max_raise: Money | None


class CardCreated(_CarriesCaps, _WalletEvent):
    """A card exists on the wallet."""

    type: Literal["card_created"] = "card_created"
    card_id: Identifier
    issuer: Issuer
    issuer_card_token: Identifier
    last4: Last4
    label: str
    funded_amount: Money | None
    caps: CardCaps
    mcc_allow: frozenset[Mcc]
    mcc_block: frozenset[Mcc]
    merchant_lock: str | None
    expires_at: Timestamp | None


class CapsUpdated(_CarriesCaps, _WalletEvent):
    """The wallet's or one card's caps were replaced."""

    type: Literal["caps_updated"] = "caps_updated"
    card_id: Identifier | None
    wallet_caps: WalletCaps | None
    card_caps: CardCaps | None


class StatusChanged(_WalletEvent):
    """A card or the wallet was frozen, unfrozen or closed."""

    type: Literal["status_changed"] = "status_changed"
    card_id: Identifier | None = Field(description="None: the wallet itself")
    status: Literal["active", "frozen", "closed"]
    reason: Reason


class TraceBound(_WalletEvent):
    """Authorizations after this carry `trace_id` and count against its cap."""

    type: Literal["trace_bound"] = "trace_bound"
    trace_id: TraceId
    card_id: Identifier | None
    cap: Money | None


class VelocityLimitSet(_WalletEvent):
    """A card's (or the wallet's) velocity limit, as it now stands (None: lifted)."""

    type: Literal["velocity_limit_set"] = "velocity_limit_set"
    card_id: Identifier | None = Field(description="None: the whole wallet")
    max_authorizations: int | None = Field(ge=1, le=100_000)
    per: Literal["minute", "hour"]


class DeclineStreakLimitSet(_WalletEvent):
    """A card's (or every card's) limit of declines in a row before it is frozen (None: lifted)."""

    type: Literal["decline_streak_limit_set"] = "decline_streak_limit_set"
    card_id: Identifier | None = Field(description="None: every card of the wallet")
    max_declines: int | None = Field(ge=1, le=100_000)


class MerchantCountriesSet(_WalletEvent):
    """A card's (or every card's) merchant country rules, as they now stand (both empty: lifted)."""

    type: Literal["merchant_countries_set"] = "merchant_countries_set"
    card_id: Identifier | None = Field(description="None: every card of the wallet")
    allow: frozenset[CountryCode]
    block: frozenset[CountryCode]


class CapRaised(_WalletEvent):
    """A cap is temporarily higher: `new_limit` until `until`."""

    type: Literal["cap_raised"] = "cap_raised"
    cap: CapKind
    card_id: Identifier | None
    trace_id: TraceId | None
    amount: Money
    new_limit: Money
    until: Timestamp


class CommandRejected(_WalletEvent):
    """A command was not applied (unknown card, wallet closed, raise above the maximum...)."""

    type: Literal["command_rejected"] = "command_rejected"
    command_type: str = Field(max_length=64)
    error: str = Field(max_length=1000)


class CapBreachedByIssuer(_WalletEvent):
    """Money the issuer moved without asking us pushed a cap over its limit: a human should act."""

    type: Literal["cap_breached_by_issuer"] = "cap_breached_by_issuer"
    cap: CapKind
    scope_id: str
    limit: Money
    spent: Money
    over_by: Money
    issuer_transaction_id: Identifier = Field(
        description="the transaction that moved the money (for a hold the issuer placed: its authorization)"
    )


class MoneyMoved(_WalletEvent):
    """What one issuer lifecycle event (or a hold that aged out) did to a card's hold and spend, as the
    authorizer counted it, in the wallet's currency. The ledger journals these, so its balances are the
    authorizer's by construction rather than by re-deriving its rules.
    """

    type: Literal["money_moved"] = "money_moved"
    # Version 2 adds `hold_placed_minor` and the source type `authorization_approved_by_issuer`: a hold
    # the issuer placed without our approval. The authorizer sends version 2 only for that event, so a
    # reader of version 1 refuses (dead-letters) only what it cannot journal (decision 0002).
    schema_version: Literal[1, 2] = 1  # type: ignore[assignment]  # the one contract with a version 2
    source_event_id: UUID = Field(description="the issuer event (or the authorizer's own expiry) that moved it")
    source_type: Literal[
        "authorization_cleared",
        "authorization_reversed",
        "authorization_expired",
        "refund_posted",
        "force_posted",
        "authorization_approved_by_issuer",
    ]
    card_id: Identifier
    trace_id: TraceId | None
    issuer: Issuer
    issuer_authorization_id: Identifier | None
    issuer_transaction_id: Identifier | None
    issuer_amount: Money | None = Field(description="as the issuer reported it, in the card's billing currency")
    merchant_amount: Money | None
    merchant: Merchant | None
    currency: CurrencyCode = Field(description="the wallet's (caps') currency of the two amounts below")
    hold_released_minor: int = Field(ge=0, le=MAX_AMOUNT_MINOR, description="how much of the hold ended")
    spent_minor: int = Field(
        ge=-MAX_AMOUNT_MINOR, le=MAX_AMOUNT_MINOR, description="spend counted; negative for a refund"
    )
    counted_at: Timestamp = Field(description="when the spend counts in windows: a clearing counts at its hold")
    hold_placed_minor: int = Field(
        default=0, ge=0, le=MAX_AMOUNT_MINOR, description="how much was held without our approval (version 2)"
    )

    @model_validator(mode="after")
    def _version_1_places_no_hold(self) -> Self:
        if self.schema_version == 1 and (
            self.hold_placed_minor or self.source_type == "authorization_approved_by_issuer"
        ):
            raise ValueError("a hold placed by the issuer (hold_placed_minor, authorization_approved_by_issuer) "
                             "needs schema_version 2")  # fmt: skip
        return self


AnyWalletEvent = (
    WalletCreated
    | CardCreated
    | CapsUpdated
    | StatusChanged
    | TraceBound
    | CapRaised
    | CommandRejected
    | CapBreachedByIssuer
    | MoneyMoved
    | VelocityLimitSet
    | MerchantCountriesSet
    | DeclineStreakLimitSet
)
WalletEvent = Annotated[AnyWalletEvent, Field(discriminator="type")]
