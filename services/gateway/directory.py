"""Card token → (wallet, card), from the authorizer's `cards` table. A card's wallet never changes,
so a found card is cached for good; a missing one is asked again next time (it may be created).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from schemas.common import Issuer

MAX_CACHED_CARDS = 1_000_000


@dataclass(frozen=True)
class CardRef:
    """Where a card belongs."""

    wallet_id: str
    card_id: str


class CardDirectory:
    """Looks cards up by the issuer's token."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._known: dict[tuple[Issuer, str], CardRef] = {}

    async def find(self, issuer: Issuer, card_token: str) -> CardRef | None:
        """The card the issuer calls `card_token`, or None when we have no such card."""
        known = self._known.get((issuer, card_token))
        if known is not None:
            return known
        row = await self._pool.fetchrow(
            "SELECT wallet_id, card_id FROM authorizer.cards WHERE issuer = $1 AND issuer_card_token = $2",
            issuer.value, card_token,
        )  # fmt: skip
        if row is None:
            return None
        if len(self._known) >= MAX_CACHED_CARDS:
            self._known.clear()
        found = self._known[(issuer, card_token)] = CardRef(row["wallet_id"], row["card_id"])
        return found
