"""A wallet's state as the authorizer holds it in memory, and the pure queries over it.

Frozen values only: a change is a new value (`dataclasses.replace`), never a mutation, so a
decision can be replayed from the log and compared. Never imports asyncpg, faststream or aiokafka.
Amounts here are integers of minor units in the wallet's currency (the caps' currency).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from fractions import Fraction
from functools import lru_cache
from typing import Any, Literal, NamedTuple, TypeAlias
from uuid import UUID
from zoneinfo import ZoneInfo

from immutables import Map

from schemas.authorizations import AuthorizationDecided
from schemas.common import CALENDAR_PERIODS, WALLET_CAPS, CapKind, Issuer
from schemas.money import CURRENCY_EXPONENTS, Money
from schemas.policies import CardCaps, PolicyTemplate, WalletCaps

ROLLING_WINDOW = timedelta(hours=24)
DEFAULT_HOLD_TTL = timedelta(days=7)
# Decisions and release tombstones are kept this long past a hold's life, for idempotent answers
# to redelivered requests; older ones are Postgres's to answer.
MEMORY_HORIZON = DEFAULT_HOLD_TTL + timedelta(days=1)
# Old decisions are dropped in bulk at most this often, so a busy wallet does not rebuild its map
# of decisions on every message (they live up to this much longer than the horizon).
DECISION_PRUNE_EVERY = timedelta(hours=1)
# How many applied command ids a wallet remembers, so a retried command is applied once.
REMEMBERED_COMMANDS = 1_000
Status = Literal["active", "frozen", "closed"]
# The bindings key of a trace bound to the whole wallet rather than one card.
WALLET_WIDE = ""


class InvariantViolated(RuntimeError):
    """A state the rules say cannot happen did; the batch must stop rather than approve money."""


@dataclass(frozen=True)
class Card:
    """One card of the wallet: its status, its own caps and merchant rules."""

    card_id: str
    issuer: Issuer
    issuer_card_token: str
    last4: str
    label: str
    status: Status
    funded_minor: int | None
    caps: CardCaps
    mcc_allow: frozenset[str]
    mcc_block: frozenset[str]
    merchant_lock: str | None
    expires_at: datetime | None


# Holds and postings are named tuples rather than frozen dataclasses: one is made per approval or
# posting, and a frozen dataclass's __init__ costs four times as much.
class Hold(NamedTuple):
    """An approved authorization's pending amount, until it clears, reverses or expires."""

    authorization_id: str
    card_id: str
    trace_id: str | None
    amount_minor: int
    placed_at: datetime
    expires_at: datetime


# An open hold as a wallet keeps it: the `Hold`'s fields in an exact tuple, which the garbage
# collector stops tracking the first time it sees it (a named tuple stays tracked, and a busy
# instance keeps hundreds of thousands of open holds: decision 0005). Read through `hold_of` and
# `open_holds`; written only by `set_hold` (and the store when it loads a wallet).
HoldRow: TypeAlias = tuple[str, str, str | None, int, datetime, datetime]


def hold_row(hold: Hold) -> HoldRow:
    """How a wallet keeps `hold`."""
    return tuple(hold)  # type: ignore[return-value]  # a Hold's fields, in order


def open_holds(holds: Mapping[str, HoldRow]) -> Iterator[Hold]:
    """The holds kept in `holds`."""
    return map(Hold._make, holds.values())


class Posting(NamedTuple):
    """Spend (positive) or a refund (negative) at a time, for the rolling window.

    `posting_id` is the issuer event that moved the money: unique within the wallet.
    """

    posting_id: str
    at: datetime
    card_id: str
    trace_id: str | None
    amount_minor: int


# A decision kept for idempotent answers and lifecycle lookups: (since when it is remembered, its
# JSON), ~1 KB rather than ~13 KB of objects, parsed again only when a duplicate or a refund needs
# it; it is forgotten MEMORY_HORIZON after the first. A plain tuple of plain values on purpose: the
# garbage collector stops tracking such a tuple the first time it sees it (not a named tuple, not a
# dataclass), and a busy wallet remembers thousands; a full collection walked every one of them
# (decision 0005).
Remembered: TypeAlias = tuple[datetime, bytes]


def remember(decision: AuthorizationDecided, since: datetime | None = None) -> Remembered:
    """What a wallet keeps of `decision`, remembered from `since` (by default when it was made)."""
    return (since or decision.decided_at, _DECISION_JSON.to_json(decision))


def recollect(state: WalletState, decision: AuthorizationDecided, now: datetime) -> WalletState:
    """`state` remembering `decision`, made earlier (read back from Postgres), from `now` on."""
    remembered = remember(decision, since=now)
    return state.evolve(decisions=as_map(state.decisions).set(decision.issuer_authorization_id, remembered))


def recall(remembered: Remembered) -> AuthorizationDecided:
    """The remembered decision as it was published."""
    return AuthorizationDecided.model_validate_json(remembered[1])


@dataclass(frozen=True)
class Raise:
    """A temporary increase of one cap's limit."""

    cap: CapKind
    scope_id: str
    amount_minor: int
    until: datetime


@dataclass(frozen=True)
class WalletState:
    """Everything the authorizer needs to decide for one wallet."""

    wallet_id: str
    currency: str
    time_zone: str
    template: PolicyTemplate
    label: str
    status: Status
    caps: WalletCaps
    slack_channel: str | None
    approvers: tuple[str, ...]
    raise_step: Money
    max_raise: Money | None
    cards: Mapping[str, Card] = field(default_factory=dict)
    bindings: Mapping[str, str] = field(default_factory=dict)  # card id (WALLET_WIDE: all cards) → trace
    trace_caps: Mapping[str, int] = field(default_factory=dict)  # trace → its own cap, if not the default
    # Holds and decisions are persistent maps (`immutables.Map`) once changed: a new state shares
    # all but a few nodes with the old one, so a decision costs O(log n), not a copy of n entries.
    holds: Mapping[str, HoldRow] = field(default_factory=dict)  # change only through `set_hold`
    # Running totals of `holds` by scope ("wallet", "card:<id>", "trace:<id>"), so a decision reads
    # what is held without summing every hold; and the earliest expiry, so sweeps are rare.
    held: Mapping[str, int] = field(default_factory=dict)
    earliest_hold_expiry: datetime | None = None
    recent: tuple[Posting, ...] = ()  # the last 24 h of postings, by time then id
    rolling: Mapping[str, int] = field(default_factory=dict)  # sums of `recent` by "wallet" / "card:<id>"
    # Spend by calendar period ("2026-W49", "2026-12", "2026", in the wallet's time zone), then by
    # scope ("wallet", "card:<id>"): the current and previous period of each kind are kept.
    periods: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    lifetime: Mapping[str, int] = field(default_factory=dict)  # "wallet" / "card:<id>" / "trace:<id>" → spend
    raises: tuple[Raise, ...] = ()
    decisions: Mapping[str, Remembered] = field(default_factory=dict)
    decisions_pruned_at: datetime | None = None
    released: Mapping[str, datetime] = field(default_factory=dict)  # released before any decision
    # Authorizations the issuer approved whatever we answered (`AuthorizationApprovedByIssuer`), since
    # when: their hold is the issuer's, so our own deadline's expiry does not release it.
    issuer_held: Mapping[str, datetime] = field(default_factory=dict)
    applied_commands: tuple[UUID, ...] = ()
    # Velocity limits by scope ("wallet", "card:<id>") → (most authorizations, window in seconds), and
    # when the last ones (at most that many) were asked in each limited scope.
    velocity: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    asked_at: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    # Declines in a row before a card is frozen, by scope ("wallet": every card, "card:<id>"), and
    # each limited card's current streak.
    streak_limits: Mapping[str, int] = field(default_factory=dict)
    declines_in_a_row: Mapping[str, int] = field(default_factory=dict)
    # Merchant country rules by scope ("wallet": every card, "card:<id>") → (allowed, blocked).
    countries: Mapping[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> WalletState:  # noqa: ANN401 - field values of every type
        """`dataclasses.replace` for the hot path: copies the fields without re-running __init__
        (a decision makes two or three new states; replace() cost more than the rules).
        """
        new = object.__new__(WalletState)
        values = new.__dict__
        values.update(self.__dict__)
        values.update(changes)
        if len(values) != len(_WALLET_FIELDS):  # a name that is not a field added an entry
            raise TypeError(f"WalletState has no field(s) {sorted(changes.keys() - _WALLET_FIELDS)}")
        return new


_WALLET_FIELDS = frozenset(field.name for field in fields(WalletState))
# `model_dump_json()` without the str round trip: the bytes the outbox publishes.
_DECISION_JSON = AuthorizationDecided.__pydantic_serializer__


@dataclass(frozen=True)
class RateTable:
    """Exact exchange rates: one unit of `source` buys `rate` units of `target` (major units)."""

    rates: Mapping[tuple[str, str], Fraction] = field(default_factory=dict)

    def convert_up(self, money: Money, target: str) -> int | None:
        """`money` in minor units of `target`, rounded up (against the agent); None without a rate."""
        if money.currency == target:
            return money.amount_minor
        rate = self.rates.get((money.currency, target))
        if rate is None:
            return None
        exact = (
            Fraction(money.amount_minor, 10 ** CURRENCY_EXPONENTS[money.currency])
            * rate
            * 10 ** CURRENCY_EXPONENTS[target]
        )
        return int(-((-exact.numerator) // exact.denominator))


NO_RATES = RateTable()


# Memoized on the exact instant: a batch decides every message at one `now`, so each wallet's month
# is worked out once per batch rather than two or three times per message. Exact by construction
# (a cached answer is the one computed for an equal instant), so replays still agree.
@lru_cache(maxsize=1024)
def month_key(moment: datetime, time_zone: str) -> str:
    """The calendar month of `moment` in the wallet's time zone, as "YYYY-MM"."""
    local = moment.astimezone(ZoneInfo(time_zone))
    return f"{local.year:04d}-{local.month:02d}"


@lru_cache(maxsize=1024)
def month_end(moment: datetime, time_zone: str) -> datetime:
    """The first instant of the next month in the wallet's time zone."""
    local = moment.astimezone(ZoneInfo(time_zone))
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)  # noqa: PLR2004 - December
    return datetime(year, month, 1, tzinfo=ZoneInfo(time_zone))


@lru_cache(maxsize=1024)
def period_key(moment: datetime, time_zone: str, period: str) -> str:
    """The calendar `period` ("week", "month", "year") of `moment` in the wallet's time zone, as
    "2026-W49" (ISO 8601: weeks start on Monday), "2026-12" or "2026".
    """
    if period == "month":
        return month_key(moment, time_zone)
    local = moment.astimezone(ZoneInfo(time_zone))
    if period == "week":
        year, week, _ = local.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return f"{local.year:04d}"


@lru_cache(maxsize=1024)
def period_end(moment: datetime, time_zone: str, period: str) -> datetime:
    """The first instant of the calendar `period` after the one `moment` is in (wallet's time zone)."""
    if period == "month":
        return month_end(moment, time_zone)
    zone = ZoneInfo(time_zone)
    local = moment.astimezone(zone)
    if period == "week":
        return datetime.combine(local.date() + timedelta(days=7 - local.weekday()), time(), tzinfo=zone)
    return datetime(local.year + 1, 1, 1, tzinfo=zone)


@lru_cache(maxsize=1024)
def kept_periods(moment: datetime, time_zone: str) -> frozenset[str]:
    """The periods whose spend a wallet keeps at `moment`: of each kind, the current one and the one
    before it (a month: the one a rolling window reaching back from this month's first day starts in).
    """
    week_start = period_end(moment, time_zone, "week") - timedelta(days=7)  # wall clock: the zone's midnight
    year = period_key(moment, time_zone, "year")
    return frozenset({
        period_key(moment, time_zone, "week"),
        period_key(week_start - ROLLING_WINDOW, time_zone, "week"),
        month_key(moment, time_zone),
        month_key(moment.replace(day=1) - ROLLING_WINDOW, time_zone),
        year,
        f"{int(year) - 1:04d}",
    })  # fmt: skip


def period_spend(state: WalletState, period: str, scope: str) -> int:
    """What `scope` ("wallet", "card:<id>") spent in the calendar period `period` (a key)."""
    return state.periods.get(period, {}).get(scope, 0)


def bound_trace(state: WalletState, card_id: str) -> str | None:
    """The trace in force for `card_id`: its own binding, else the wallet's."""
    return state.bindings.get(card_id) or state.bindings.get(WALLET_WIDE)


def _matches(cap: CapKind, scope_id: str, card_id: str, trace_id: str | None) -> bool:
    if cap in WALLET_CAPS:
        return True
    if cap == CapKind.TRACE:
        return trace_id == scope_id
    return card_id == scope_id


def _held_scope(cap: CapKind, scope_id: str) -> str:
    if cap in WALLET_CAPS:
        return "wallet"
    return f"trace:{scope_id}" if cap == CapKind.TRACE else f"card:{scope_id}"


def held_minor(state: WalletState, cap: CapKind, scope_id: str) -> int:
    """What pending holds in the cap's scope add up to; a hold counts until it ends, whatever its age."""
    return state.held.get(_held_scope(cap, scope_id), 0)


def hold_of(state: WalletState, authorization_id: str) -> Hold | None:
    """The open hold of `authorization_id`, if any."""
    row = state.holds.get(authorization_id)
    return None if row is None else Hold._make(row)


def set_hold(state: WalletState, authorization_id: str, hold: Hold | None, **also: Any) -> WalletState:  # noqa: ANN401
    """Place, resize (`hold`) or end (None) one hold, keeping the running totals exact; `also`
    changes other fields in the same new state (a decision remembers itself as it holds).
    """
    old = state.holds.get(authorization_id)
    held = dict(state.held)
    if old is not None:
        _count_held(held, old[1], old[2], -old[3])
    holds = as_map(state.holds)
    earliest = state.earliest_hold_expiry
    if hold is None:
        holds = holds.delete(authorization_id) if authorization_id in holds else holds
    else:
        _count_held(held, hold.card_id, hold.trace_id, hold.amount_minor)
        holds = holds.set(authorization_id, hold_row(hold))
        if earliest is None or hold.expires_at < earliest:
            earliest = hold.expires_at
    if 0 in held.values():  # a scope with nothing held any more is left out
        held = {scope: total for scope, total in held.items() if total}
    return state.evolve(holds=holds, held=held, earliest_hold_expiry=earliest, **also)


def _count_held(held: dict[str, int], card_id: str, trace_id: str | None, amount_minor: int) -> None:
    """Add `amount_minor` to the held totals of a hold's scopes (`_hold_scopes`), in place."""
    held["wallet"] = held.get("wallet", 0) + amount_minor
    scope = "card:" + card_id
    held[scope] = held.get(scope, 0) + amount_minor
    if trace_id:
        scope = "trace:" + trace_id
        held[scope] = held.get(scope, 0) + amount_minor


def spent_minor(state: WalletState, cap: CapKind, scope_id: str, now: datetime) -> int:
    """Posted spend in the cap's scope and window (never below zero after refunds)."""
    if cap in (CapKind.CARD_ROLLING_24H, CapKind.WALLET_ROLLING_24H):
        start = now - ROLLING_WINDOW
        if not state.recent or state.recent[0].at > start:
            # Nothing older than the window is kept: the running sum is exact.
            total = state.rolling.get(_held_scope(cap, scope_id), 0)
        else:
            total = sum(
                posting.amount_minor
                for posting in state.recent
                if posting.at > start and _matches(cap, scope_id, posting.card_id, posting.trace_id)
            )
    elif (period := CALENDAR_PERIODS.get(cap)) is not None:
        total = period_spend(state, period_key(now, state.time_zone, period), _held_scope(cap, scope_id))
    elif cap in (CapKind.CARD_FUNDED, CapKind.CARD_ALL_TIME, CapKind.WALLET_ALL_TIME):
        total = state.lifetime.get(_held_scope(cap, scope_id), 0)
    elif cap == CapKind.TRACE:
        total = state.lifetime.get(f"trace:{scope_id}", 0)
    else:
        total = 0  # a per-authorization cap has no history
    return max(0, total)


def as_map(mapping: Mapping[str, Any]) -> Map[str, Any]:
    """`mapping` as a persistent map (states built by hand or loaded from JSON start as dicts)."""
    return mapping if isinstance(mapping, Map) else Map(mapping)


def _hold_scopes(hold: Hold) -> tuple[str, ...]:
    """The scopes whose held total a hold counts in."""
    if hold.trace_id:
        return ("wallet", f"card:{hold.card_id}", f"trace:{hold.trace_id}")
    return ("wallet", f"card:{hold.card_id}")


def held_sums(holds: Mapping[str, HoldRow]) -> dict[str, int]:
    """The running totals of `holds` by scope, as `WalletState.held` keeps them (zeros left out)."""
    sums: dict[str, int] = {}
    for hold in open_holds(holds):
        for scope in _hold_scopes(hold):
            sums[scope] = sums.get(scope, 0) + hold.amount_minor
    return {scope: total for scope, total in sums.items() if total}


def rolling_sums(recent: tuple[Posting, ...]) -> dict[str, int]:
    """The running sums of `recent` by scope, as `WalletState.rolling` keeps them."""
    sums: dict[str, int] = {}
    for posting in recent:
        for scope in ("wallet", f"card:{posting.card_id}"):
            sums[scope] = sums.get(scope, 0) + posting.amount_minor
    return sums


def raised_minor(state: WalletState, cap: CapKind, scope_id: str, now: datetime) -> int:
    """The sum of the cap's raises still in force at `now`."""
    return sum(r.amount_minor for r in state.raises if r.cap == cap and r.scope_id == scope_id and r.until > now)
