"""What a card can spend next: the largest amount the next authorization on it would be approved for.

Pure, beside `decide`, from the same cap checks: what `pursestrings balance`, the API's card
(`spendable`) and the MCP server's `check_balance` tell an agent before it buys. The agent plans
with this number, so it must be the one the authorizer would apply: the least any cumulative cap
leaves (funded amount; card and wallet rolling 24 h, week, month, year and all time; the bound
trace), 0 when the card or wallet declines everything. A per-authorization cap is a limit per
call, not a budget: it is given apart, and does not lower what is left.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from schemas.common import CapKind, ReasonCode
from services.authorizer.decide import CapCheck, applicable_caps, card_standing, forget_old
from services.authorizer.lifecycle import expire_holds
from services.authorizer.state import WalletState, bound_trace


class Spendable(NamedTuple):
    """What the next authorization on a card can get, and which caps say so."""

    # The most it can be approved for under every cumulative cap (minor units of the wallet's
    # currency); 0 when `blocked`; None when no cumulative cap applies.
    amount_minor: int | None
    # The cumulative cap that leaves the least (the first in check order on a tie: the one a
    # decision one cent above `amount_minor` would name); None when none applies.
    binding: CapCheck | None
    # The tightest per-authorization cap, if any: at most this per call, whatever is left.
    per_authorization: CapCheck | None
    # Why every authorization is declined now (card frozen, closed, expired; wallet frozen...).
    blocked: ReasonCode | None
    # Every cap that applies, in check order, as the decision would report them.
    caps: tuple[CapCheck, ...]


def remaining_minor(check: CapCheck) -> int:
    """What a cap leaves for further authorizations (never below zero)."""
    return max(0, check.limit_minor - check.spent_minor - check.held_minor)


def spendable(state: WalletState, card_id: str, now: datetime) -> Spendable:
    """What the next authorization on `card_id` can get at `now`, on `state` as the next decision
    would see it (holds past their expiry released, postings out of the window forgotten).
    """
    _, state = expire_holds(forget_old(state, now), now)
    blocked = card_standing(state, card_id, now)
    if blocked == ReasonCode.CARD_NOT_FOUND:
        return Spendable(0, None, None, blocked, ())
    caps = tuple(applicable_caps(state, card_id, bound_trace(state, card_id), now))
    budgets = [check for check in caps if check.cap != CapKind.PER_AUTHORIZATION]
    per_call = [check for check in caps if check.cap == CapKind.PER_AUTHORIZATION]
    binding = min(budgets, key=remaining_minor, default=None)  # min keeps the first of equals
    per_authorization = min(per_call, key=lambda check: check.limit_minor, default=None)
    amount = None if binding is None else remaining_minor(binding)
    if blocked is not None:
        amount = 0
    return Spendable(amount, binding, per_authorization, blocked, caps)
