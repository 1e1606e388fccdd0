"""Which contracts travel on which topic, and how to parse and serialize them. Pure; no I/O.

A consumer calls `parse(topic, raw_bytes)`; anything that is not a valid message for that topic
raises `InvalidMessage` with the validation error, for the dead-letter record.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.issuer_events import AnyIssuerEvent, IssuerEvent
from schemas.topics import Topic
from schemas.wallet import AnyWalletCommand, AnyWalletEvent, WalletCommand, WalletEvent

# Any message on any topic: every one has a `type`, a `schema_version` and a `wallet_id`.
Message = AuthorizationRequested | AuthorizationDecided | AnyIssuerEvent | AnyWalletCommand | AnyWalletEvent

# One adapter per topic: a model, or a union discriminated by `type`.
TOPIC_MESSAGES: dict[Topic, Any] = {
    Topic.AUTH_REQUESTS: AuthorizationRequested,
    Topic.AUTH_DECISIONS: AuthorizationDecided,
    Topic.WALLET_COMMANDS: WalletCommand,
    Topic.WALLET_EVENTS: WalletEvent,
    Topic.ISSUER_EVENTS: IssuerEvent,
}
_ADAPTERS: dict[Topic, TypeAdapter[Any]] = {topic: TypeAdapter(kind) for topic, kind in TOPIC_MESSAGES.items()}


class InvalidMessage(ValueError):
    """Bytes that are not a valid message for their topic; `errors` says why, field by field."""

    def __init__(self, topic: Topic, error: ValidationError | str) -> None:
        self.topic = topic
        if isinstance(error, str):
            self.errors: list[Any] = [{"msg": error}]
        else:
            self.errors = list(error.errors(include_url=False, include_input=False))
        super().__init__(f"invalid {topic.value} message: {error}")

    @classmethod
    def because(cls, topic: Topic, reason: str) -> InvalidMessage:
        """A message that parsed but breaks a rule of its topic (its key, say)."""
        return cls(topic, reason)


def parse(topic: Topic, raw: bytes | str) -> Message:
    """The contract the JSON `raw` encodes, validated for `topic`."""
    try:
        message: Message = _ADAPTERS[topic].validate_json(raw)
    except ValidationError as error:
        raise InvalidMessage(topic, error) from error
    return message


def serialize(message: BaseModel) -> bytes:
    """The JSON bytes of a contract, as they travel on Kafka."""
    return message.model_dump_json().encode("utf-8")


def json_schema(topic: Topic) -> dict[str, Any]:
    """The JSON Schema of everything `topic` may carry."""
    schema: dict[str, Any] = _ADAPTERS[topic].json_schema(mode="serialization")
    return schema
