"""The authorizer's decisions: a pure function from (state, message, now) to (events, new state).

Checks run in ARCHITECTURE.md's order and the first failing one names the reason. No I/O, no
async, no clock: `now` is given, so replaying the log gives the same answers.
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CAP_REASONS, CapKind, CapStatus, ReasonCode
from schemas.money import Money
from schemas.trusted import trusted
from services.authorizer.state import (
    DECISION_PRUNE_EVERY,
    DEFAULT_HOLD_TTL,
    MEMORY_HORIZON,
    NO_RATES,
    ROLLING_WINDOW,
    Hold,
    Posting,
    RateTable,
    WalletState,
    as_map,
    bound_trace,
    held_minor,
    month_end,
    month_key,
    monthly_key,
    raised_minor,
    recall,
    remember,
    set_hold,
    spent_minor,
)

_REASON_BY_CAP = {cap: reason for reason, cap in CAP_REASONS.items()}
# Deterministic ids: the same input always produces the same event ids.
EVENT_NAMESPACE = uuid.UUID("6f1c1f38-6a43-4c36-9b53-1d6d4f1f6b2e")


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes
# The version (5) and variant (RFC 4122) bits of a name-based SHA-1 UUID.
_UUID5_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID5_SET = 5 << 76 | 0x8000 << 48


def derived_id(*parts: object) -> uuid.UUID:
    """A stable id for an event caused by `parts` (so a replay publishes the same ids).

    Exactly `uuid.uuid5(EVENT_NAMESPACE, "|".join(map(str, parts)))`, built without `UUID.__init__`'s
    argument checks (one per decision; they cost half of it). `tests/unit/test_authorizer_state.py` compares.
    """
    name = "|".join(map(str, parts)).encode()
    digest = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", int.from_bytes(digest[:16]) & _UUID5_CLEAR | _UUID5_SET)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


class CapCheck(NamedTuple):
    """One applicable cap at one moment: its limit (with raises), spend and holds in its scope.

    A named tuple rather than a frozen dataclass: a decision builds one per applicable cap, and a
    frozen dataclass's __init__ cost more than the check itself.
    """

    cap: CapKind
    scope_id: str
    limit_minor: int
    spent_minor: int
    held_minor: int
    window_ends_at: datetime | None

    def fits(self, amount_minor: int) -> bool:
        """True when `amount_minor` more stays within the limit."""
        return self.spent_minor + self.held_minor + amount_minor <= self.limit_minor

    def status(self, currency: str, extra_held_minor: int = 0) -> CapStatus:
        """The contract's view of this cap, optionally with a new hold counted.

        Built without re-validation: every field is one of ours, and the amounts inside went
        through `Money.of`'s checks.
        """
        used = self.spent_minor + self.held_minor + extra_held_minor
        return trusted(
            CapStatus,
            {
                "cap": self.cap,
                "scope_id": self.scope_id,
                "limit": Money.of(self.limit_minor, currency),
                "spent": Money.of(self.spent_minor, currency),
                "held": Money.of(self.held_minor + extra_held_minor, currency),
                "remaining": Money.of(max(0, self.limit_minor - used), currency),
                "over_by": Money.of(max(0, used - self.limit_minor), currency),
                "window_ends_at": self.window_ends_at,
            },
        )


Candidate = tuple[CapKind, str, Money | int | None, datetime | None]  # cap, scope, limit, window end


def applicable_caps(state: WalletState, card_id: str, trace_id: str | None, now: datetime) -> list[CapCheck]:
    """Every cap an authorization on `card_id` (stamped with `trace_id`) must fit, in check order."""
    card = state.cards[card_id]
    month_ends = month_end(now, state.time_zone)
    candidates: list[Candidate] = [
        (CapKind.PER_AUTHORIZATION, card_id, card.caps.per_authorization, None),
        (CapKind.PER_AUTHORIZATION, state.wallet_id, state.caps.per_authorization, None),
        (CapKind.CARD_FUNDED, card_id, card.funded_minor, None),
        (CapKind.CARD_ROLLING_24H, card_id, card.caps.rolling_24h, None),
        (CapKind.CARD_MONTHLY, card_id, card.caps.monthly, month_ends),
    ]
    if trace_id is not None:
        candidates.append((CapKind.TRACE, trace_id, state.trace_caps.get(trace_id, state.caps.per_trace), None))
    candidates += [
        (CapKind.WALLET_ROLLING_24H, state.wallet_id, state.caps.rolling_24h, None),
        (CapKind.WALLET_MONTHLY, state.wallet_id, state.caps.monthly, month_ends),
    ]
    return _checks(state, candidates, now)


def wallet_caps(state: WalletState, now: datetime) -> list[CapCheck]:
    """The wallet's own caps at `now` (its rolling and monthly windows, per authorization)."""
    month_ends = month_end(now, state.time_zone)
    return _checks(
        state,
        [
            (CapKind.PER_AUTHORIZATION, state.wallet_id, state.caps.per_authorization, None),
            (CapKind.WALLET_ROLLING_24H, state.wallet_id, state.caps.rolling_24h, None),
            (CapKind.WALLET_MONTHLY, state.wallet_id, state.caps.monthly, month_ends),
        ],
        now,
    )


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


def _policy_reason(state: WalletState, request: AuthorizationRequested, now: datetime) -> ReasonCode | None:  # noqa: PLR0911 - a return per check
    """The first failing deadline, card, wallet or merchant check, or None when all pass."""
    if (
        now > request.deadline_at
        or request.issuer_authorization_id in state.released
        or request.issuer_authorization_id in state.issuer_held  # answered, then approved by the issuer
    ):
        return ReasonCode.DEADLINE_EXCEEDED
    card = state.cards.get(request.card_id)
    if card is None:
        return ReasonCode.CARD_NOT_FOUND
    mcc = request.merchant.mcc
    # In ARCHITECTURE.md's order; written out rather than as a table, since every decision runs it.
    if card.status != "active":
        return ReasonCode.CARD_CLOSED if card.status == "closed" else ReasonCode.CARD_FROZEN
    if card.expires_at is not None and card.expires_at <= now:
        return ReasonCode.CARD_EXPIRED
    if state.status != "active":
        return ReasonCode.WALLET_CLOSED if state.status == "closed" else ReasonCode.WALLET_FROZEN
    if card.mcc_allow and mcc not in card.mcc_allow:
        return ReasonCode.MCC_NOT_ALLOWED
    if mcc in card.mcc_block:
        return ReasonCode.MCC_BLOCKED
    if card.merchant_lock is not None and request.merchant.network_id != card.merchant_lock:
        return ReasonCode.MERCHANT_LOCKED
    return None


def answer_fields(request: AuthorizationRequested) -> dict[str, Any]:
    """What every decision repeats from its request, with an id derived from the authorization id."""
    return {
        "event_id": derived_id("decision", request.issuer_authorization_id),
        "request_event_id": request.event_id,
        "wallet_id": request.wallet_id,
        "card_id": request.card_id,
        "issuer": request.issuer,
        "issuer_authorization_id": request.issuer_authorization_id,
        "amount": request.amount,
        "merchant_amount": request.merchant_amount,
        "merchant": request.merchant,
    }


def decide_authorization(
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
    checks = [] if reason is not None else applicable_caps(state, request.card_id, trace_id, now)
    failed = next((check for check in checks if not check.fits(cap_minor or 0)), None)
    if reason is None and failed is not None:
        reason = _REASON_BY_CAP[failed.cap]
    approved = reason is None
    # Built without re-validation (the hot path; see schemas/trusted.py): the request's values were
    # validated when it was parsed, the rest are ours, and the rules of AuthorizationDecided hold by
    # construction: approved exactly when no reason was found, and then with no failed cap and a
    # hold expiry. The unit and property tests validate every decision they make again (`valid`).
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
            "caps": tuple(check.status(state.currency, cap_minor if approved and cap_minor else 0) for check in checks),
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


def post_spend(state: WalletState, posting: Posting) -> WalletState:
    """Count `posting` (negative: a refund) in the rolling window, its month and the lifetime totals."""
    month = month_key(posting.at, state.time_zone)
    monthly = dict(state.monthly)
    for scope in ("wallet", f"card:{posting.card_id}"):
        key = monthly_key(scope, month)
        monthly[key] = monthly.get(key, 0) + posting.amount_minor
    lifetime = dict(state.lifetime)
    keys = [f"card:{posting.card_id}"] + ([f"trace:{posting.trace_id}"] if posting.trace_id else [])
    for key in keys:
        lifetime[key] = lifetime.get(key, 0) + posting.amount_minor
    rolling = dict(state.rolling)
    for scope in ("wallet", f"card:{posting.card_id}"):
        rolling[scope] = rolling.get(scope, 0) + posting.amount_minor
    # Postings mostly arrive in time order: insert by position rather than sorting again. Ties are
    # ordered by id, as Postgres returns them, so a reloaded wallet equals the one in memory.
    position = bisect.bisect_right(state.recent, (posting.at, posting.posting_id), key=lambda p: (p.at, p.posting_id))
    recent = (*state.recent[:position], posting, *state.recent[position:])
    return state.evolve(monthly=monthly, lifetime=lifetime, recent=recent, rolling=rolling)


def _without(rolling: Mapping[str, int], gone: tuple[Posting, ...]) -> Mapping[str, int]:
    """The running sums of the rolling window once `gone` left it."""
    if not gone:
        return rolling
    sums = dict(rolling)
    for posting in gone:
        for scope in ("wallet", f"card:{posting.card_id}"):
            sums[scope] -= posting.amount_minor
    return {scope: total for scope, total in sums.items() if total}


def forget_old(state: WalletState, now: datetime) -> WalletState:
    """Drop what no rule can need any more, so memory per wallet stays bounded."""
    window_start = now - ROLLING_WINDOW
    horizon = now - MEMORY_HORIZON
    current = month_key(now, state.time_zone)
    previous = month_key(now.replace(day=1) - ROLLING_WINDOW, state.time_zone)
    prune_decisions = state.decisions_pruned_at is not None and now - state.decisions_pruned_at >= DECISION_PRUNE_EVERY
    if (
        (not state.recent or state.recent[0].at > window_start)
        and not prune_decisions
        and all(r.until > now for r in state.raises)
        and all(at > horizon for at in state.released.values())
        and all(at > horizon for at in state.issuer_held.values())
        and all(key.rsplit("@", 1)[1] in (current, previous) for key in state.monthly)
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
        monthly={key: value for key, value in state.monthly.items() if key.rsplit("@", 1)[1] in (current, previous)},
        raises=tuple(r for r in state.raises if r.until > now),
        decisions=decisions,
        decisions_pruned_at=now if prune_decisions else state.decisions_pruned_at,
        released={key: at for key, at in state.released.items() if at > horizon},
        issuer_held={key: at for key, at in state.issuer_held.items() if at > horizon},
    )
