"""Issuer lifecycle contracts on `issuer.events`: what happened to money after (or without) a
decision. Written by the gateway; read by the authorizer and the ledger. Pure data.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self, get_args
from uuid import UUID

from pydantic import Field, model_validator

from schemas.common import Contract, Identifier, Issuer, Merchant, Timestamp
from schemas.money import Money


class _IssuerEvent(Contract):
    schema_version: Literal[1] = 1
    event_id: UUID
    wallet_id: Identifier
    card_id: Identifier
    issuer: Issuer
    occurred_at: Timestamp


class AuthorizationCleared(_IssuerEvent):
    """A capture: the hold becomes spend. `amount` may differ from the hold; the difference counts."""

    type: Literal["authorization_cleared"] = "authorization_cleared"
    issuer_authorization_id: Identifier
    issuer_transaction_id: Identifier
    amount: Money
    merchant_amount: Money | None = None
    final: bool = Field(default=True, description="False for one of several partial captures")


class AuthorizationReversed(_IssuerEvent):
    """The merchant released all or part of a hold; `amount` is what is released."""

    type: Literal["authorization_reversed"] = "authorization_reversed"
    issuer_authorization_id: Identifier
    amount: Money
    full: bool = Field(description="True when the whole remaining hold is released")


class AuthorizationExpired(_IssuerEvent):
    """A hold ends without clearing: the gateway's deadline passed, the issuer expired it, or it aged out."""

    type: Literal["authorization_expired"] = "authorization_expired"
    # Version 2 adds `amount`: what the request the gateway gave up on asked for, so that the expiry of
    # a request reusing an earlier one's id (another amount or card) does not release the earlier
    # one's hold (decision 0006).
    schema_version: Literal[1, 2] = 1  # type: ignore[assignment]  # a version 2 since 2026-11-24
    issuer_authorization_id: Identifier
    cause: Literal["gateway_deadline", "issuer_expired", "hold_timeout"]
    amount: Money | None = Field(default=None, description="the request's amount (version 2, gateway_deadline only)")

    @model_validator(mode="after")
    def _amount_in_version_2_at_our_deadline(self) -> Self:
        if self.amount is not None and (self.schema_version == 1 or self.cause != "gateway_deadline"):
            raise ValueError("amount is the gateway's deadline's (cause gateway_deadline) and needs schema_version 2")
        return self


class RefundPosted(_IssuerEvent):
    """Money returned to the card: spend goes down by `amount`."""

    type: Literal["refund_posted"] = "refund_posted"
    issuer_transaction_id: Identifier
    issuer_authorization_id: Identifier | None = None
    amount: Money
    merchant: Merchant | None = None


class AuthorizationApprovedByIssuer(_IssuerEvent):
    """The issuer approved this authorization whatever we answered, or without asking us (a network
    stand-in, a webhook that timed out with the issuer set to approve): `amount` is held at the
    issuer, so it is held here too, over a cap if need be (reported as a breach). Stripe says so in
    `issuing_authorization.created`; the gateway publishes it only when its own answer was not that
    approval (decision 0006).
    """

    type: Literal["authorization_approved_by_issuer"] = "authorization_approved_by_issuer"
    issuer_authorization_id: Identifier
    amount: Money
    merchant_amount: Money | None = None
    merchant: Merchant | None = None


class ForcePosted(_IssuerEvent):
    """Spend with no prior authorization (force capture, network stand-in): counted all the same."""

    type: Literal["force_posted"] = "force_posted"
    issuer_transaction_id: Identifier
    amount: Money
    merchant_amount: Money | None = None
    merchant: Merchant


AnyIssuerEvent = (
    AuthorizationCleared
    | AuthorizationReversed
    | AuthorizationExpired
    | RefundPosted
    | ForcePosted
    | AuthorizationApprovedByIssuer
)
IssuerEvent = Annotated[AnyIssuerEvent, Field(discriminator="type")]
# Each issuer event's contract by its `type`: the one list every reader of issuer.events goes by.
ISSUER_EVENT_TYPES: dict[str, type[AnyIssuerEvent]] = {
    event.model_fields["type"].default: event for event in get_args(AnyIssuerEvent)
}
