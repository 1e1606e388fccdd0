"""Topic names and the key rule; owns no I/O.

Every wallet-scoped message is keyed by its `wallet_id`, so all of one wallet's messages land on
one partition, in order, and are handled by one authorizer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

DEAD_LETTER_SUFFIX = ".dead-letter"


class Topic(StrEnum):
    """The topics of ARCHITECTURE.md."""

    AUTH_REQUESTS = "auth.requests"
    AUTH_DECISIONS = "auth.decisions"
    WALLET_COMMANDS = "wallet.commands"
    WALLET_EVENTS = "wallet.events"
    ISSUER_EVENTS = "issuer.events"


class WalletScoped(Protocol):
    """Anything carrying the wallet it belongs to."""

    @property
    def wallet_id(self) -> str:
        """The wallet the message belongs to."""
        ...


def topic_name(topic: Topic, prefix: str = "", *, dead_letter: bool = False) -> str:
    """The concrete topic name: an optional prefix (tests, tenants), the name, the dead-letter suffix."""
    name = f"{prefix}.{topic.value}" if prefix else topic.value
    return name + DEAD_LETTER_SUFFIX if dead_letter else name


def message_key(message: WalletScoped) -> bytes:
    """The Kafka key of a wallet-scoped message: its wallet id, UTF-8."""
    return message.wallet_id.encode("utf-8")
