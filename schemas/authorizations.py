"""Authorization contracts: `auth.requests` (gateway → authorizer) and `auth.decisions` (authorizer →
gateway, ledger, notifier). Pure data.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import ConfigDict, Field, model_validator

from schemas.common import CapKind, CapStatus, Contract, Identifier, Issuer, Merchant, ReasonCode, Timestamp, TraceId
from schemas.money import Money


class AuthorizationRequested(Contract):
    """An issuer asks whether a card may be charged; the issuer's authorization id is the idempotency key."""

    type: Literal["authorization_requested"] = "authorization_requested"
    schema_version: Literal[1] = 1
    event_id: UUID
    wallet_id: Identifier
    card_id: Identifier
    issuer: Issuer
    issuer_authorization_id: Identifier
    amount: Money = Field(description="what the issuer asks to hold, in the card's billing currency")
    merchant_amount: Money = Field(description="the same amount in the merchant's currency")
    merchant: Merchant
    requested_at: Timestamp
    deadline_at: Timestamp = Field(description="after this the gateway has already answered decline")

    @model_validator(mode="after")
    def _deadline_after_request(self) -> AuthorizationRequested:
        if self.deadline_at < self.requested_at:
            raise ValueError("deadline_at is before requested_at")
        return self


class AuthorizationDecided(Contract):
    """The authorizer's answer: approved or not, the reason, the failed cap, and every cap's state."""

    type: Literal["authorization_decided"] = "authorization_decided"
    schema_version: Literal[1] = 1
    event_id: UUID
    request_event_id: UUID
    wallet_id: Identifier
    card_id: Identifier
    issuer: Issuer
    issuer_authorization_id: Identifier
    approved: bool
    reason: ReasonCode
    failed_cap: CapKind | None = None
    amount: Money = Field(description="as requested, in the card's billing currency")
    merchant_amount: Money | None = Field(default=None, description="as requested, in the merchant's currency")
    cap_amount: Money | None = Field(default=None, description="converted into the caps' currency; None when no rate")
    merchant: Merchant
    trace_id: TraceId | None = Field(default=None, description="the trace bound to the card or wallet at the time")
    caps: tuple[CapStatus, ...] = ()
    decided_at: Timestamp
    hold_expires_at: Timestamp | None = Field(default=None, description="approvals only: when the hold lapses")

    @model_validator(mode="after")
    def _reason_agrees_with_outcome(self) -> AuthorizationDecided:
        if self.approved != (self.reason == ReasonCode.APPROVED):
            raise ValueError(f"approved={self.approved} contradicts reason {self.reason.value!r}")
        if self.approved and self.hold_expires_at is None:
            raise ValueError("an approval must say when its hold expires")
        if self.approved and self.failed_cap is not None:
            raise ValueError("an approval has no failed cap")
        return self


class DecisionOutcome(Contract):
    """What the gateway reads of an `AuthorizationDecided` to answer the issuer: which request it
    answers (authorization, card, amount) and the outcome. Parsed from the decision's JSON with the
    rest skipped unread: a decision carries every cap's status (~40 amounts), which the gateway
    never looks at, and it reads every decision on `auth.decisions` (issue 20).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    issuer_authorization_id: Identifier
    card_id: Identifier
    amount: Money
    approved: bool
    reason: ReasonCode
