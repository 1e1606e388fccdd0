"""The gateway's card directory: a found card is cached for good, a missing one asked again, and
the cache is made of values the garbage collector leaves alone (a gateway may cache a million).
"""

from __future__ import annotations

import gc
from typing import Any

from schemas.common import Issuer
from services.gateway.directory import CardDirectory, CardRef


class _Cards:
    """Stands in for the pool: answers the one query the directory makes, and counts it."""

    def __init__(self, rows: dict[tuple[str, str], dict[str, str]]) -> None:
        self.rows, self.asked = rows, 0

    async def fetchrow(self, _query: str, issuer: str, token: str) -> dict[str, str] | None:
        self.asked += 1
        return self.rows.get((issuer, token))


async def test_a_found_card_is_cached_and_a_missing_one_asked_again() -> None:
    """Three finds of a known card ask once; a card we do not have is asked every time."""
    cards = _Cards({("stripe", "ic_1"): {"wallet_id": "w1", "card_id": "c1"}})
    directory = CardDirectory(cards)
    found = [await directory.find(Issuer.STRIPE, "ic_1") for _ in range(3)]
    missing = [await directory.find(Issuer.STRIPE, "ic_2") for _ in range(2)]
    assert (found, missing, cards.asked) == ([CardRef("w1", "c1")] * 3, [None, None], 1 + 2)


async def test_cached_cards_are_not_tracked_by_the_garbage_collector() -> None:
    """After a collection, neither the key nor the value of a cached card is tracked any more."""
    cards = _Cards({("lithic", "tok"): {"wallet_id": "w1", "card_id": "c1"}})
    directory = CardDirectory(cards)
    await directory.find(Issuer.LITHIC, "tok")
    gc.collect()
    entries: list[Any] = [item for entry in directory._known.items() for item in entry]  # noqa: SLF001
    assert [gc.is_tracked(item) for item in entries] == [False, False]
