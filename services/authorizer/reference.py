"""The authorizer's decision as it was before issue 20 (pydantic models built per decision), kept
only so that `tests/unit/test_decide_equivalence.py` can compare it with the fast one over generated
sequences; nothing else may call it, and it goes once the fast one has proven itself in a release.
Pure, like `decide`.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, CapStatus, ReasonCode
from schemas.issuer_events import ISSUER_EVENT_TYPES
from schemas.money import Money
from schemas.trusted import trusted
from services.authorizer.commands import apply_command
from services.authorizer.decide import _REASON_BY_CAP, CapCheck, _policy_reason, _without, answer_fields
from services.authorizer.domain import Inbound, Outcome, decide
from services.authorizer.lifecycle import apply_issuer_event, expire_holds
from services.authorizer.state import (
    DECISION_PRUNE_EVERY,
    DEFAULT_HOLD_TTL,
    MEMORY_HORIZON,
    NO_RATES,
    ROLLING_WINDOW,
    Hold,
    RateTable,
    WalletState,
    as_map,
    bound_trace,
    held_minor,
    kept_periods,
    period_end,
    raised_minor,
    recall,
    remember,
    set_hold,
    spent_minor,
)

AnyIssuerEventTypes = tuple(ISSUER_EVENT_TYPES.values())


def reference_decide(
    state: WalletState | None, message: Inbound, now: datetime, rates: RateTable = NO_RATES
) -> Outcome:
    """`domain.decide` as it was: the old `forget_old` before every message, and an authorization
    decided by `reference_decide_authorization` (lifecycle events and commands apply as they do now).
    """
    if state is None:
        return decide(state, message, now, rates)  # no wallet: nothing here changed
    expired, state = expire_holds(reference_forget_old(state, now), now)
    if isinstance(message, AuthorizationRequested):
        decision, state = reference_decide_authorization(state, message, now, rates)
        return (*expired, decision), state
    if isinstance(message, AnyIssuerEventTypes):
        events, state = apply_issuer_event(state, message, now, rates)
        return (*expired, *events), state
    wallet_events, new_state = apply_command(state, message, now)  # type: ignore[arg-type]  # as in domain.decide
    return (*expired, *wallet_events), new_state


def reference_decide_authorization(
    state: WalletState, request: AuthorizationRequested, now: datetime, rates: RateTable = NO_RATES
) -> tuple[AuthorizationDecided, WalletState]:
    """Approve (placing a hold) or decline `request`; a request seen before gets its first answer."""
    earlier = state.decisions.get(request.issuer_authorization_id)
    if earlier is not None:
        return recall(earlier), state
    trace_id = bound_trace(state, request.card_id)
    reason = _policy_reason(state, request, now)
    cap_minor = rates.convert_up(request.amount, state.currency)
    if reason is None and cap_minor is None:
        reason = ReasonCode.FX_RATE_MISSING
    checks = [] if reason is not None else reference_applicable_caps(state, request.card_id, trace_id, now)
    failed = next((check for check in checks if not check.fits(cap_minor or 0)), None)
    if reason is None and failed is not None:
        reason = _REASON_BY_CAP[failed.cap]
    approved = reason is None
    decision = trusted(
        AuthorizationDecided,
        {
            "type": "authorization_decided",
            "schema_version": 1,
            **answer_fields(request),
            "approved": approved,
            "reason": ReasonCode.APPROVED if reason is None else reason,
            "failed_cap": None if failed is None else failed.cap,
            "cap_amount": None if cap_minor is None else Money.of(cap_minor, state.currency),
            "trace_id": trace_id,
            "caps": tuple(
                _status(check, state.currency, cap_minor if approved and cap_minor else 0) for check in checks
            ),
            "decided_at": now,
            "hold_expires_at": now + DEFAULT_HOLD_TTL if approved else None,
        },
    )
    remembered = {
        "decisions": as_map(state.decisions).set(request.issuer_authorization_id, remember(decision)),
        "decisions_pruned_at": state.decisions_pruned_at or now,  # the clock of the next bulk prune
    }
    if not approved:
        return decision, state.evolve(**remembered)
    hold = Hold(request.issuer_authorization_id, request.card_id, trace_id, cap_minor or 0, now, now + DEFAULT_HOLD_TTL)
    return decision, set_hold(state, hold.authorization_id, hold, **remembered)


Candidate = tuple[CapKind, str, Money | int | None, datetime | None]  # cap, scope, limit, window end


def reference_applicable_caps(state: WalletState, card_id: str, trace_id: str | None, now: datetime) -> list[CapCheck]:
    """Every cap an authorization on `card_id` (stamped with `trace_id`) must fit, in check order."""
    card = state.cards[card_id]
    week, month, year = (period_end(now, state.time_zone, period) for period in ("week", "month", "year"))
    candidates: list[Candidate] = [
        (CapKind.PER_AUTHORIZATION, card_id, card.caps.per_authorization, None),
        (CapKind.PER_AUTHORIZATION, state.wallet_id, state.caps.per_authorization, None),
        (CapKind.CARD_FUNDED, card_id, card.funded_minor, None),
        (CapKind.CARD_ROLLING_24H, card_id, card.caps.rolling_24h, None),
        (CapKind.CARD_WEEKLY, card_id, card.caps.weekly, week),
        (CapKind.CARD_MONTHLY, card_id, card.caps.monthly, month),
        (CapKind.CARD_YEARLY, card_id, card.caps.yearly, year),
        (CapKind.CARD_ALL_TIME, card_id, card.caps.all_time, None),
    ]
    if trace_id is not None:
        candidates.append((CapKind.TRACE, trace_id, state.trace_caps.get(trace_id, state.caps.per_trace), None))
    return _checks(state, candidates + _wallet_candidates(state, now), now)


def reference_wallet_caps(state: WalletState, now: datetime) -> list[CapCheck]:
    """The wallet's own caps at `now` (its windows and periods, per authorization)."""
    per_authorization: Candidate = (CapKind.PER_AUTHORIZATION, state.wallet_id, state.caps.per_authorization, None)
    return _checks(state, [per_authorization, *_wallet_candidates(state, now)], now)


def _wallet_candidates(state: WalletState, now: datetime) -> list[Candidate]:
    caps, wallet_id = state.caps, state.wallet_id
    week, month, year = (period_end(now, state.time_zone, period) for period in ("week", "month", "year"))
    return [
        (CapKind.WALLET_ROLLING_24H, wallet_id, caps.rolling_24h, None),
        (CapKind.WALLET_WEEKLY, wallet_id, caps.weekly, week),
        (CapKind.WALLET_MONTHLY, wallet_id, caps.monthly, month),
        (CapKind.WALLET_YEARLY, wallet_id, caps.yearly, year),
        (CapKind.WALLET_ALL_TIME, wallet_id, caps.all_time, None),
    ]


def _checks(state: WalletState, candidates: list[Candidate], now: datetime) -> list[CapCheck]:
    checks = []
    for cap, scope_id, limit, window_ends_at in candidates:
        if limit is None:
            continue
        base = limit.amount_minor if isinstance(limit, Money) else limit
        checks.append(
            CapCheck(
                cap,
                scope_id,
                base + raised_minor(state, cap, scope_id, now) if state.raises else base,
                spent_minor(state, cap, scope_id, now),
                0 if cap == CapKind.PER_AUTHORIZATION else held_minor(state, cap, scope_id),
                window_ends_at,
            )
        )
    return checks


def reference_forget_old(state: WalletState, now: datetime) -> WalletState:
    """`decide.forget_old` as it was: drop what no rule can need any more."""
    window_start = now - ROLLING_WINDOW
    horizon = now - MEMORY_HORIZON
    kept_keys = kept_periods(now, state.time_zone)
    prune_decisions = state.decisions_pruned_at is not None and now - state.decisions_pruned_at >= DECISION_PRUNE_EVERY
    if (
        (not state.recent or state.recent[0].at > window_start)
        and not prune_decisions
        and all(r.until > now for r in state.raises)
        and all(at > horizon for at in state.released.values())
        and all(at > horizon for at in state.issuer_held.values())
        and all(key in kept_keys for key in state.periods)
    ):
        return state  # nothing has aged out: keep the same value, copy nothing
    kept = bisect.bisect_right(state.recent, window_start, key=lambda p: p.at)
    decisions = state.decisions
    if prune_decisions:
        old = [key for key, (decided_at, _) in state.decisions.items() if decided_at <= horizon]
        if old:
            mutation = as_map(state.decisions).mutate()
            for key in old:
                del mutation[key]
            decisions = mutation.finish()
    return state.evolve(
        recent=state.recent[kept:],
        rolling=_without(state.rolling, state.recent[:kept]),
        periods={key: sums for key, sums in state.periods.items() if key in kept_keys},
        raises=tuple(r for r in state.raises if r.until > now),
        decisions=decisions,
        decisions_pruned_at=now if prune_decisions else state.decisions_pruned_at,
        released={key: at for key, at in state.released.items() if at > horizon},
        issuer_held={key: at for key, at in state.issuer_held.items() if at > horizon},
    )


def _status(check: CapCheck, currency: str, extra_held_minor: int = 0) -> CapStatus:
    """The contract's view of a cap, optionally with a new hold counted (`CapCheck.status` as it was).

    Built without re-validation: every field is one of ours, and the amounts inside went through
    `Money.of`'s checks.
    """
    used = check.spent_minor + check.held_minor + extra_held_minor
    return trusted(
        CapStatus,
        {
            "cap": check.cap,
            "scope_id": check.scope_id,
            "limit": Money.of(check.limit_minor, currency),
            "spent": Money.of(check.spent_minor, currency),
            "held": Money.of(check.held_minor + extra_held_minor, currency),
            "remaining": Money.of(max(0, check.limit_minor - used), currency),
            "over_by": Money.of(max(0, used - check.limit_minor), currency),
            "window_ends_at": check.window_ends_at,
        },
    )
