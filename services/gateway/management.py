"""The management API under /v1: wallets, cards, freezes, traces, balances, transactions.

Every change is a wallet command on `wallet.commands`; the call returns once the authorizer has
applied it (its event is back on `wallet.events`), with the wallet or card as it now stands.
Reads come from the authorizer's tables in Postgres. Callers present `Authorization: Bearer
<key>`: `admin` keys may do everything, `read` keys read everything, `agent` keys read their own
wallet and bind traces on it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, CountryCode, Identifier, Issuer, Mcc, Merchant, Reason, ReasonCode, TraceId
from schemas.money import CurrencyCode, Money
from schemas.policies import CardCaps, PolicyTemplate, WalletCaps
from schemas.registry import serialize
from schemas.topics import Topic, message_key, topic_name
from schemas.wallet import (
    AnyWalletCommand,
    AnyWalletEvent,
    BindTrace,
    CloseCard,
    CloseWallet,
    CommandRejected,
    CreateCard,
    CreateWallet,
    FreezeCard,
    FreezeWallet,
    Last4,
    SetDeclineStreakLimit,
    SetMerchantCountries,
    SetVelocityLimit,
    SlackChannel,
    TimeZoneName,
    UnfreezeCard,
    UnfreezeWallet,
    UpdateCaps,
)
from services.authorizer.decide import CapCheck, Decided, wallet_caps
from services.authorizer.domain import decide
from services.authorizer.spendable import spendable
from services.authorizer.state import NO_RATES, RateTable, WalletState, bound_trace
from services.authorizer.store import Store
from services.gateway.keys import ApiKey, Scope, authenticate
from services.gateway.replies import Overloaded, Replies
from services.platform.kafka import Publisher

COMMAND_TIMEOUT_S = 10.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WalletIn(_Body):
    """A new wallet: a policy template, and anything that differs from it."""

    wallet_id: Identifier | None = Field(default=None, description="yours, or one is made up")
    template: PolicyTemplate = PolicyTemplate.STARTER
    currency: CurrencyCode = "USD"
    time_zone: TimeZoneName = "UTC"
    label: str = Field(default="", max_length=200)
    caps: WalletCaps | None = None
    slack_channel: SlackChannel | None = None
    approvers: tuple[str, ...] = ()
    raise_step: Money | None = None
    max_raise: Money | None = None


class CardIn(_Body):
    """A new card of the wallet: the issuer's token and last 4, its money and rules."""

    card_id: Identifier | None = Field(
        default=None, description="yours (unique across all wallets, else 409), or one is made up"
    )
    issuer: Issuer = Issuer.STRIPE
    issuer_card_token: Identifier = Field(description="one card per issuer token across all wallets, else 409")
    last4: Last4
    label: str = Field(default="", max_length=200)
    funded_amount: Money | None = None
    caps: CardCaps = CardCaps()
    mcc_allow: frozenset[Mcc] = frozenset()
    mcc_block: frozenset[Mcc] = frozenset()
    merchant_lock: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = None


class ReasonIn(_Body):
    """Why (kept in the wallet's history)."""

    reason: Reason


class DryRunIn(_Body):
    """An authorization to try on a card without holding anything or recording a decision."""

    amount: Money = Field(description="what the issuer would ask to hold, in the card's billing currency")
    merchant: Merchant = Field(description="the merchant as the card network would describe it")


class TraceIn(_Body):
    """Bind a trace (a task, a PR) to the wallet or one card, with its own cap or the default."""

    trace_id: TraceId
    card_id: Identifier | None = None
    cap: Money | None = None


class VelocityIn(_Body):
    """At most `max_authorizations` per rolling minute or hour on one card or the whole wallet (null lifts it)."""

    card_id: Identifier | None = None
    max_authorizations: int | None = Field(ge=1, le=100_000)
    per: Literal["minute", "hour"] = "minute"


class MerchantCountriesIn(_Body):
    """Where one card (or every card) may buy, by the merchant's ISO 3166-1 alpha-2 country: only in
    `allow` (when not empty), never in `block`. Both empty lifts the rules.
    """

    card_id: Identifier | None = None
    allow: frozenset[CountryCode] = frozenset()
    block: frozenset[CountryCode] = frozenset()


class CountriesOut(BaseModel):
    """Merchant country rules in force."""

    allow: list[str] = Field(description="only these (empty: every country not blocked)")
    block: list[str]


class DeclineStreakIn(_Body):
    """Freeze a card after this many declines in a row (one card, or every card; null lifts it)."""

    card_id: Identifier | None = None
    max_declines: int | None = Field(ge=1, le=100_000)


class VelocityOut(BaseModel):
    """A velocity limit in force: at most `max_authorizations` per rolling `per`."""

    card_id: str | None = Field(description="null: the whole wallet")
    max_authorizations: int
    per: Literal["minute", "hour"]


class WalletCapsIn(_Body):
    """New wallet caps (all of them: a cap left out is removed)."""

    caps: WalletCaps


class CardCapsIn(_Body):
    """New card caps (all of them)."""

    caps: CardCaps


class CapOut(BaseModel):
    """One cap as it stands: limit (with raises), spent, held, used and what remains."""

    cap: CapKind
    scope_id: str
    limit: Money
    spent: Money
    held: Money
    used: Money
    remaining: Money
    window_ends_at: datetime | None


class SpendableOut(BaseModel):
    """What the next authorization on the card can get: the least any cumulative cap leaves."""

    amount: Money | None = Field(
        description="the most the next authorization can be approved for; 0 when blocked; null with no cumulative cap"
    )
    cap: CapKind | None = Field(description="the cap that leaves the least (null with no cumulative cap)")
    scope_id: str | None = Field(description="whose cap it is: the card, the trace or the wallet")
    limit: Money | None = Field(description="that cap's limit, raises included")
    per_authorization: Money | None = Field(description="at most this per authorization: a per-call limit, no budget")
    blocked: ReasonCode | None = Field(description="why every authorization is declined now, if it is")


class CardOut(BaseModel):
    """A card, what it can spend next, and every cap that applies to it."""

    card_id: str
    wallet_id: str
    issuer: Issuer
    issuer_card_token: str
    last4: str
    label: str
    status: str
    funded_amount: Money | None
    trace_id: str | None
    spendable: SpendableOut
    caps: list[CapOut]
    limits: CardCaps = Field(description="the card's own caps as set (without temporary raises)")


class DryRunOut(BaseModel):
    """What the authorizer would decide now for that authorization; nothing held, nothing recorded."""

    dry_run: Literal[True] = True
    approved: bool
    reason: ReasonCode
    failed_cap: CapKind | None = Field(description="the cap it would not fit, when a cap declines it")
    amount: Money
    cap_amount: Money | None = Field(description="the amount in the caps' currency; null without an exchange rate")
    trace_id: str | None
    spendable: SpendableOut = Field(description="what the card's next authorization can get, as it stands")
    caps: list[CapOut] = Field(description="every cap that applies, as it stands (before this authorization)")


class WalletOut(BaseModel):
    """A wallet, its own caps and its cards."""

    wallet_id: str
    label: str
    template: PolicyTemplate
    currency: str
    time_zone: str
    status: str
    slack_channel: str | None
    approvers: tuple[str, ...]
    caps: list[CapOut]
    cards: list[CardOut]
    velocity: list[VelocityOut] = Field(description="velocity limits in force (authorizations per minute or hour)")
    decline_streak_limits: dict[str, int] = Field(
        description="declines in a row before a card is frozen, by card id ('*': every card)"
    )
    merchant_countries: dict[str, CountriesOut] = Field(
        description="merchant country rules, by card id ('*': every card)"
    )
    limits: WalletCaps = Field(description="the wallet's caps as set (without temporary raises)")


class TransactionOut(BaseModel):
    """One authorization as the authorizer decided it."""

    issuer_authorization_id: str
    card_id: str
    approved: bool
    reason: str
    amount: Money
    merchant: dict[str, Any]
    trace_id: str | None
    decided_at: datetime


def _cap_out(check: CapCheck, currency: str) -> CapOut:
    used = check.spent_minor + check.held_minor
    return CapOut(
        cap=check.cap,
        scope_id=check.scope_id,
        limit=Money.of(check.limit_minor, currency),
        spent=Money.of(check.spent_minor, currency),
        held=Money.of(check.held_minor, currency),
        used=Money.of(used, currency),
        remaining=Money.of(max(0, check.limit_minor - used), currency),
        window_ends_at=check.window_ends_at,
    )


def _spendable_out(state: WalletState, card_id: str, now: datetime) -> tuple[SpendableOut, list[CapOut]]:
    """What the card can spend next, and every cap that applies, as the API shows them."""
    can, currency = spendable(state, card_id, now), state.currency
    binding, per_call = can.binding, can.per_authorization
    out = SpendableOut(
        amount=None if can.amount_minor is None else Money.of(can.amount_minor, currency),
        cap=None if binding is None else binding.cap,
        scope_id=None if binding is None else binding.scope_id,
        limit=None if binding is None else Money.of(binding.limit_minor, currency),
        per_authorization=None if per_call is None else Money.of(per_call.limit_minor, currency),
        blocked=can.blocked,
    )
    return out, [_cap_out(check, currency) for check in can.caps]


def _card_out(state: WalletState, card_id: str, now: datetime) -> CardOut:
    card = state.cards[card_id]
    can, caps = _spendable_out(state, card_id, now)
    return CardOut(
        card_id=card_id,
        wallet_id=state.wallet_id,
        issuer=card.issuer,
        issuer_card_token=card.issuer_card_token,
        last4=card.last4,
        label=card.label,
        status=card.status,
        funded_amount=None if card.funded_minor is None else Money.of(card.funded_minor, state.currency),
        trace_id=bound_trace(state, card_id),
        spendable=can,
        caps=caps,
        limits=card.caps,
    )


def dry_run(state: WalletState, card_id: str, body: DryRunIn, now: datetime, rates: RateTable = NO_RATES) -> DryRunOut:
    """What `decide` would answer now for `body` on `card_id`: the same pure function the authorizer
    runs, on the wallet as it was last committed, its outcome thrown away (no hold, no decision).
    """
    card = state.cards[card_id]
    request = AuthorizationRequested(
        event_id=uuid.uuid4(), wallet_id=state.wallet_id, card_id=card_id, issuer=card.issuer,
        issuer_authorization_id=f"dryrun_{uuid.uuid4().hex}", amount=body.amount, merchant_amount=body.amount,
        merchant=body.merchant, requested_at=now, deadline_at=now + timedelta(seconds=2),
    )  # fmt: skip
    events, _ = decide(state, request, now, rates)
    decided = events[-1]  # after the expiries of holds that aged out, if any
    decision = decided.contract() if isinstance(decided, Decided) else decided
    if not isinstance(decision, AuthorizationDecided):
        raise TypeError(f"decide answered a request with {decision!r}")
    can, caps = _spendable_out(state, card_id, now)
    return DryRunOut(
        approved=decision.approved, reason=decision.reason, failed_cap=decision.failed_cap, amount=body.amount,
        cap_amount=decision.cap_amount, trace_id=decision.trace_id, spendable=can, caps=caps,
    )  # fmt: skip


def _wallet_out(state: WalletState, now: datetime) -> WalletOut:
    return WalletOut(
        wallet_id=state.wallet_id,
        label=state.label,
        template=state.template,
        currency=state.currency,
        time_zone=state.time_zone,
        status=state.status,
        slack_channel=state.slack_channel,
        approvers=state.approvers,
        caps=[_cap_out(check, state.currency) for check in wallet_caps(state, now)],
        cards=[_card_out(state, card_id, now) for card_id in sorted(state.cards)],
        velocity=[
            VelocityOut(
                card_id=None if scope == "wallet" else scope.removeprefix("card:"),
                max_authorizations=most,
                per="minute" if window_s == 60 else "hour",  # noqa: PLR2004 - the two windows there are
            )
            for scope, (most, window_s) in sorted(state.velocity.items())
        ],
        decline_streak_limits={
            "*" if scope == "wallet" else scope.removeprefix("card:"): most
            for scope, most in sorted(state.streak_limits.items())
        },
        merchant_countries={
            "*" if scope == "wallet" else scope.removeprefix("card:"): CountriesOut(
                allow=sorted(allow), block=sorted(block)
            )
            for scope, (allow, block) in sorted(state.countries.items())
        },
        limits=state.caps,
    )


class Management:
    """What the /v1 handlers share: Postgres, the broker and the replies of wallet commands."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Publisher,
        replies: Replies[AnyWalletEvent],
        prefix: str,
        rates: RateTable = NO_RATES,
    ) -> None:
        self.pool = pool
        self.rates = rates  # the authorizer's exchange rates, for dry runs
        self._broker = broker
        self._replies = replies
        self._prefix = prefix
        self._store = Store(pool, "")

    async def apply(self, command: AnyWalletCommand) -> AnyWalletEvent:
        """Publish `command`; return its event once the authorizer applied it (409 if it refused)."""
        try:
            future = self._replies.expect(str(command.command_id))
        except Overloaded as error:
            raise HTTPException(503, {"error": "overloaded", "detail": str(error)}) from None
        await self._broker.publish(
            serialize(command), topic=topic_name(Topic.WALLET_COMMANDS, self._prefix), key=message_key(command)
        )
        try:
            event = await asyncio.wait_for(asyncio.shield(future), COMMAND_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise HTTPException(
                504,
                {
                    "error": "not_applied_yet",
                    "detail": "the command is queued but the authorizer did not confirm it in time",
                    "command_id": str(command.command_id),
                },
            ) from None
        if isinstance(event, CommandRejected):
            raise HTTPException(
                409, {"error": "rejected", "detail": event.error, "command_id": str(command.command_id)}
            )
        return event

    async def state(self, wallet_id: str) -> WalletState:
        """The wallet as the authorizer last committed it (404 if there is none)."""
        found = await self._store.load_wallets([wallet_id], datetime.now(UTC))
        if wallet_id not in found:
            raise HTTPException(404, {"error": "not_found", "detail": f"no wallet {wallet_id!r}"})
        return found[wallet_id]

    async def wallet_of_card(self, card_id: str) -> str:
        """The wallet a card belongs to (404 if there is no such card)."""
        wallet_id = await self.pool.fetchval("SELECT wallet_id FROM authorizer.cards WHERE card_id = $1", card_id)
        if wallet_id is None:
            raise HTTPException(404, {"error": "not_found", "detail": f"no card {card_id!r}"})
        return str(wallet_id)

    async def transactions(
        self, column: Literal["card_id", "trace_id"], value: str, wallet_id: str | None, limit: int
    ) -> list[TransactionOut]:
        """Decisions by card or trace, newest first (through `decisions_card` or `decisions_trace`)."""
        rows = await self.pool.fetch(
            f"""SELECT decision FROM authorizer.decisions
                WHERE {column} = $1 AND ($2::text IS NULL OR wallet_id = $2)
                ORDER BY decided_at DESC LIMIT $3""",  # noqa: S608 - column is one of two literals
            value, wallet_id, limit,
        )  # fmt: skip
        return [TransactionOut.model_validate(json.loads(row["decision"])) for row in rows]


def _management(request: Request) -> Management:
    return request.app.state.management  # type: ignore[no-any-return]


async def _caller(request: Request) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise HTTPException(401, {"error": "unauthenticated", "detail": "send Authorization: Bearer <api key>"})
    key = await authenticate(_management(request).pool, presented.strip())
    if key is None:
        raise HTTPException(401, {"error": "unauthenticated", "detail": "unknown or revoked API key"})
    return key


Caller = Annotated[ApiKey, Depends(_caller)]
Shared = Annotated[Management, Depends(_management)]


def _may_read(caller: ApiKey, wallet_id: str) -> None:
    if caller.scope == Scope.AGENT and caller.wallet_id != wallet_id:
        raise HTTPException(403, {"error": "forbidden", "detail": "an agent key sees only its own wallet"})


def _must_admin(caller: ApiKey) -> None:
    if caller.scope != Scope.ADMIN:
        raise HTTPException(403, {"error": "forbidden", "detail": f"needs an admin key, this one is {caller.scope}"})


def _fields(caller: ApiKey, wallet_id: str) -> dict[str, Any]:
    return {"command_id": uuid.uuid4(), "wallet_id": wallet_id, "actor": caller.actor, "issued_at": datetime.now(UTC)}


async def _wallet_change(
    wallet_id: str, caller: ApiKey, shared: Management, command: type[Any], body: ReasonIn
) -> WalletOut:
    _must_admin(caller)
    await shared.apply(command(**_fields(caller, wallet_id), reason=body.reason))
    return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))


async def _card_change(card_id: str, caller: ApiKey, shared: Management, command: type[Any], body: ReasonIn) -> CardOut:
    _must_admin(caller)
    wallet_id = await shared.wallet_of_card(card_id)
    await shared.apply(command(**_fields(caller, wallet_id), card_id=card_id, reason=body.reason))
    return _card_out(await shared.state(wallet_id), card_id, datetime.now(UTC))


async def _within_wallet_caps(shared: Management, wallet_id: str, funded: Money | None) -> None:
    """An agent's card must be funded, in the wallet's currency, at most what the wallet's caps leave."""
    if funded is None:
        raise HTTPException(422, {"error": "funded_amount_required", "detail": "an agent's card needs funded_amount"})
    state = await shared.state(wallet_id)
    if funded.currency != state.currency:
        raise HTTPException(422, {"error": "currency", "detail": f"the wallet's caps are in {state.currency}"})
    windows = [c for c in wallet_caps(state, datetime.now(UTC)) if c.cap != CapKind.PER_AUTHORIZATION]
    room = min((c.limit_minor - c.spent_minor - c.held_minor for c in windows), default=None)
    if room is not None and funded.amount_minor > room:
        raise HTTPException(
            422,
            {
                "error": "above_wallet_caps",
                "detail": f"{funded} asked, the wallet's caps leave {Money.of(max(room, 0), state.currency)}",
            },
        )


def management_router() -> APIRouter:
    """The /v1 routes."""
    router = APIRouter(prefix="/v1", tags=["management"])
    _wallet_routes(router)
    _card_routes(router)
    _control_routes(router)
    return router


def _wallet_routes(router: APIRouter) -> None:

    @router.post("/wallets", status_code=201)
    async def create_wallet(body: WalletIn, caller: Caller, shared: Shared) -> WalletOut:
        """Create a wallet from a policy template."""
        _must_admin(caller)
        wallet_id = body.wallet_id or f"wal_{uuid.uuid4().hex[:12]}"
        values = body.model_dump(exclude={"wallet_id"}, exclude_none=True)
        await shared.apply(CreateWallet(**_fields(caller, wallet_id), **values))
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))

    @router.get("/wallets/{wallet_id}")
    async def get_wallet(wallet_id: str, caller: Caller, shared: Shared) -> WalletOut:
        """A wallet, its caps and its cards as they stand."""
        _may_read(caller, wallet_id)
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))

    @router.put("/wallets/{wallet_id}/caps")
    async def update_wallet_caps(wallet_id: str, body: WalletCapsIn, caller: Caller, shared: Shared) -> WalletOut:
        """Replace the wallet's caps."""
        _must_admin(caller)
        await shared.apply(UpdateCaps(**_fields(caller, wallet_id), wallet_caps=body.caps))
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))

    @router.post("/wallets/{wallet_id}/freeze")
    async def freeze_wallet(wallet_id: str, body: ReasonIn, caller: Caller, shared: Shared) -> WalletOut:
        """Freeze the wallet: every authorization after this is declined."""
        return await _wallet_change(wallet_id, caller, shared, FreezeWallet, body)

    @router.post("/wallets/{wallet_id}/unfreeze")
    async def unfreeze_wallet(wallet_id: str, body: ReasonIn, caller: Caller, shared: Shared) -> WalletOut:
        """Unfreeze the wallet."""
        return await _wallet_change(wallet_id, caller, shared, UnfreezeWallet, body)

    @router.post("/wallets/{wallet_id}/close")
    async def close_wallet(wallet_id: str, body: ReasonIn, caller: Caller, shared: Shared) -> WalletOut:
        """Close the wallet for good."""
        return await _wallet_change(wallet_id, caller, shared, CloseWallet, body)


def _card_routes(router: APIRouter) -> None:  # noqa: C901 - one small handler per route
    @router.post("/wallets/{wallet_id}/cards", status_code=201)
    async def create_card(wallet_id: str, body: CardIn, caller: Caller, shared: Shared) -> CardOut:
        """Issue a card to the wallet (the issuer's token and last 4; never a card number).

        An agent key may request a funded card on its own wallet, up to what the wallet's caps leave.
        """
        if caller.scope == Scope.AGENT:
            _may_read(caller, wallet_id)
            await _within_wallet_caps(shared, wallet_id, body.funded_amount)
        else:
            _must_admin(caller)
        card_id = body.card_id or f"card_{uuid.uuid4().hex[:12]}"
        values = body.model_dump(exclude={"card_id"}, exclude_none=True)
        await shared.apply(CreateCard(**_fields(caller, wallet_id), card_id=card_id, **values))
        return _card_out(await shared.state(wallet_id), card_id, datetime.now(UTC))

    @router.get("/cards/{card_id}")
    async def get_card(card_id: str, caller: Caller, shared: Shared) -> CardOut:
        """A card and every cap that applies to it: limit, spent, held, remaining."""
        wallet_id = await shared.wallet_of_card(card_id)
        _may_read(caller, wallet_id)
        return _card_out(await shared.state(wallet_id), card_id, datetime.now(UTC))

    @router.post("/cards/{card_id}/authorize:dry-run")
    async def authorize_dry_run(card_id: str, body: DryRunIn, caller: Caller, shared: Shared) -> DryRunOut:
        """What the authorizer would decide now for this amount and merchant, with every cap as it
        stands: nothing is held and no decision is recorded (an agent choosing a provider within
        budget). Decided on the wallet as last committed: an authorization being decided this very
        moment may not be counted yet.
        """
        wallet_id = await shared.wallet_of_card(card_id)
        _may_read(caller, wallet_id)
        return dry_run(await shared.state(wallet_id), card_id, body, datetime.now(UTC), shared.rates)

    @router.put("/cards/{card_id}/caps")
    async def update_card_caps(card_id: str, body: CardCapsIn, caller: Caller, shared: Shared) -> CardOut:
        """Replace the card's own caps."""
        _must_admin(caller)
        wallet_id = await shared.wallet_of_card(card_id)
        await shared.apply(UpdateCaps(**_fields(caller, wallet_id), card_id=card_id, card_caps=body.caps))
        return _card_out(await shared.state(wallet_id), card_id, datetime.now(UTC))

    @router.post("/cards/{card_id}/freeze")
    async def freeze_card(card_id: str, body: ReasonIn, caller: Caller, shared: Shared) -> CardOut:
        """Freeze the card: every authorization on it after this is declined."""
        return await _card_change(card_id, caller, shared, FreezeCard, body)

    @router.post("/cards/{card_id}/unfreeze")
    async def unfreeze_card(card_id: str, body: ReasonIn, caller: Caller, shared: Shared) -> CardOut:
        """Unfreeze the card."""
        return await _card_change(card_id, caller, shared, UnfreezeCard, body)

    @router.post("/cards/{card_id}/close")
    async def close_card(card_id: str, body: ReasonIn, caller: Caller, shared: Shared) -> CardOut:
        """Close the card for good."""
        return await _card_change(card_id, caller, shared, CloseCard, body)

    @router.post("/wallets/{wallet_id}/traces")
    async def bind_trace(wallet_id: str, body: TraceIn, caller: Caller, shared: Shared) -> WalletOut:
        """Authorizations after this carry the trace id and count against its cap (agents may, on their wallet)."""
        if caller.scope == Scope.READ:
            raise HTTPException(403, {"error": "forbidden", "detail": "a read key cannot bind traces"})
        _may_read(caller, wallet_id)
        await shared.apply(BindTrace(**_fields(caller, wallet_id), **body.model_dump(exclude_none=True)))
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))

    @router.get("/cards/{card_id}/transactions")
    async def card_transactions(card_id: str, caller: Caller, shared: Shared, limit: int = 100) -> list[TransactionOut]:
        """The card's authorizations, newest first."""
        wallet_id = await shared.wallet_of_card(card_id)
        _may_read(caller, wallet_id)
        return await shared.transactions("card_id", card_id, wallet_id, min(max(limit, 1), 1_000))

    @router.get("/traces/{trace_id}/transactions")
    async def trace_transactions(
        trace_id: str, caller: Caller, shared: Shared, limit: int = 100
    ) -> list[TransactionOut]:
        """The trace's authorizations, newest first (an agent sees its own wallet's only)."""
        return await shared.transactions("trace_id", trace_id, caller.wallet_id, min(max(limit, 1), 1_000))


def _control_routes(router: APIRouter) -> None:
    """The spending controls beside caps: velocity limits, merchant countries, declines in a row."""

    @router.put("/wallets/{wallet_id}/velocity")
    async def set_velocity(wallet_id: str, body: VelocityIn, caller: Caller, shared: Shared) -> WalletOut:
        """Limit how many authorizations a card (or the whole wallet) may ask per rolling minute or
        hour, whatever their amounts: past it, each is declined `velocity_limit` (a runaway retry loop).
        """
        _must_admin(caller)
        await shared.apply(SetVelocityLimit(**_fields(caller, wallet_id), **body.model_dump()))
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))

    @router.put("/wallets/{wallet_id}/merchant-countries")
    async def set_merchant_countries(
        wallet_id: str, body: MerchantCountriesIn, caller: Caller, shared: Shared
    ) -> WalletOut:
        """Where a card (or every card) may buy, by the merchant's country: with an allow list only
        there (a merchant with no country is declined `merchant_country_not_allowed`), never where
        blocked (`merchant_country_blocked`). The wallet's rules and a card's own both apply.
        """
        _must_admin(caller)
        await shared.apply(SetMerchantCountries(**_fields(caller, wallet_id), **body.model_dump()))
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))

    @router.put("/wallets/{wallet_id}/decline-streak")
    async def set_decline_streak(wallet_id: str, body: DeclineStreakIn, caller: Caller, shared: Shared) -> WalletOut:
        """Freeze a card automatically after this many declined authorizations in a row on it (a
        runaway agent hammering a declined card); said in the wallet's Slack channel.
        """
        _must_admin(caller)
        await shared.apply(SetDeclineStreakLimit(**_fields(caller, wallet_id), **body.model_dump()))
        return _wallet_out(await shared.state(wallet_id), datetime.now(UTC))
