"""Building blocks shared by every contract: the frozen base, identifiers, merchants, caps, reasons.

Pure data; never does I/O.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.money import Money

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", examples=["wal_research_01"]),
]
# A trace is whatever the team's tracker calls a unit of work: "PR-4823", a task id, a URL path.
TraceId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", examples=["PR-4823"])]
Mcc = Annotated[str, Field(pattern=r"^[0-9]{4}$", description="ISO 18245 merchant category code")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Actor = Annotated[str, Field(min_length=1, max_length=128, description="who did it: a user, key or service")]
Reason = Annotated[str, Field(min_length=1, max_length=500, description="why, in the actor's words")]
Timestamp = AwareDatetime


class Contract(BaseModel):
    """Every event and command: immutable, unknown fields rejected, versioned by `schema_version`."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Issuer(StrEnum):
    """The issuer-processor shapes the gateway speaks."""

    STRIPE = "stripe"
    LITHIC = "lithic"
    GENERIC = "generic"


class Merchant(Contract):
    """The merchant as the card network describes it."""

    name: str = Field(max_length=200)
    mcc: Mcc
    network_id: str = Field(min_length=1, max_length=64)
    country: CountryCode | None = None
    city: str | None = Field(default=None, max_length=100)


class CapKind(StrEnum):
    """Every limit the authorizer enforces, in the order it checks them."""

    PER_AUTHORIZATION = "per_authorization"
    CARD_FUNDED = "card_funded"
    CARD_ROLLING_24H = "card_rolling_24h"
    CARD_WEEKLY = "card_weekly"
    CARD_MONTHLY = "card_monthly"
    CARD_YEARLY = "card_yearly"
    CARD_ALL_TIME = "card_all_time"
    TRACE = "trace"
    WALLET_ROLLING_24H = "wallet_rolling_24h"
    WALLET_WEEKLY = "wallet_weekly"
    WALLET_MONTHLY = "wallet_monthly"
    WALLET_YEARLY = "wallet_yearly"
    WALLET_ALL_TIME = "wallet_all_time"


class ReasonCode(StrEnum):
    """Why an authorization was approved or declined; the first failing check names it."""

    APPROVED = "approved"
    CARD_NOT_FOUND = "card_not_found"
    CARD_CLOSED = "card_closed"
    CARD_FROZEN = "card_frozen"
    CARD_EXPIRED = "card_expired"
    WALLET_FROZEN = "wallet_frozen"
    WALLET_CLOSED = "wallet_closed"
    MCC_NOT_ALLOWED = "mcc_not_allowed"
    MCC_BLOCKED = "mcc_blocked"
    MERCHANT_LOCKED = "merchant_locked"
    MERCHANT_COUNTRY_NOT_ALLOWED = "merchant_country_not_allowed"  # not on an allow list (or no country given)
    MERCHANT_COUNTRY_BLOCKED = "merchant_country_blocked"
    FX_RATE_MISSING = "fx_rate_missing"
    VELOCITY_LIMIT = "velocity_limit"  # more authorizations in a rolling minute or hour than allowed
    PER_AUTHORIZATION_CAP = "per_authorization_cap"
    CARD_FUNDS_INSUFFICIENT = "card_funds_insufficient"
    CARD_ROLLING_24H_CAP = "card_rolling_24h_cap"
    CARD_WEEKLY_CAP = "card_weekly_cap"
    CARD_MONTHLY_CAP = "card_monthly_cap"
    CARD_YEARLY_CAP = "card_yearly_cap"
    CARD_ALL_TIME_CAP = "card_all_time_cap"
    TRACE_CAP = "trace_cap"
    WALLET_ROLLING_24H_CAP = "wallet_rolling_24h_cap"
    WALLET_WEEKLY_CAP = "wallet_weekly_cap"
    WALLET_MONTHLY_CAP = "wallet_monthly_cap"
    WALLET_YEARLY_CAP = "wallet_yearly_cap"
    WALLET_ALL_TIME_CAP = "wallet_all_time_cap"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INCREMENT_NOT_SUPPORTED = "increment_not_supported"
    INVALID_REQUEST = "invalid_request"
    SYSTEM_UNAVAILABLE = "system_unavailable"


# The reasons that are caps being hit: the notifier asks a human only about these.
CAP_REASONS: dict[ReasonCode, CapKind] = {
    ReasonCode.PER_AUTHORIZATION_CAP: CapKind.PER_AUTHORIZATION,
    ReasonCode.CARD_FUNDS_INSUFFICIENT: CapKind.CARD_FUNDED,
    ReasonCode.CARD_ROLLING_24H_CAP: CapKind.CARD_ROLLING_24H,
    ReasonCode.CARD_WEEKLY_CAP: CapKind.CARD_WEEKLY,
    ReasonCode.CARD_MONTHLY_CAP: CapKind.CARD_MONTHLY,
    ReasonCode.CARD_YEARLY_CAP: CapKind.CARD_YEARLY,
    ReasonCode.CARD_ALL_TIME_CAP: CapKind.CARD_ALL_TIME,
    ReasonCode.TRACE_CAP: CapKind.TRACE,
    ReasonCode.WALLET_ROLLING_24H_CAP: CapKind.WALLET_ROLLING_24H,
    ReasonCode.WALLET_WEEKLY_CAP: CapKind.WALLET_WEEKLY,
    ReasonCode.WALLET_MONTHLY_CAP: CapKind.WALLET_MONTHLY,
    ReasonCode.WALLET_YEARLY_CAP: CapKind.WALLET_YEARLY,
    ReasonCode.WALLET_ALL_TIME_CAP: CapKind.WALLET_ALL_TIME,
}
# The caps of the whole wallet (every card's spend counts) and those of one card.
WALLET_CAPS = frozenset({
    CapKind.WALLET_ROLLING_24H, CapKind.WALLET_WEEKLY, CapKind.WALLET_MONTHLY, CapKind.WALLET_YEARLY,
    CapKind.WALLET_ALL_TIME,
})  # fmt: skip
CARD_CAPS = frozenset({
    CapKind.CARD_FUNDED, CapKind.CARD_ROLLING_24H, CapKind.CARD_WEEKLY, CapKind.CARD_MONTHLY, CapKind.CARD_YEARLY,
    CapKind.CARD_ALL_TIME,
})  # fmt: skip
# The calendar period of each cap that resets with one (in the wallet's time zone; weeks start on Monday).
CALENDAR_PERIODS: dict[CapKind, str] = {
    CapKind.CARD_WEEKLY: "week", CapKind.WALLET_WEEKLY: "week",
    CapKind.CARD_MONTHLY: "month", CapKind.WALLET_MONTHLY: "month",
    CapKind.CARD_YEARLY: "year", CapKind.WALLET_YEARLY: "year",
}  # fmt: skip


class CapStatus(Contract):
    """One applicable cap at the moment of a decision: its limit, what is spent and held, what remains."""

    cap: CapKind
    scope_id: str = Field(description="the wallet, card or trace the cap belongs to")
    limit: Money
    spent: Money
    held: Money
    remaining: Money = Field(description="limit - spent - held, never below zero")
    over_by: Money = Field(description="how far money the issuer moved without asking pushed it over")
    window_ends_at: datetime | None = Field(default=None, description="for a calendar week, month or year: its end")


EventId = UUID
