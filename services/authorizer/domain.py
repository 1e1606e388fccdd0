"""The authorizer's functional core in one call: `decide(state, message, now)` → (events, state).

Every message of a wallet's log (authorization request, wallet command, issuer lifecycle event)
goes through here in order. Expired holds are released first, then the message applies. Pure.
"""

from __future__ import annotations

from datetime import datetime

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import ReasonCode
from schemas.issuer_events import ISSUER_EVENT_TYPES, AnyIssuerEvent, AuthorizationExpired
from schemas.wallet import AnyWalletCommand, AnyWalletEvent
from services.authorizer.commands import apply_command, count_decline_streak
from services.authorizer.decide import Decided, answer_fields, decide_authorization, forget_old
from services.authorizer.lifecycle import apply_issuer_event, expire_holds
from services.authorizer.state import NO_RATES, RateTable, WalletState

Inbound = AuthorizationRequested | AnyWalletCommand | AnyIssuerEvent
# What a message produces: a decision (`Decided` when just made, the contract when repeated from
# memory or Postgres), wallet events, or expiries of holds that aged out.
Outbound = Decided | AuthorizationDecided | AuthorizationExpired | AnyWalletEvent
Outcome = tuple[tuple[Outbound, ...], WalletState | None]


def decide(state: WalletState | None, message: Inbound, now: datetime, rates: RateTable = NO_RATES) -> Outcome:
    """Apply one message of the wallet's log at `now`; return what to publish and the new state."""
    if state is None:
        return _without_wallet(message, now)
    expired, state = expire_holds(forget_old(state, now), now)
    if isinstance(message, AuthorizationRequested):
        decision, state = decide_authorization(state, message, now, rates)
        if state.streak_limits and isinstance(decision, Decided):  # a first answer, not a repeat
            frozen, state = count_decline_streak(state, decision, now)
            return (*expired, decision, *frozen), state
        return (*expired, decision), state
    if message.type in _ISSUER_TYPES:
        events, state = apply_issuer_event(state, message, now, rates)  # type: ignore[arg-type]
        return (*expired, *events), state
    wallet_events, new_state = apply_command(state, message, now)  # type: ignore[arg-type]
    return (*expired, *wallet_events), new_state


_ISSUER_TYPES = frozenset(ISSUER_EVENT_TYPES)


def _without_wallet(message: Inbound, now: datetime) -> Outcome:
    """A wallet that does not exist: only create_wallet applies; an authorization is declined."""
    if isinstance(message, AuthorizationRequested):
        return (_unknown_card_decision(message, now),), None
    if message.type in _ISSUER_TYPES:
        return (), None  # nothing to count against: the ledger still records it from issuer.events
    events: tuple[AnyWalletEvent, ...]
    events, state = apply_command(None, message, now)  # type: ignore[arg-type]
    return events, state


def _unknown_card_decision(request: AuthorizationRequested, now: datetime) -> AuthorizationDecided:
    return AuthorizationDecided(
        **answer_fields(request), approved=False, reason=ReasonCode.CARD_NOT_FOUND, decided_at=now
    )


def sweep(state: WalletState, now: datetime) -> Outcome:
    """Release the holds that aged out of a wallet no message has touched lately."""
    expired, swept = expire_holds(forget_old(state, now), now)
    return expired, swept
