"""Which declines become approval requests, for which cap and window, and what Approve raises.
Pure: no I/O.

A request is opened for a decline whose reason is a cap (`schemas.common.CAP_REASONS`), never for a
frozen card, a blocked merchant or a missing rate: those are not a human's "yes" away. Its window is
the calendar week, month or year (in the wallet's time zone) for weekly, monthly and yearly caps and
the wallet's day for every other cap, so an approval raises the cap "for the day" (or the period)
and at most one request is open per wallet, cap and window.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.authorizations import AuthorizationDecided
from schemas.common import CALENDAR_PERIODS, CAP_REASONS, CARD_CAPS, CapKind, CapStatus
from schemas.money import Money
from schemas.wallet import RaiseCap

REQUEST_NAMESPACE = uuid.UUID("6f0c8f0e-4a53-4d8e-9a43-0c5b7a1d2e91")


@dataclass(frozen=True)
class WalletInfo:
    """What the notifier knows of a wallet (from its `wallet_created` event)."""

    wallet_id: str
    label: str
    currency: str
    time_zone: str
    slack_channel: str | None
    approvers: tuple[str, ...]
    raise_step_minor: int
    max_raise_minor: int | None


@dataclass(frozen=True)
class Draft:
    """An approval request to open (or to fold into the open one of its window)."""

    request_id: uuid.UUID
    wallet_id: str
    cap: CapKind
    scope_id: str
    window_key: str
    window_ends_at: datetime
    card_id: str
    trace_id: str | None
    issuer_authorization_id: str
    declined_minor: int
    currency: str
    merchant_name: str
    merchant_mcc: str
    limit_minor: int
    used_minor: int
    raise_minor: int
    channel: str


def draft(decision: AuthorizationDecided, wallet: WalletInfo | None, default_channel: str) -> Draft | None:
    """The request a declined authorization opens, or None when no human should be asked."""
    cap = CAP_REASONS.get(decision.reason)
    if decision.approved or cap is None:
        return None
    status = _failed_status(decision, cap)
    if status is None:
        return None  # the decision names no limit to raise
    time_zone = wallet.time_zone if wallet is not None else "UTC"
    window_key, window_ends_at = window(cap, status, decision.decided_at, time_zone)
    amount = decision.cap_amount or decision.amount
    step = wallet.raise_step_minor if wallet is not None else 0
    return Draft(
        request_id=uuid.uuid5(REQUEST_NAMESPACE, f"{decision.wallet_id}|{cap}|{status.scope_id}|{window_key}|"
                                                 f"{decision.issuer_authorization_id}"),
        wallet_id=decision.wallet_id,
        cap=cap,
        scope_id=status.scope_id,
        window_key=window_key,
        window_ends_at=window_ends_at,
        card_id=decision.card_id,
        trace_id=decision.trace_id,
        issuer_authorization_id=decision.issuer_authorization_id,
        declined_minor=amount.amount_minor,
        currency=status.limit.currency,
        merchant_name=decision.merchant.name,
        merchant_mcc=decision.merchant.mcc,
        limit_minor=status.limit.amount_minor,
        used_minor=status.spent.amount_minor + status.held.amount_minor,
        raise_minor=step,
        channel=(wallet.slack_channel if wallet is not None else None) or default_channel,
    )  # fmt: skip


def _failed_status(decision: AuthorizationDecided, cap: CapKind) -> CapStatus | None:
    """The status of the cap that failed: of several with that kind, the one that could not fit it."""
    amount = (decision.cap_amount or decision.amount).amount_minor
    candidates = [status for status in decision.caps if status.cap == cap]
    short = [status for status in candidates if status.remaining.amount_minor < amount]
    chosen = short or candidates
    return chosen[0] if chosen else None


_PERIOD_KEYS = {"week": "%G-W%V", "month": "%Y-%m", "year": "%Y"}


def _period_end(local: datetime, period: str) -> datetime:
    """The first instant of the next calendar `period` after `local`, in `local`'s zone."""
    day = local.date()
    if period == "week":
        following = day + timedelta(days=7 - day.weekday())
    elif period == "month":
        following = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    else:
        following = day.replace(year=day.year + 1, month=1, day=1)
    return datetime.combine(following, time(), tzinfo=local.tzinfo)


def window(cap: CapKind, status: CapStatus | None, at: datetime, time_zone: str) -> tuple[str, datetime]:
    """The window a cap was hit in: its key and when it ends (UTC)."""
    zone = ZoneInfo(time_zone)
    local = at.astimezone(zone)
    period = CALENDAR_PERIODS.get(cap)
    if period is not None:
        key = local.strftime(_PERIOD_KEYS[period])
        if status is not None and status.window_ends_at is not None:
            return key, status.window_ends_at.astimezone(UTC)
        return key, _period_end(local, period).astimezone(UTC)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=zone)
    return local.strftime("%Y-%m-%d"), midnight.astimezone(UTC)


def raise_command(
    *,
    request_id: uuid.UUID,
    wallet_id: str,
    cap: CapKind,
    scope_id: str,
    card_id: str,
    raise_minor: int,
    currency: str,
    until: datetime,
    approver: str,
    issued_at: datetime,
) -> RaiseCap:
    """The command an approval sends; its id is the request's, so sending it twice applies it once."""
    on_card = cap in CARD_CAPS or (cap == CapKind.PER_AUTHORIZATION and scope_id != wallet_id)
    return RaiseCap(
        command_id=request_id,
        wallet_id=wallet_id,
        actor=approver,
        issued_at=issued_at,
        cap=cap,
        card_id=card_id if on_card or cap == CapKind.TRACE else None,
        trace_id=scope_id if cap == CapKind.TRACE else None,
        amount=Money.of(raise_minor, currency),
        until=until,
    )


def may_decide(wallet: WalletInfo | None, user_id: str, user_name: str | None) -> bool:
    """Only the wallet's listed approvers (by Slack user id or user name) may decide."""
    if wallet is None:
        return False
    return user_id in wallet.approvers or (user_name is not None and user_name in wallet.approvers)
