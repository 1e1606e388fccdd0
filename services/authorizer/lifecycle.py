"""What happens to money after a decision (or without one): clearing, reversal, expiry, refund,
force-post, a hold the issuer placed without our approval, and holds that age out. Pure: (state,
event, now) → (events, new state).
"""

from __future__ import annotations

from datetime import datetime

from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind
from schemas.issuer_events import (
    AnyIssuerEvent,
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationExpired,
    AuthorizationReversed,
    ForcePosted,
    RefundPosted,
)
from schemas.money import Money
from schemas.wallet import CapBreachedByIssuer, MoneyMoved
from services.authorizer.decide import applicable_caps, derived_id, post_spend
from services.authorizer.state import (
    DEFAULT_HOLD_TTL,
    NO_RATES,
    Hold,
    Posting,
    RateTable,
    WalletState,
    bound_trace,
    hold_of,
    open_holds,
    recall,
    set_hold,
)

LifecycleOutcome = tuple[tuple[CapBreachedByIssuer | AuthorizationExpired | MoneyMoved, ...], WalletState]


def apply_issuer_event(
    state: WalletState, event: AnyIssuerEvent, now: datetime, rates: RateTable = NO_RATES
) -> LifecycleOutcome:
    """Apply one lifecycle event; money moved without asking is counted and breaches are reported.

    Whatever it did to a hold or to spend is said in one `MoneyMoved` (what the ledger journals).
    """
    if isinstance(event, AuthorizationExpired) and event.cause == "gateway_deadline":
        increment = _decided_increment(state, event.issuer_authorization_id)
        if increment is not None:
            after = _undo_increment(state, event, increment, now)
            return _money_moved(state, after, event, None, increment.increment_of), after
    breaches, after, posting = _apply(state, event, now, rates)
    moved = _money_moved(state, after, event, posting)
    return (*breaches, *moved), after


def _decided_increment(state: WalletState, increment_id: str) -> AuthorizationDecided | None:
    """The decision of the increment `increment_id`, if one was decided and remembered."""
    remembered = state.decisions.get(increment_id)
    if remembered is None or b'"increment_of":' not in remembered[1]:  # most are not: no parse for them
        return None
    decision = recall(remembered)
    return decision if decision.increment_of is not None else None


def _undo_increment(
    state: WalletState, event: AuthorizationExpired, decision: AuthorizationDecided, now: datetime
) -> WalletState:
    """Our deadline passed on an increment (the issuer was answered decline): the hold it grew
    shrinks back by what it added, once (the increment's id is then kept in `released`). Nothing to
    undo for a declined increment, for a hold the issuer holds whatever we answer (`issuer_held`),
    or for an expiry of another request that reused the increment's id (another card or amount).
    """
    increment_id, authorization_id = event.issuer_authorization_id, decision.increment_of
    assert authorization_id is not None  # noqa: S101 - _decided_increment returns increments only
    if (
        not decision.approved
        or increment_id in state.released
        or authorization_id in state.issuer_held
        or (event.amount is not None and (decision.card_id, decision.amount) != (event.card_id, event.amount))
    ):
        return state
    undone = state.evolve(released={**state.released, increment_id: now})
    hold = hold_of(state, authorization_id)
    if hold is None or decision.cap_amount is None:
        return undone  # the authorization's hold ended already (captured, reversed, expired)
    left = hold.amount_minor - decision.cap_amount.amount_minor
    return set_hold(undone, authorization_id, None if left <= 0 else hold._replace(amount_minor=left))


def _apply(
    state: WalletState, event: AnyIssuerEvent, now: datetime, rates: RateTable
) -> tuple[tuple[CapBreachedByIssuer, ...], WalletState, Posting | None]:
    if isinstance(event, AuthorizationExpired):
        kept = event.cause == "gateway_deadline" and _not_ours_to_release(state, event, rates)
        return (), state if kept else _release(state, event.issuer_authorization_id, None, now), None
    if isinstance(event, AuthorizationApprovedByIssuer):
        return _held_by_issuer(state, event, now, rates)
    if isinstance(event, AuthorizationReversed):
        amount = None if event.full else _in_wallet_currency(state, event.amount, event.issuer_authorization_id, rates)
        return (), _release(state, event.issuer_authorization_id, amount, now), None
    if isinstance(event, RefundPosted):
        minor = _in_wallet_currency(state, event.amount, event.issuer_authorization_id, rates)
        trace_id = _trace_of(state, event.issuer_authorization_id, event.card_id)
        posting = Posting(str(event.event_id), event.occurred_at, event.card_id, trace_id, -minor)
        return (), post_spend(state, posting), posting
    if isinstance(event, AuthorizationCleared):
        return _clear(state, event, now, rates)
    minor = _in_wallet_currency(state, event.amount, None, rates)
    return _count_unasked(state, event, bound_trace(state, event.card_id), minor, now)


def _clear(
    state: WalletState, event: AuthorizationCleared, now: datetime, rates: RateTable
) -> tuple[tuple[CapBreachedByIssuer, ...], WalletState, Posting]:
    hold = hold_of(state, event.issuer_authorization_id)
    minor = _in_wallet_currency(state, event.amount, event.issuer_authorization_id, rates)
    if hold is None:
        # A capture we never held for (expired, or never asked): it is spend the issuer moved anyway.
        return _count_unasked(state, event, _trace_of(state, event.issuer_authorization_id, event.card_id), minor, now)
    remaining_hold = max(0, hold.amount_minor - minor)
    kept = None if event.final or remaining_hold == 0 else hold._replace(amount_minor=remaining_hold)
    # Spend counts from the moment of authorization, so the window sees the purchase when it was made.
    released = set_hold(state, hold.authorization_id, kept)
    posting = Posting(str(event.event_id), hold.placed_at, hold.card_id, hold.trace_id, minor)
    posted = post_spend(released, posting)
    if minor <= hold.amount_minor:
        return (), posted, posting
    return _breaches(state, posted, hold.card_id, hold.trace_id, event.issuer_transaction_id, now), posted, posting


def _not_ours_to_release(state: WalletState, event: AuthorizationExpired, rates: RateTable) -> bool:
    """Whether our deadline's expiry must leave the authorization's hold alone: the issuer approved it
    whatever we answered (`issuer_held`), or the expiry is of another request that reused the id of
    the one decided (another card or amount: the authorizer repeated its first decision to it, and the
    gateway declined it). An expiry without the request's amount (version 1) releases as before.
    """
    authorization_id = event.issuer_authorization_id
    if authorization_id in state.issuer_held:
        return True
    if event.amount is None:
        return False
    remembered = state.decisions.get(authorization_id)
    if remembered is not None:
        decision = recall(remembered)
        return (decision.card_id, decision.amount) != (event.card_id, event.amount)
    hold = hold_of(state, authorization_id)
    if hold is None:
        return False
    return (hold.card_id, hold.amount_minor) != (
        event.card_id,
        _in_wallet_currency(state, event.amount, authorization_id, rates),
    )


def _held_by_issuer(
    state: WalletState, event: AuthorizationApprovedByIssuer, now: datetime, rates: RateTable
) -> tuple[tuple[CapBreachedByIssuer, ...], WalletState, None]:
    """The issuer holds `amount` in all for this authorization, whatever we answered: one we declined,
    never decided, or released at our deadline is held from the moment of approval, and one we hold
    for less (an increment the issuer approved without us) grows to it, whatever the caps (a cap it
    passes is reported); the hold then clears, reverses or expires like any. Held for as much or more
    (our own approval), it stays as it is. Either way our deadline's expiry no longer releases it; and
    once such a hold has ended (captured, reversed), the same authorization is never held again.
    """
    authorization_id = event.issuer_authorization_id
    hold = hold_of(state, authorization_id)
    if hold is None and authorization_id in state.issuer_held:
        return (), state, None  # held before, and ended since: counted once, at most
    marked = state
    if authorization_id not in state.issuer_held:
        marked = state.evolve(issuer_held={**state.issuer_held, authorization_id: event.occurred_at})
    minor = _in_wallet_currency(state, event.amount, authorization_id, rates)
    if minor <= (0 if hold is None else hold.amount_minor):
        return (), marked, None
    if hold is None:
        trace_id = _trace_of(state, authorization_id, event.card_id)
        hold = Hold(authorization_id, event.card_id, trace_id, minor, event.occurred_at,
                    event.occurred_at + DEFAULT_HOLD_TTL)  # fmt: skip
    held = set_hold(marked, authorization_id, hold._replace(amount_minor=minor))
    breaches = _breaches(state, held, hold.card_id, hold.trace_id, authorization_id, now, key=event.event_id)
    return breaches, held, None


def _count_unasked(
    state: WalletState, event: AuthorizationCleared | ForcePosted, trace_id: str | None, minor: int, now: datetime
) -> tuple[tuple[CapBreachedByIssuer, ...], WalletState, Posting]:
    """Spend the issuer moved without our approval: counted at its time; breaches reported."""
    posting = Posting(str(event.event_id), event.occurred_at, event.card_id, trace_id, minor)
    posted = post_spend(state, posting)
    return _breaches(state, posted, event.card_id, trace_id, event.issuer_transaction_id, now), posted, posting


def _money_moved(
    before: WalletState,
    after: WalletState,
    event: AnyIssuerEvent,
    posting: Posting | None,
    held_for: str | None = None,
) -> tuple[MoneyMoved, ...]:
    """The hold released and the spend counted by `event`, or nothing when it moved no money; the
    hold is the event's authorization's, or `held_for`'s (an increment's expiry: the one it grew).
    """
    authorization_id = held_for or getattr(event, "issuer_authorization_id", None)
    hold = hold_of(before, authorization_id or "")
    kept = hold_of(after, authorization_id or "")
    change = (0 if kept is None else kept.amount_minor) - (0 if hold is None else hold.amount_minor)
    released, placed = max(0, -change), max(0, change)
    if released == 0 and placed == 0 and posting is None:
        return ()
    merchant_amount = getattr(event, "merchant_amount", None)
    held = hold or kept
    return (
        MoneyMoved(
            schema_version=2 if placed else 1,  # only a hold placed needs version 2 (decision 0002)
            event_id=derived_id("moved", event.event_id),
            command_id=None,
            wallet_id=after.wallet_id,
            actor="issuer",
            occurred_at=event.occurred_at,
            source_event_id=event.event_id,
            source_type=event.type,
            card_id=event.card_id if held is None else held.card_id,
            trace_id=posting.trace_id if posting is not None else (held.trace_id if held is not None else None),
            issuer=event.issuer,
            issuer_authorization_id=authorization_id,
            issuer_transaction_id=getattr(event, "issuer_transaction_id", None),
            issuer_amount=getattr(event, "amount", None),
            merchant_amount=merchant_amount,
            merchant=getattr(event, "merchant", None),
            currency=after.currency,
            hold_released_minor=released,
            spent_minor=0 if posting is None else posting.amount_minor,
            counted_at=posting.at if posting is not None else event.occurred_at,
            hold_placed_minor=placed,
        ),
    )


def _breaches(  # noqa: PLR0917 - before/after states and the posting's ids, always passed together
    before: WalletState,
    after: WalletState,
    card_id: str,
    trace_id: str | None,
    transaction_id: str,
    now: datetime,
    key: object = None,
) -> tuple[CapBreachedByIssuer, ...]:
    """One event per cap that money moved without our approval pushed (further) over its limit; its
    id derives from `key` (by default the transaction: one breach per transaction and cap).
    """
    if card_id not in after.cards:
        return ()
    earlier = {(c.cap, c.scope_id): c for c in applicable_caps(before, card_id, trace_id, now)}
    events = []
    for check in applicable_caps(after, card_id, trace_id, now):
        used = check.spent_minor + check.held_minor
        was = earlier[(check.cap, check.scope_id)]
        if check.cap == CapKind.PER_AUTHORIZATION or used <= check.limit_minor:
            continue
        if used <= was.spent_minor + was.held_minor:
            continue
        events.append(
            CapBreachedByIssuer(
                event_id=derived_id("breach", transaction_id if key is None else key, check.cap, check.scope_id),
                command_id=None,
                wallet_id=after.wallet_id,
                actor="issuer",
                occurred_at=now,
                cap=check.cap,
                scope_id=check.scope_id,
                limit=Money.of(check.limit_minor, after.currency),
                spent=Money.of(used, after.currency),
                over_by=Money.of(used - check.limit_minor, after.currency),
                issuer_transaction_id=transaction_id,
            )
        )
    return tuple(events)


def _release(state: WalletState, authorization_id: str, amount_minor: int | None, now: datetime) -> WalletState:
    """Release all (None) or part of a hold; a release before any decision leaves a tombstone."""
    hold = hold_of(state, authorization_id)
    if hold is None:
        if authorization_id in state.decisions or amount_minor is not None:
            return state
        return state.evolve(released={**state.released, authorization_id: now})
    left = 0 if amount_minor is None else hold.amount_minor - amount_minor
    return set_hold(state, authorization_id, None if left <= 0 else hold._replace(amount_minor=left))


def expire_holds(state: WalletState, now: datetime) -> LifecycleOutcome:
    """Release every hold past its expiry and say so, so the ledger releases it too."""
    if state.earliest_hold_expiry is None or state.earliest_hold_expiry > now:
        return (), state
    holds = list(open_holds(state.holds))
    expired = [hold for hold in holds if hold.expires_at <= now]
    remaining = [hold.expires_at for hold in holds if hold.expires_at > now]
    if not expired:
        return (), state.evolve(earliest_hold_expiry=min(remaining, default=None))
    events = tuple(
        AuthorizationExpired(
            event_id=derived_id("hold_timeout", hold.authorization_id),
            wallet_id=state.wallet_id,
            card_id=hold.card_id,
            issuer=state.cards[hold.card_id].issuer,
            occurred_at=hold.expires_at,
            issuer_authorization_id=hold.authorization_id,
            cause="hold_timeout",
        )
        for hold in expired
    )
    before = state
    for hold in expired:
        state = set_hold(state, hold.authorization_id, None)
    moved = tuple(moved for expiry in events for moved in _money_moved(before, state, expiry, None))
    return (*events, *moved), state.evolve(earliest_hold_expiry=min(remaining, default=None))


def _trace_of(state: WalletState, authorization_id: str | None, card_id: str) -> str | None:
    """The trace of the authorization's decision: remembered, else its hold's (a refund of a partial
    capture whose rest is still held, after a restart), else the card's trace of the moment.
    """
    remembered = state.decisions.get(authorization_id or "")
    if remembered is not None:
        return recall(remembered).trace_id
    hold = hold_of(state, authorization_id or "")
    if hold is not None:
        return hold.trace_id
    return bound_trace(state, card_id)


def _in_wallet_currency(state: WalletState, amount: Money, authorization_id: str | None, rates: RateTable) -> int:
    """`amount` in the wallet's currency, rounded up; without a rate, scaled like the original hold."""
    converted = rates.convert_up(amount, state.currency)
    if converted is not None:
        return converted
    remembered = state.decisions.get(authorization_id or "")
    decision = None if remembered is None else recall(remembered)
    if decision is not None and decision.cap_amount is not None and decision.amount.currency == amount.currency:
        scaled = amount.amount_minor * decision.cap_amount.amount_minor
        return -((-scaled) // max(1, decision.amount.amount_minor))
    # No rate and nothing to scale by: count the face value rather than nothing (never hide spend).
    return amount.amount_minor
