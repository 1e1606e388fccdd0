"""Wallet commands applied in log order with authorizations. Pure: (state, command, now) →
(events, new state). A command that cannot apply produces `command_rejected` and changes nothing;
a command id seen before changes nothing either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from schemas.common import WALLET_CAPS, CapKind, ReasonCode
from schemas.money import Money
from schemas.policies import template_caps, template_raise_step
from schemas.wallet import (
    AnyWalletCommand,
    AnyWalletEvent,
    BindTrace,
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
from services.authorizer.decide import Decided, applicable_caps, card_standing, derived_id
from services.authorizer.state import REMEMBERED_COMMANDS, WALLET_WIDE, Card, Raise, Status, WalletState

CommandOutcome = tuple[tuple[AnyWalletEvent, ...], WalletState | None]


class Rejected(Exception):
    """The command cannot apply to this wallet as it stands; the message says why."""


def apply_command(state: WalletState | None, command: AnyWalletCommand, now: datetime) -> CommandOutcome:
    """Apply `command` (once) and describe what changed, or reject it with the reason."""
    if state is not None and command.command_id in state.applied_commands:
        return (), state
    try:
        event, new_state = _apply(state, command, now)
    except Rejected as error:
        return (rejection(command, now, str(error)),), state
    remembered = (*new_state.applied_commands, command.command_id)[-REMEMBERED_COMMANDS:]
    return (event,), replace(new_state, applied_commands=remembered)


def rejection(command: AnyWalletCommand, now: datetime, error: str) -> CommandRejected:
    """The `command_rejected` reply to `command`, saying why."""
    return CommandRejected(**_event_fields(command, now), command_type=command.type, error=error[:1000])


def _event_fields(command: AnyWalletCommand, now: datetime) -> dict[str, Any]:
    return {
        "event_id": derived_id("command", command.command_id),
        "command_id": command.command_id,
        "wallet_id": command.wallet_id,
        "actor": command.actor,
        "occurred_at": now,
    }


def _apply(state: WalletState | None, command: AnyWalletCommand, now: datetime) -> tuple[AnyWalletEvent, WalletState]:
    if isinstance(command, CreateWallet):
        if state is not None:
            raise Rejected(f"wallet {command.wallet_id} already exists")
        return _create_wallet(command, now)
    if state is None:
        raise Rejected(f"wallet {command.wallet_id} does not exist")
    if state.status == "closed":
        raise Rejected(f"wallet {command.wallet_id} is closed")
    handler = _HANDLERS[command.type]
    return handler(state, command, _event_fields(command, now), now)


def _create_wallet(command: CreateWallet, now: datetime) -> tuple[AnyWalletEvent, WalletState]:
    caps = command.caps or template_caps(command.template, command.currency)
    raise_step = command.raise_step or template_raise_step(command.template, command.currency)
    state = WalletState(
        wallet_id=command.wallet_id,
        currency=command.currency,
        time_zone=command.time_zone,
        template=command.template,
        label=command.label,
        status="active",
        caps=caps,
        slack_channel=command.slack_channel,
        approvers=command.approvers,
        raise_step=raise_step,
        max_raise=command.max_raise,
    )
    created = WalletCreated(
        **_event_fields(command, now),
        template=command.template,
        currency=command.currency,
        time_zone=command.time_zone,
        label=command.label,
        caps=caps,
        slack_channel=command.slack_channel,
        approvers=command.approvers,
        raise_step=raise_step,
        max_raise=command.max_raise,
    )
    return created, state


def _require_currency(state: WalletState, *amounts: Money | None) -> None:
    for amount in amounts:
        if amount is not None and amount.currency != state.currency:
            raise Rejected(f"amount in {amount.currency} on a {state.currency} wallet")


def _create_card(
    state: WalletState, command: CreateCard, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    if command.card_id in state.cards:
        raise Rejected(f"card {command.card_id} already exists")
    for card in state.cards.values():
        if (card.issuer, card.issuer_card_token) == (command.issuer, command.issuer_card_token):
            raise Rejected(f"{command.issuer.value} card token {command.issuer_card_token} is card {card.card_id}'s")
    caps = command.caps
    _require_currency(state, command.funded_amount, *caps.amounts())
    card = Card(
        card_id=command.card_id,
        issuer=command.issuer,
        issuer_card_token=command.issuer_card_token,
        last4=command.last4,
        label=command.label,
        status="active",
        funded_minor=None if command.funded_amount is None else command.funded_amount.amount_minor,
        caps=caps,
        mcc_allow=command.mcc_allow,
        mcc_block=command.mcc_block,
        merchant_lock=command.merchant_lock,
        expires_at=command.expires_at,
    )
    event = CardCreated(
        **fields,
        **{name: getattr(command, name) for name in ("card_id", "issuer", "issuer_card_token", "last4", "label")},
        funded_amount=command.funded_amount,
        caps=caps,
        mcc_allow=command.mcc_allow,
        mcc_block=command.mcc_block,
        merchant_lock=command.merchant_lock,
        expires_at=command.expires_at,
    )
    return event, replace(state, cards={**state.cards, card.card_id: card})


def _card(state: WalletState, card_id: str) -> Card:
    card = state.cards.get(card_id)
    if card is None:
        raise Rejected(f"card {card_id} does not exist on wallet {state.wallet_id}")
    return card


def _update_caps(
    state: WalletState, command: UpdateCaps, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    event = CapsUpdated(**fields, card_id=command.card_id, wallet_caps=command.wallet_caps, card_caps=command.card_caps)
    if command.wallet_caps is not None:
        caps = command.wallet_caps
        _require_currency(state, *caps.amounts())
        return event, replace(state, caps=caps)
    card = _card(state, command.card_id or "")
    card_caps = command.card_caps or card.caps
    _require_currency(state, *card_caps.amounts())
    return event, replace(state, cards={**state.cards, card.card_id: replace(card, caps=card_caps)})


def _card_status(
    state: WalletState, command: FreezeCard | UnfreezeCard | CloseCard, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    card = _card(state, command.card_id)
    if card.status == "closed":
        raise Rejected(f"card {card.card_id} is closed")
    status = _NEW_STATUS[command.type]
    event = StatusChanged(**fields, card_id=card.card_id, status=status, reason=command.reason)
    # A card let go again starts a new streak of declines (else its next decline froze it at once).
    streaks = {key: count for key, count in state.declines_in_a_row.items() if key != card.card_id}
    return event, replace(
        state, cards={**state.cards, card.card_id: replace(card, status=status)}, declines_in_a_row=streaks
    )


def _wallet_status(
    state: WalletState, command: FreezeWallet | UnfreezeWallet | CloseWallet, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    status = _NEW_STATUS[command.type]
    event = StatusChanged(**fields, card_id=None, status=status, reason=command.reason)
    return event, replace(state, status=status)


def count_decline_streak(
    state: WalletState, decision: Decided, now: datetime
) -> tuple[tuple[StatusChanged, ...], WalletState]:
    """A decision counted in its card's streak of declines in a row, when a limit applies to the
    card: an approval ends the streak; the decline that reaches the limit freezes the card (a
    `status_changed` of no command, which the notifier says in Slack). A decline because the card or
    wallet already declines everything, or at our deadline (not the agent's doing), is not counted.
    """
    card_id = decision.card_id
    limit = state.streak_limits.get(f"card:{card_id}", state.streak_limits.get("wallet"))
    card = state.cards.get(card_id)
    if limit is None or card is None:
        return (), state
    streaks = dict(state.declines_in_a_row)
    if decision.approved:
        if streaks.pop(card_id, None) is None:
            return (), state
        return (), replace(state, declines_in_a_row=streaks)
    if decision.reason == ReasonCode.DEADLINE_EXCEEDED or card_standing(state, card_id, now) is not None:
        return (), state
    count = streaks.get(card_id, 0) + 1
    if count < limit:
        return (), replace(state, declines_in_a_row={**streaks, card_id: count})
    streaks.pop(card_id, None)
    frozen = StatusChanged(
        event_id=derived_id("decline_streak_freeze", decision.issuer_authorization_id), command_id=None,
        wallet_id=state.wallet_id, actor="pursestrings", occurred_at=now, card_id=card_id, status="frozen",
        reason=f"{count} declines in a row (the limit is {limit})",
    )  # fmt: skip
    cards = {**state.cards, card_id: replace(card, status="frozen")}
    return (frozen,), replace(state, cards=cards, declines_in_a_row=streaks)


def _bind_trace(
    state: WalletState, command: BindTrace, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    if command.card_id is not None:
        _card(state, command.card_id)
    _require_currency(state, command.cap)
    trace_caps = dict(state.trace_caps)
    if command.cap is not None:
        trace_caps[command.trace_id] = command.cap.amount_minor
    event = TraceBound(**fields, trace_id=command.trace_id, card_id=command.card_id, cap=command.cap)
    return event, replace(
        state, bindings={**state.bindings, command.card_id or WALLET_WIDE: command.trace_id}, trace_caps=trace_caps
    )


def _raise_cap(
    state: WalletState, command: RaiseCap, fields: dict[str, Any], now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    _require_currency(state, command.amount)
    if command.until <= now:
        raise Rejected("the raise would already have ended")
    scope_id = (
        command.trace_id
        if command.cap == CapKind.TRACE
        else state.wallet_id
        if command.cap in WALLET_CAPS or command.card_id is None
        else command.card_id
    ) or ""
    card_id = command.card_id or next(iter(state.cards), None)
    if card_id is None:
        raise Rejected("the wallet has no card, so no cap applies yet")
    _card(state, card_id)
    current = next(
        (
            c
            for c in applicable_caps(state, card_id, command.trace_id, now)
            if (c.cap, c.scope_id) == (command.cap, scope_id)
        ),
        None,
    )
    if current is None:
        raise Rejected(f"{command.cap.value} is not set for {scope_id}, so it cannot be raised")
    new_limit = current.limit_minor + command.amount.amount_minor
    if state.max_raise is not None and new_limit > state.max_raise.amount_minor:
        raise Rejected(f"raising {command.cap.value} to {new_limit} exceeds the wallet's maximum {state.max_raise}")
    raised = Raise(command.cap, scope_id, command.amount.amount_minor, command.until)
    event = CapRaised(
        **fields,
        cap=command.cap,
        card_id=command.card_id,
        trace_id=command.trace_id,
        amount=command.amount,
        new_limit=Money.of(new_limit, state.currency),
        until=command.until,
    )
    return event, replace(state, raises=(*state.raises, raised))


_NEW_STATUS: dict[str, Status] = {
    "freeze_card": "frozen",
    "unfreeze_card": "active",
    "close_card": "closed",
    "freeze_wallet": "frozen",
    "unfreeze_wallet": "active",
    "close_wallet": "closed",
}


# Every command but create_wallet, by type: the whole command flow in one table.
def _set_velocity_limit(
    state: WalletState, command: SetVelocityLimit, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    scope = _control_scope(state, command.card_id)
    velocity, asked = dict(state.velocity), dict(state.asked_at)
    if command.max_authorizations is None:
        velocity.pop(scope, None)
        asked.pop(scope, None)
    else:
        velocity[scope] = (command.max_authorizations, _VELOCITY_WINDOWS_S[command.per])
    event = VelocityLimitSet(
        **fields, card_id=command.card_id, max_authorizations=command.max_authorizations, per=command.per
    )
    return event, replace(state, velocity=velocity, asked_at=asked)


_VELOCITY_WINDOWS_S = {"minute": 60, "hour": 3_600}


def _control_scope(state: WalletState, card_id: str | None) -> str:
    """The scope a control applies to: "wallet" (every card), or "card:<id>" of a card that exists."""
    if card_id is None:
        return "wallet"
    return "card:" + _card(state, card_id).card_id


def _set_merchant_countries(
    state: WalletState, command: SetMerchantCountries, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    scope = _control_scope(state, command.card_id)
    countries = dict(state.countries)
    if command.allow or command.block:
        countries[scope] = (command.allow, command.block)
    else:
        countries.pop(scope, None)
    event = MerchantCountriesSet(**fields, card_id=command.card_id, allow=command.allow, block=command.block)
    return event, replace(state, countries=countries)


def _set_decline_streak_limit(
    state: WalletState, command: SetDeclineStreakLimit, fields: dict[str, Any], _now: datetime
) -> tuple[AnyWalletEvent, WalletState]:
    scope = _control_scope(state, command.card_id)
    limits = dict(state.streak_limits)
    if command.max_declines is None:
        limits.pop(scope, None)
    else:
        limits[scope] = command.max_declines
    event = DeclineStreakLimitSet(**fields, card_id=command.card_id, max_declines=command.max_declines)
    streaks = state.declines_in_a_row if limits else {}
    return event, replace(state, streak_limits=limits, declines_in_a_row=streaks)


_HANDLERS: dict[str, Callable[[WalletState, Any, dict[str, Any], datetime], tuple[AnyWalletEvent, WalletState]]] = {
    "create_card": _create_card,
    "update_caps": _update_caps,
    "freeze_card": _card_status,
    "unfreeze_card": _card_status,
    "close_card": _card_status,
    "freeze_wallet": _wallet_status,
    "unfreeze_wallet": _wallet_status,
    "close_wallet": _wallet_status,
    "bind_trace": _bind_trace,
    "raise_cap": _raise_cap,
    "set_velocity_limit": _set_velocity_limit,
    "set_merchant_countries": _set_merchant_countries,
    "set_decline_streak_limit": _set_decline_streak_limit,
}
