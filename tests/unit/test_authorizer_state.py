"""The wallet state's bookkeeping shortcuts agree with the slow, obvious computation: the rolling
window's running sums, the bulk pruning of old decisions, `evolve`, the memoized months and the
hand-built event ids.
"""

from __future__ import annotations

import gc
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.common import CapKind
from schemas.policies import WalletCaps
from services.authorizer.decide import EVENT_NAMESPACE, derived_id, forget_old
from services.authorizer.state import (
    DECISION_PRUNE_EVERY,
    MEMORY_HORIZON,
    ROLLING_WINDOW,
    WalletState,
    hold_of,
    month_end,
    month_key,
    recall,
    spent_minor,
)
from tests.support.builders import CARD, NOW, WALLET, cleared, refund, request, run_on, usd, wallet


def _exact_rolling(state: WalletState, now_offset: timedelta) -> int:
    start = NOW + now_offset - ROLLING_WINDOW
    return max(0, sum(p.amount_minor for p in state.recent if p.at > start))


@pytest.mark.parametrize("hours_later", [0, 5, 23, 24, 25, 30, 49])
def test_the_rolling_sum_equals_the_sum_of_postings_inside_the_window(hours_later: int) -> None:
    """Spend at -20 h, -10 h, now (and a refund) → the running sum after pruning is the exact sum."""
    state = wallet(WalletCaps(rolling_24h=usd(100_000)))
    for hours, amount in ((-20, 1_000), (-10, 2_000), (0, 4_000)):
        auth = f"a{hours}"
        at = NOW + timedelta(hours=hours)
        _, state = run_on(state, request(amount, auth=auth, at=at, deadline_at=at + timedelta(hours=1)), at=at)
        _, state = run_on(state, cleared(auth, amount, at=at), at=at)
    _, state = run_on(state, refund(500, at=NOW, auth="a0"), at=NOW)
    later = timedelta(hours=hours_later)
    pruned = forget_old(state, NOW + later)
    fast = spent_minor(pruned, CapKind.WALLET_ROLLING_24H, WALLET, NOW + later)
    card = spent_minor(pruned, CapKind.CARD_ROLLING_24H, CARD, NOW + later)
    assert (fast, card) == (_exact_rolling(state, later), _exact_rolling(state, later))


def test_old_decisions_are_dropped_in_bulk_once_past_the_horizon() -> None:
    """A decision stays at least MEMORY_HORIZON, and is gone within DECISION_PRUNE_EVERY after it."""
    state = wallet(WalletCaps(rolling_24h=usd(100_000)))
    _, state = run_on(state, request(100, auth="old", deadline_at=NOW + timedelta(hours=1)))
    kept = forget_old(state, NOW + MEMORY_HORIZON - timedelta(minutes=1))
    gone = forget_old(state, NOW + MEMORY_HORIZON + DECISION_PRUNE_EVERY)
    assert ("old" in kept.decisions, "old" in gone.decisions) == (True, False)


def test_evolve_is_replace_and_refuses_unknown_fields() -> None:
    """The hot path's copy gives what dataclasses.replace gives; a misspelt field is an error."""
    state = wallet(WalletCaps(rolling_24h=usd(1_000)))
    assert state.evolve(label="research", status="frozen") == replace(state, label="research", status="frozen")
    with pytest.raises(TypeError, match="statuz"):
        state.evolve(statuz="frozen")


@given(st.lists(st.one_of(st.text(), st.integers(), st.sampled_from(list(CapKind))), min_size=1, max_size=4))
def test_derived_id_is_uuid5_of_the_parts(parts: list[object]) -> None:
    """The hand-built id is exactly uuid5 over the joined parts: ids published before stay the same."""
    expected = uuid.uuid5(EVENT_NAMESPACE, "|".join(str(part) for part in parts))
    made = derived_id(*parts)
    assert (made, str(made), made.version, made.variant, hash(made)) == (
        expected, str(expected), 5, uuid.RFC_4122, hash(expected)
    )  # fmt: skip


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC)),  # noqa: DTZ001 - hypothesis bounds are naive
    st.sampled_from(["UTC", "America/Santiago", "Asia/Kathmandu", "Europe/Amsterdam", "Pacific/Chatham"]),
)
def test_memoized_months_equal_the_computation(moment: datetime, time_zone: str) -> None:
    """month_key and month_end, memoized on the instant, answer what the conversion answers, also
    for the same instant given in another zone (equal instants share a cache entry).
    """
    local = moment.astimezone(ZoneInfo(time_zone))
    for asked in (moment, local):
        assert month_key(asked, time_zone) == f"{local.year:04d}-{local.month:02d}"
        assert month_end(asked, time_zone) > moment >= month_end(asked, time_zone) - timedelta(days=32)
        assert month_key(month_end(asked, time_zone), time_zone) != month_key(asked, time_zone)


def test_a_remembered_decision_and_an_open_hold_are_left_alone_by_the_garbage_collector() -> None:
    """What a wallet keeps per decision and per open hold are plain tuples of plain values: after
    one collection the collector no longer tracks them, so a full collection does not walk every
    one a busy cache keeps (a named tuple or a dataclass would stay tracked).
    """
    _, state = run_on(wallet(WalletCaps(rolling_24h=usd(1_000))), request(100, auth="kept"))
    remembered, row = state.decisions["kept"], state.holds["kept"]
    gc.collect()
    hold = hold_of(state, "kept")
    assert [type(remembered), type(row), gc.is_tracked(remembered), gc.is_tracked(row)] == [tuple, tuple, False, False]
    assert (recall(remembered).issuer_authorization_id, hold and hold.amount_minor) == ("kept", 100)
