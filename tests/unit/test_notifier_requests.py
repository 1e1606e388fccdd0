"""Which declines ask a human, in which window, what Approve sends, and what the message says."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind, CapStatus, Issuer, ReasonCode
from schemas.money import Money
from services.notifier import messages
from services.notifier.requests import WalletInfo, draft, may_decide, raise_command, window
from tests.support.samples import MERCHANT, usd

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)
WALLET = WalletInfo("wal_1", "research agent", "USD", "Europe/Paris", "#agents", ("U1",), 500, 3_000)


def _status(cap: CapKind, scope_id: str, limit: int, used: int) -> CapStatus:
    return CapStatus(
        cap=cap, scope_id=scope_id, limit=usd(limit), spent=usd(used), held=usd(0),
        remaining=usd(max(0, limit - used)), over_by=usd(0),
    )  # fmt: skip


def _decline(reason: ReasonCode, cap: CapKind | None, *statuses: CapStatus, amount: int = 600) -> AuthorizationDecided:
    return AuthorizationDecided(
        event_id=uuid.uuid4(), request_event_id=uuid.uuid4(), wallet_id="wal_1", card_id="card_1",
        issuer=Issuer.STRIPE, issuer_authorization_id="iauth_1", approved=False, reason=reason, failed_cap=cap,
        amount=usd(amount), cap_amount=usd(amount), merchant=MERCHANT, trace_id="PR-1", caps=statuses, decided_at=AT,
    )  # fmt: skip


def test_a_cap_decline_opens_a_request_for_the_wallets_day() -> None:
    """22:30 UTC is 23:30 in Paris: the window is that Paris day, ending at Paris midnight."""
    decision = _decline(
        ReasonCode.WALLET_ROLLING_24H_CAP,
        CapKind.WALLET_ROLLING_24H,
        _status(CapKind.WALLET_ROLLING_24H, "wal_1", 1_000, 600),
    )
    proposed = draft(decision, WALLET, "#default")
    assert proposed is not None
    assert (proposed.window_key, proposed.window_ends_at) == ("2026-11-23", datetime(2026, 11, 23, 23, tzinfo=UTC))
    assert (proposed.limit_minor, proposed.used_minor, proposed.raise_minor, proposed.channel) == (
        1_000, 600, 500, "#agents"
    )  # fmt: skip


@pytest.mark.parametrize(
    "reason",
    [ReasonCode.CARD_FROZEN, ReasonCode.MCC_BLOCKED, ReasonCode.MERCHANT_LOCKED, ReasonCode.FX_RATE_MISSING],
)
def test_declines_that_are_not_caps_ask_nobody(reason: ReasonCode) -> None:
    """A frozen card or a bad merchant is not a human's "yes" away."""
    assert draft(_decline(reason, None), WALLET, "#default") is None


def test_the_cap_that_could_not_fit_the_amount_is_the_one_asked_about() -> None:
    """Per-authorization caps on the card and the wallet: the one below the amount is named."""
    decision = _decline(
        ReasonCode.PER_AUTHORIZATION_CAP,
        CapKind.PER_AUTHORIZATION,
        _status(CapKind.PER_AUTHORIZATION, "card_1", 1_000, 0),
        _status(CapKind.PER_AUTHORIZATION, "wal_1", 500, 0),
    )
    proposed = draft(decision, None, "#default")
    assert proposed is not None
    assert (proposed.scope_id, proposed.channel, proposed.raise_minor) == ("wal_1", "#default", 0)


def test_monthly_windows_end_with_the_month_in_the_wallets_zone() -> None:
    """1 December 00:00 in Paris is 23:00 UTC on 30 November."""
    assert window(CapKind.WALLET_MONTHLY, None, AT, "Europe/Paris") == (
        "2026-11", datetime(2026, 11, 30, 23, tzinfo=UTC)
    )  # fmt: skip
    assert window(CapKind.CARD_ROLLING_24H, None, AT, "America/New_York") == (
        "2026-11-23", datetime(2026, 11, 24, 5, tzinfo=UTC)
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cap", "scope_id", "card_id", "trace_id"),
    [
        (CapKind.WALLET_ROLLING_24H, "wal_1", None, None),
        (CapKind.PER_AUTHORIZATION, "wal_1", None, None),
        (CapKind.PER_AUTHORIZATION, "card_1", "card_1", None),
        (CapKind.CARD_MONTHLY, "card_1", "card_1", None),
        (CapKind.TRACE, "PR-1", "card_1", "PR-1"),
    ],
)
def test_approve_raises_the_cap_of_its_scope(
    cap: CapKind, scope_id: str, card_id: str | None, trace_id: str | None
) -> None:
    """The command names the card or trace the cap belongs to; its id is the request's."""
    request_id = uuid.uuid4()
    command = raise_command(
        request_id=request_id, wallet_id="wal_1", cap=cap, scope_id=scope_id, card_id="card_1", raise_minor=500,
        currency="USD", until=AT + timedelta(hours=1), approver="U1", issued_at=AT,
    )  # fmt: skip
    assert (command.command_id, command.card_id, command.trace_id, command.amount) == (
        request_id, card_id, trace_id, Money.of(500, "USD")
    )  # fmt: skip


def test_only_listed_approvers_decide() -> None:
    """By Slack user id or user name; an unknown wallet has no approvers."""
    assert may_decide(WALLET, "U1", None)
    assert may_decide(WALLET, "U9", "U1")
    assert not may_decide(WALLET, "U2", "someone")
    assert not may_decide(None, "U1", None)


def test_the_decided_message_says_who_when_and_the_new_limit_without_buttons() -> None:
    """Approved: who, when, the new limit and until when; the buttons are gone."""
    context = messages.Context(
        request_id="r1", wallet_id="wal_1", wallet_label="research agent", card_id="card_1", card_label="",
        card_last4="4242", trace_id=None, cap="wallet_rolling_24h", window_key="2026-11-23",
        window_ends_at=datetime(2026, 11, 23, 23, tzinfo=UTC), currency="USD", limit_minor=1_000, used_minor=600,
        declined_minor=600, merchant_name="Anthropic", merchant_mcc="5734", raise_minor=500,
        top_merchants=(("Anthropic", 600),), recent=((AT, "Anthropic", 600, "held"),),
    )  # fmt: skip
    _, asked = messages.ask(context)
    assert [b["type"] for b in asked] == ["header", "section", "section", "section", "actions", "context"]
    text, blocks = messages.decided(context, "approved", "U1", AT, 1_500)
    assert text == (
        ":white_check_mark: Approved by <@U1> at 2026-11-23 22:30 UTC: "
        "the limit is now $15.00 until 2026-11-23 23:00 UTC"
    )
    assert "actions" not in [b["type"] for b in blocks]
