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
    """An issuer asks whether a card may be charged; the issuer's authorization id is the idempotency key.

    Version 2 (2026-12-05) is an incremental authorization: `increment_of` names the authorization
    whose hold grows by `amount` if approved (a hotel adding a night); its own id is the increment's.
    """

    type: Literal["authorization_requested"] = "authorization_requested"
    schema_version: Literal[1, 2] = 1
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
    increment_of: Identifier | None = Field(
        default=None, description="version 2: the authorization this one adds `amount` to (an increment)"
    )

    @model_validator(mode="after")
    def _deadline_after_request(self) -> AuthorizationRequested:
        # One validator for both rules: each Python validator is paid on every request (issue 20).
        if self.deadline_at < self.requested_at:
            raise ValueError("deadline_at is before requested_at")
        if (self.increment_of is not None) != (self.schema_version == 2):  # noqa: PLR2004 - the version
            raise ValueError("increment_of is version 2's, and version 2 is an increment: both or neither")
        if self.increment_of == self.issuer_authorization_id:
            raise ValueError("an increment has an id of its own, not the authorization's it adds to")
        return self


class AuthorizationDecided(Contract):
    """The authorizer's answer: approved or not, the reason, the failed cap, and every cap's state.

    Version 2 (2026-12-05) answers an increment: `increment_of` names the authorization whose hold
    grew by `amount` (`cap_amount` in the caps' currency) when approved.
    """

    type: Literal["authorization_decided"] = "authorization_decided"
    schema_version: Literal[1, 2] = 1
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
    increment_of: Identifier | None = Field(
        default=None, description="version 2: the authorization whose hold this increment grew, if approved"
    )

    @model_validator(mode="after")
    def _reason_agrees_with_outcome(self) -> AuthorizationDecided:
        if self.approved != (self.reason == ReasonCode.APPROVED):
            raise ValueError(f"approved={self.approved} contradicts reason {self.reason.value!r}")
        if self.approved and self.hold_expires_at is None:
            raise ValueError("an approval must say when its hold expires")
        if self.approved and self.failed_cap is not None:
            raise ValueError("an approval has no failed cap")
        if (self.increment_of is not None) != (self.schema_version == 2):  # noqa: PLR2004 - the version
            raise ValueError("increment_of is version 2's, and version 2 is an increment: both or neither")
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
