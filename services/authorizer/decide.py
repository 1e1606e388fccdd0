"""The authorizer's decisions: a pure function from (state, message, now) to (events, new state).

Checks run in ARCHITECTURE.md's order and the first failing one names the reason. No I/O, no
async, no clock: `now` is given, so replaying the log gives the same answers.
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from pydantic_core import to_json

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CAP_REASONS, CapKind, Merchant, ReasonCode
from schemas.money import CURRENCY_EXPONENTS, Money
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
    hold_of,
    kept_periods,
    month_end,
    month_key,
    period_end,
    period_key,
    raised_minor,
    recall,
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
    digest = _name_digest(parts)
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", int.from_bytes(digest[:16]) & _UUID5_CLEAR | _UUID5_SET)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def derived_id_text(*parts: object) -> str:
    """`str(derived_id(*parts))`, without building the UUID (one per decision)."""
    digest = bytearray(_name_digest(parts)[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    hexed = digest.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def _name_digest(parts: tuple[object, ...]) -> bytes:
    """The SHA-1 of a name-based (version 5) UUID of `parts` in `EVENT_NAMESPACE`."""
    return hashlib.sha1(_NAMESPACE_BYTES + "|".join(map(str, parts)).encode(), usedforsecurity=False).digest()


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


def applicable_caps(state: WalletState, card_id: str, trace_id: str | None, now: datetime) -> list[CapCheck]:
    """Every cap an authorization on `card_id` (stamped with `trace_id`) must fit, in check order.

    Written out cap by cap (every decision runs it): a limit that is None is no such cap; spend is
    never below zero after refunds; a per-authorization cap has no spend nor holds; raises in force
    add to a limit. `reference.reference_applicable_caps` is the table-driven form it replaced.
    """
    card, caps, wallet_id = state.cards[card_id], state.caps, state.wallet_id
    card_caps, card_scope = card.caps, "card:" + card_id
    month, month_ends = month_key(now, state.time_zone), month_end(now, state.time_zone)
    lifetime, held, rolling = state.lifetime, state.held, _rolling_sums(state, now)
    checks: list[CapCheck] = []
    add = checks.append
    if (limit := card_caps.per_authorization) is not None:
        add(_check((CapKind.PER_AUTHORIZATION, card_id, limit.amount_minor, 0, 0, None)))
    if (limit := caps.per_authorization) is not None:
        add(_check((CapKind.PER_AUTHORIZATION, wallet_id, limit.amount_minor, 0, 0, None)))
    card_held = held.get(card_scope, 0)
    if (funded := card.funded_minor) is not None:
        add(_check((CapKind.CARD_FUNDED, card_id, funded, max(0, lifetime.get(card_scope, 0)), card_held, None)))
    if (limit := card_caps.rolling_24h) is not None:
        spent = rolling.get(card_scope, 0) if rolling is not None else _scanned(state, card_id, now)
        add(_check((CapKind.CARD_ROLLING_24H, card_id, limit.amount_minor, max(0, spent), card_held, None)))
    if (limit := card_caps.weekly) is not None:
        add(_calendar_check(state, now, CapKind.CARD_WEEKLY, card_id, card_scope, "week", limit, card_held))
    if (limit := card_caps.monthly) is not None:
        spent = max(0, state.periods.get(month, _NOTHING).get(card_scope, 0))
        add(_check((CapKind.CARD_MONTHLY, card_id, limit.amount_minor, spent, card_held, month_ends)))
    if (limit := card_caps.yearly) is not None:
        add(_calendar_check(state, now, CapKind.CARD_YEARLY, card_id, card_scope, "year", limit, card_held))
    if (limit := card_caps.all_time) is not None:
        spent = max(0, lifetime.get(card_scope, 0))
        add(_check((CapKind.CARD_ALL_TIME, card_id, limit.amount_minor, spent, card_held, None)))
    if trace_id is not None and (trace_limit := state.trace_caps.get(trace_id, caps.per_trace)) is not None:
        trace_scope = "trace:" + trace_id
        minor = trace_limit.amount_minor if isinstance(trace_limit, Money) else trace_limit
        spent, trace_held = max(0, lifetime.get(trace_scope, 0)), held.get(trace_scope, 0)
        add(_check((CapKind.TRACE, trace_id, minor, spent, trace_held, None)))
    _wallet_checks(state, now, rolling, month, month_ends, add, per_authorization=False)
    return _raised(state, checks, now) if state.raises else checks


def wallet_caps(state: WalletState, now: datetime) -> list[CapCheck]:
    """The wallet's own caps at `now` (its windows and periods, per authorization)."""
    checks: list[CapCheck] = []
    month, month_ends = month_key(now, state.time_zone), month_end(now, state.time_zone)
    _wallet_checks(state, now, _rolling_sums(state, now), month, month_ends, checks.append, per_authorization=True)
    return _raised(state, checks, now) if state.raises else checks


def _wallet_checks(  # noqa: PLR0917 - what applicable_caps already worked out, passed on
    state: WalletState,
    now: datetime,
    rolling: Mapping[str, int] | None,
    month: str,
    month_ends: datetime,
    add: Callable[[CapCheck], None],
    *,
    per_authorization: bool,
) -> None:
    """The wallet's caps, in check order (its per-authorization cap first only when asked)."""
    caps, wallet_id, wallet_held = state.caps, state.wallet_id, state.held.get("wallet", 0)
    if per_authorization and (limit := caps.per_authorization) is not None:
        add(_check((CapKind.PER_AUTHORIZATION, wallet_id, limit.amount_minor, 0, 0, None)))
    if (limit := caps.rolling_24h) is not None:
        spent = rolling.get("wallet", 0) if rolling is not None else _scanned(state, None, now)
        add(_check((CapKind.WALLET_ROLLING_24H, wallet_id, limit.amount_minor, max(0, spent), wallet_held, None)))
    if (limit := caps.weekly) is not None:
        add(_calendar_check(state, now, CapKind.WALLET_WEEKLY, wallet_id, "wallet", "week", limit, wallet_held))
    if (limit := caps.monthly) is not None:
        spent = max(0, state.periods.get(month, _NOTHING).get("wallet", 0))
        add(_check((CapKind.WALLET_MONTHLY, wallet_id, limit.amount_minor, spent, wallet_held, month_ends)))
    if (limit := caps.yearly) is not None:
        add(_calendar_check(state, now, CapKind.WALLET_YEARLY, wallet_id, "wallet", "year", limit, wallet_held))
    if (limit := caps.all_time) is not None:
        spent = max(0, state.lifetime.get("wallet", 0))
        add(_check((CapKind.WALLET_ALL_TIME, wallet_id, limit.amount_minor, spent, wallet_held, None)))


_NOTHING: Mapping[str, int] = {}


def _calendar_check(  # noqa: PLR0917 - one cap's parts
    state: WalletState, now: datetime, cap: CapKind, scope_id: str, scope: str, period: str, limit: Money, held: int
) -> CapCheck:
    """A weekly or yearly cap's check (monthly ones are written out: most wallets have one)."""
    spent = max(0, state.periods.get(period_key(now, state.time_zone, period), _NOTHING).get(scope, 0))
    return _check((cap, scope_id, limit.amount_minor, spent, held, period_end(now, state.time_zone, period)))


# `CapCheck(*values)` without the named tuple's Python-level __new__ (eight per decision).
_check: Callable[[tuple[CapKind, str, int, int, int, datetime | None]], CapCheck] = partial(tuple.__new__, CapCheck)


def _rolling_sums(state: WalletState, now: datetime) -> Mapping[str, int] | None:
    """The running sums of the rolling window, when exact at `now` (nothing older is kept: the case
    in a decision, which forgets old postings first); None when the postings must be summed.
    """
    return state.rolling if not state.recent or state.recent[0].at > now - ROLLING_WINDOW else None


def _scanned(state: WalletState, card_id: str | None, now: datetime) -> int:
    """The rolling window's spend summed posting by posting (a card's, or the wallet's with None)."""
    if card_id is None:
        return spent_minor(state, CapKind.WALLET_ROLLING_24H, state.wallet_id, now)
    return spent_minor(state, CapKind.CARD_ROLLING_24H, card_id, now)


def _raised(state: WalletState, checks: list[CapCheck], now: datetime) -> list[CapCheck]:
    """`checks` with the raises in force at `now` added to their limits."""
    return [
        check._replace(limit_minor=check.limit_minor + raised_minor(state, check.cap, check.scope_id, now))
        for check in checks
    ]


def _policy_reason(state: WalletState, request: AuthorizationRequested, now: datetime) -> ReasonCode | None:
    """The first failing deadline, card, wallet or merchant check, or None when all pass."""
    if (
        now > request.deadline_at
        or request.issuer_authorization_id in state.released
        or request.issuer_authorization_id in state.issuer_held  # answered, then approved by the issuer
    ):
        return ReasonCode.DEADLINE_EXCEEDED
    standing = card_standing(state, request.card_id, now)
    if standing is not None:
        return standing
    return _merchant_reason(state, request.card_id, request.merchant)


def _merchant_reason(state: WalletState, card_id: str, merchant: Merchant) -> ReasonCode | None:
    """Why the card's or the wallet's merchant rules refuse `merchant` (its MCC, network id or
    country), or None.
    """
    card, mcc = state.cards[card_id], merchant.mcc
    if card.mcc_allow and mcc not in card.mcc_allow:
        return ReasonCode.MCC_NOT_ALLOWED
    if mcc in card.mcc_block:
        return ReasonCode.MCC_BLOCKED
    if card.merchant_lock is not None and merchant.network_id != card.merchant_lock:
        return ReasonCode.MERCHANT_LOCKED
    if state.countries:
        return _country_reason(state.countries, card_id, merchant.country)
    return None


def _country_reason(
    countries: Mapping[str, tuple[frozenset[str], frozenset[str]]], card_id: str, country: str | None
) -> ReasonCode | None:
    """Why the merchant's country is refused by the card's or the wallet's rules, or None."""
    for scope in ("card:" + card_id, "wallet"):
        rules = countries.get(scope)
        if rules is None:
            continue
        allow, block = rules
        if allow and country not in allow:
            return ReasonCode.MERCHANT_COUNTRY_NOT_ALLOWED
        if country in block:
            return ReasonCode.MERCHANT_COUNTRY_BLOCKED
    return None


def card_standing(state: WalletState, card_id: str, now: datetime) -> ReasonCode | None:
    """Why every authorization on `card_id` is declined at `now`, whatever its amount and merchant
    (the card unknown, closed, frozen or expired; the wallet closed or frozen), or None.
    In ARCHITECTURE.md's order; written out rather than as a table, since every decision runs it.
    """
    card = state.cards.get(card_id)
    if card is None:
        return ReasonCode.CARD_NOT_FOUND
    if card.status != "active":
        return ReasonCode.CARD_CLOSED if card.status == "closed" else ReasonCode.CARD_FROZEN
    if card.expires_at is not None and card.expires_at <= now:
        return ReasonCode.CARD_EXPIRED
    if state.status != "active":
        return ReasonCode.WALLET_CLOSED if state.status == "closed" else ReasonCode.WALLET_FROZEN
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


class Decided:
    """An authorization's decision as `decide_authorization` makes it: the fields the runtime reads,
    and the contract's JSON (`payload`), encoded once from the decision's integers.

    Not the pydantic contract: building `AuthorizationDecided` with its cap statuses and amounts,
    then serializing it, cost four times the rules themselves (issue 20). `contract()` gives the
    `AuthorizationDecided` the payload encodes (validated), for tests and rare paths.
    """

    __slots__ = (
        "approved", "decided_at", "event_id_text", "failed_cap", "payload", "reason", "request", "text", "trace_id",
    )  # fmt: skip
    type = "authorization_decided"

    def __init__(  # noqa: PLR0917 - one argument per field, all needed
        self,
        request: AuthorizationRequested,
        event_id_text: str,
        approved: bool,  # noqa: FBT001 - a field
        reason: ReasonCode,
        failed_cap: CapKind | None,
        trace_id: str | None,
        decided_at: datetime,
        text: str,
    ) -> None:
        self.request = request
        self.event_id_text = event_id_text
        self.approved = approved
        self.reason = reason
        self.failed_cap = failed_cap
        self.trace_id = trace_id
        self.decided_at = decided_at
        self.text = text  # the JSON as text, for Postgres (a decode of the bytes cost ~1.7 us)
        self.payload = text.encode()  # and as bytes, for Kafka and the state's memory

    @property
    def wallet_id(self) -> str:
        """The request's wallet."""
        return self.request.wallet_id

    @property
    def card_id(self) -> str:
        """The request's card."""
        return self.request.card_id

    @property
    def issuer_authorization_id(self) -> str:
        """The request's authorization id (the idempotency key)."""
        return self.request.issuer_authorization_id

    @property
    def event_id(self) -> uuid.UUID:
        """The decision's id, derived from the authorization id."""
        return uuid.UUID(self.event_id_text)

    def contract(self) -> AuthorizationDecided:
        """The published contract, parsed (and so validated) from `payload`."""
        return AuthorizationDecided.model_validate_json(self.payload)

    def __repr__(self) -> str:
        return f"Decided({self.payload.decode()})"


def decide_authorization(
    state: WalletState, request: AuthorizationRequested, now: datetime, rates: RateTable = NO_RATES
) -> tuple[Decided | AuthorizationDecided, WalletState]:
    """Approve (placing a hold) or decline `request`; a request seen before gets its first answer.

    The same rules, reasons, caps and bytes as before issue 20 (`reference.py`, compared by
    `tests/unit/test_decide_equivalence.py`); the decision is encoded straight from integers.
    """
    authorization_id = request.issuer_authorization_id
    earlier = state.decisions.get(authorization_id)
    if earlier is not None:
        return recall(earlier), state
    increment_of = request.increment_of
    grown = None if increment_of is None else hold_of(state, increment_of)
    # An increment's caps are those of the hold it grows (its trace, even if the card's changed since).
    trace_id = bound_trace(state, request.card_id) if grown is None else grown.trace_id
    reason = _policy_reason(state, request, now)
    if reason is None and increment_of is not None and (grown is None or grown.card_id != request.card_id):
        reason = ReasonCode.INVALID_REQUEST  # nothing of this card's held under that id to add to
    asked: dict[str, Any] = {}
    if state.velocity:  # every authorization asked counts in its limited scopes, declined ones too
        over, asked["asked_at"] = _velocity(state, request.card_id, now)
        if reason is None and over:
            reason = ReasonCode.VELOCITY_LIMIT
    cap_minor = rates.convert_up(request.amount, state.currency)
    if reason is None and cap_minor is None:
        reason = ReasonCode.FX_RATE_MISSING
    checks = [] if reason is not None else applicable_caps(state, request.card_id, trace_id, now)
    amount_minor = cap_minor or 0
    failed = None
    for check in checks:
        if not check.fits(amount_minor):
            failed = check
            reason = _REASON_BY_CAP[check.cap]
            break
    approved = reason is None
    event_id_text = derived_id_text("decision", authorization_id)
    text = _decision_json(
        state.currency, request, event_id_text, reason, failed, cap_minor, trace_id, checks, now,
        amount_minor if approved else 0, now + DEFAULT_HOLD_TTL if grown is None else grown.expires_at,
    )  # fmt: skip
    decision = Decided(
        request, event_id_text, approved, reason or ReasonCode.APPROVED, None if failed is None else failed.cap,
        trace_id, now, text,
    )  # fmt: skip
    remembered = {
        "decisions": as_map(state.decisions).set(authorization_id, (now, decision.payload)),
        "decisions_pruned_at": state.decisions_pruned_at or now,  # the clock of the next bulk prune
        **asked,
    }
    if not approved:
        return decision, state.evolve(**remembered)
    if grown is not None:  # an increment: the authorization's own hold grows, and keeps its expiry
        more = grown._replace(amount_minor=grown.amount_minor + amount_minor)
        return decision, set_hold(state, grown.authorization_id, more, **remembered)
    hold = Hold(authorization_id, request.card_id, trace_id, amount_minor, now, now + DEFAULT_HOLD_TTL)
    return decision, set_hold(state, authorization_id, hold, **remembered)


def _velocity(state: WalletState, card_id: str, now: datetime) -> tuple[bool, dict[str, tuple[datetime, ...]]]:
    """Whether an authorization asked on `card_id` at `now` is one too many in a rolling window of a
    velocity limit (its card's or its wallet's), and the times asked with this one counted (only as
    many as each limit needs are kept).
    """
    asked, over = dict(state.asked_at), False
    for scope in ("card:" + card_id, "wallet"):
        limit = state.velocity.get(scope)
        if limit is None:
            continue
        most, window_s = limit
        since = now - timedelta(seconds=window_s)
        recent = [moment for moment in asked.get(scope, ()) if moment > since]
        over = over or len(recent) >= most
        asked[scope] = (*recent, now)[-most:]
    return over, asked


def _decision_json(  # noqa: PLR0917 - the decision's parts, encoded in one place
    currency: str,
    request: AuthorizationRequested,
    event_id_text: str,
    reason: ReasonCode | None,
    failed: CapCheck | None,
    cap_minor: int | None,
    trace_id: str | None,
    checks: list[CapCheck],
    now: datetime,
    extra_held_minor: int,
    hold_expires_at: datetime,
) -> str:
    """The decision's JSON, byte for byte what pydantic wrote for the model the reference builds
    (the same fields in the same order: the request's echo, then the outcome).
    """
    tail = _money_tail(currency)
    parts = []
    templates = _CAP_TEMPLATES
    for cap, scope_id, limit, spent, held_before, window_ends_at in checks:
        template = templates.get((cap, scope_id, window_ends_at, tail)) or _cap_template(
            cap, scope_id, window_ends_at, tail
        )
        held = held_before + extra_held_minor
        used = spent + held
        parts.append(
            template % (limit, spent, held, limit - used if used < limit else 0, used - limit if used > limit else 0)
        )
    caps = ",".join(parts)
    approved = reason is None
    cap_amount = "null" if cap_minor is None else '{"amount_minor":' + str(cap_minor) + tail
    increment_of = request.increment_of
    increment = "" if increment_of is None else ',"increment_of":' + _quoted(increment_of)
    return (
        f'{{"type":"authorization_decided","schema_version":{1 if increment_of is None else 2},'
        f'"event_id":"{event_id_text}",'
        f'"request_event_id":"{request.event_id}","wallet_id":"{request.wallet_id}","card_id":"{request.card_id}",'
        f'"issuer":"{request.issuer.value}","issuer_authorization_id":"{request.issuer_authorization_id}",'
        f'"amount":{_money_json(request.amount)},"merchant_amount":{_money_json(request.merchant_amount)},'
        f'"merchant":{_MERCHANT_JSON.to_json(request.merchant).decode()},'
        f'"approved":{"true" if approved else "false"},"reason":"{"approved" if approved else reason.value}",'  # type: ignore[union-attr]
        f'"failed_cap":{"null" if failed is None else _quoted(failed.cap.value)},'
        f'"cap_amount":{cap_amount},'
        f'"trace_id":{"null" if trace_id is None else _quoted(trace_id)},"caps":[{caps}],'
        f'"decided_at":{_datetime_json(now)},'
        f'"hold_expires_at":{_datetime_json(hold_expires_at) if approved else "null"}{increment}}}'
    )


_MERCHANT_JSON = Merchant.__pydantic_serializer__
# Parts of a decision's JSON that repeat from one decision to the next, built once. Bounded: each
# is cleared whole when full (a cap's part is per scope, so there are as many as cards and traces).
_PARTS_MAX = 65_536
_MONEY_TAILS: dict[str, str] = {}
_CAP_TEMPLATES: dict[tuple[CapKind, str, datetime | None, str], str] = {}
_DATETIMES: dict[tuple[datetime, timedelta | None], str] = {}


def _money_tail(currency: str) -> str:
    """What follows the amount in a `Money`'s JSON: `,"currency":"USD","exponent":2}`."""
    tail = _MONEY_TAILS.get(currency)
    if tail is None:
        tail = _MONEY_TAILS[currency] = f',"currency":"{currency}","exponent":{CURRENCY_EXPONENTS[currency]}}}'
    return tail


def _money_json(money: Money) -> str:
    return f'{{"amount_minor":{money.amount_minor}{_money_tail(money.currency)}'


def _cap_template(cap: CapKind, scope_id: str, window_ends_at: datetime | None, tail: str) -> str:
    """One `CapStatus`'s JSON with `%d` for its five amounts (limit, spent, held, remaining, over by)."""
    key = (cap, scope_id, window_ends_at, tail)
    template = _CAP_TEMPLATES.get(key)
    if template is None:
        if len(_CAP_TEMPLATES) >= _PARTS_MAX:
            _CAP_TEMPLATES.clear()
        amount = '{"amount_minor":%d' + tail.replace("%", "%%")
        window = "null" if window_ends_at is None else _datetime_json(window_ends_at)
        template = _CAP_TEMPLATES[key] = (
            f'{{"cap":"{cap.value}","scope_id":{_quoted(scope_id).replace("%", "%%")},"limit":{amount},'
            f'"spent":{amount},"held":{amount},"remaining":{amount},"over_by":{amount},"window_ends_at":{window}}}'
        )
    return template


def _datetime_json(moment: datetime) -> str:
    """`moment` as pydantic writes it, quoted ("2026-11-23T12:00:00Z", "...-05:00")."""
    key = (moment, moment.utcoffset())  # equal instants at one offset are written alike
    text = _DATETIMES.get(key)
    if text is None:
        if len(_DATETIMES) >= _PARTS_MAX:
            _DATETIMES.clear()
        text = _DATETIMES[key] = to_json(moment).decode()
    return text


def _quoted(text: str) -> str:
    """`text` as a JSON string, as pydantic writes it."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return to_json(text).decode()


def post_spend(state: WalletState, posting: Posting) -> WalletState:
    """Count `posting` (negative: a refund) in the rolling window, its calendar periods and the
    lifetime totals.
    """
    scopes = ("wallet", "card:" + posting.card_id)
    periods = dict(state.periods)
    for period in ("week", "month", "year"):
        key = period_key(posting.at, state.time_zone, period)
        sums = dict(periods.get(key, _NOTHING))
        for scope in scopes:
            sums[scope] = sums.get(scope, 0) + posting.amount_minor
        periods[key] = sums
    lifetime = dict(state.lifetime)
    for key in (*scopes, *(["trace:" + posting.trace_id] if posting.trace_id else [])):
        lifetime[key] = lifetime.get(key, 0) + posting.amount_minor
    rolling = dict(state.rolling)
    for scope in scopes:
        rolling[scope] = rolling.get(scope, 0) + posting.amount_minor
    # Postings mostly arrive in time order: insert by position rather than sorting again. Ties are
    # ordered by id, as Postgres returns them, so a reloaded wallet equals the one in memory.
    position = bisect.bisect_right(state.recent, (posting.at, posting.posting_id), key=lambda p: (p.at, p.posting_id))
    recent = (*state.recent[:position], posting, *state.recent[position:])
    return state.evolve(periods=periods, lifetime=lifetime, recent=recent, rolling=rolling)


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
    kept_keys = kept_periods(now, state.time_zone)
    prune_decisions = state.decisions_pruned_at is not None and now - state.decisions_pruned_at >= DECISION_PRUNE_EVERY
    # Every message runs this test first; each part is cheap when nothing has aged out (the usual
    # case): an empty collection is not looked into, and the oldest entry stands for all of them.
    if (
        (not state.recent or state.recent[0].at > window_start)
        and not prune_decisions
        and (not state.raises or all(r.until > now for r in state.raises))
        and (not state.released or min(state.released.values()) > horizon)
        and (not state.issuer_held or min(state.issuer_held.values()) > horizon)
        and kept_keys.issuperset(state.periods)
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
