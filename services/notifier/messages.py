"""The Slack messages (Block Kit) of an approval request: the ask, with its cost context and the
Approve / Deny buttons, and the same message once decided. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.client import money_text

APPROVE, DENY = "approve", "deny"
_CAP_NAMES = {
    "per_authorization": "per-authorization cap",
    "card_funded": "card's funded amount",
    "card_rolling_24h": "card's rolling 24 h cap",
    "card_weekly": "card's weekly cap",
    "card_monthly": "card's monthly cap",
    "card_yearly": "card's yearly cap",
    "card_all_time": "card's all-time cap",
    "trace": "trace cap",
    "wallet_rolling_24h": "rolling 24 h cap",
    "wallet_weekly": "weekly cap",
    "wallet_monthly": "monthly cap",
    "wallet_yearly": "yearly cap",
    "wallet_all_time": "all-time cap",
}


@dataclass(frozen=True)
class Context:
    """Everything the message shows; read from the request, the wallet, and the ledger's views."""

    request_id: str
    wallet_id: str
    wallet_label: str
    card_id: str
    card_label: str
    card_last4: str
    trace_id: str | None
    cap: str
    window_key: str
    window_ends_at: datetime
    currency: str
    limit_minor: int
    used_minor: int
    declined_minor: int
    merchant_name: str
    merchant_mcc: str
    raise_minor: int
    top_merchants: tuple[tuple[str, int], ...] = ()
    recent: tuple[tuple[datetime, str, int, str], ...] = ()  # at, merchant, amount, status


def _money(minor: int, currency: str) -> str:
    sign = "-" if minor < 0 else ""
    return sign + money_text({"amount_minor": abs(minor), "currency": currency})


def _confirm(title: str, text: str, confirm: str) -> dict[str, Any]:
    return {
        "title": {"type": "plain_text", "text": title},
        "text": {"type": "mrkdwn", "text": text},
        "confirm": {"type": "plain_text", "text": confirm},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }


def _context_blocks(c: Context) -> list[dict[str, Any]]:
    agent = c.wallet_label or c.wallet_id
    card = f"{c.card_label or c.card_id} ••{c.card_last4}" if c.card_last4 else c.card_label or c.card_id
    cap_name = _CAP_NAMES.get(c.cap, c.cap)
    fields = [
        f"*Agent*\n{agent} (`{c.wallet_id}`)",
        f"*Card*\n{card}",
        f"*Trace*\n{c.trace_id or '—'}",
        f"*Cap*\n{cap_name}, window {c.window_key}",
        f"*Used*\n{_money(c.used_minor, c.currency)} of {_money(c.limit_minor, c.currency)}",
        f"*Declined*\n{_money(c.declined_minor, c.currency)} at {c.merchant_name} (MCC {c.merchant_mcc})",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{agent} hit its {cap_name}"[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    if c.top_merchants:
        lines = "\n".join(f"• {name}: {_money(minor, c.currency)}" for name, minor in c.top_merchants)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Top merchants this window*\n{lines}"}})
    if c.recent:
        lines = "\n".join(
            f"• {at:%Y-%m-%d %H:%M} {merchant}: {_money(minor, c.currency)} ({status})"
            for at, merchant, minor, status in c.recent
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Last transactions*\n{lines}"}})
    return blocks


def ask(c: Context) -> tuple[str, list[dict[str, Any]]]:
    """The approval request: fallback text and blocks with Approve / Deny (each with a confirm dialog)."""
    raised = _money(c.limit_minor + c.raise_minor, c.currency)
    until = f"{c.window_ends_at:%Y-%m-%d %H:%M} UTC"
    text = (
        f"{c.wallet_label or c.wallet_id} hit its {_CAP_NAMES.get(c.cap, c.cap)}: "
        f"{_money(c.declined_minor, c.currency)} at {c.merchant_name} declined. Approve raising it to {raised}?"
    )
    actions = {
        "type": "actions",
        "block_id": "approval",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "style": "primary",
                "value": c.request_id,
                "text": {"type": "plain_text", "text": f"Approve +{_money(c.raise_minor, c.currency)}"},
                "confirm": _confirm("Raise the cap?", f"The limit becomes *{raised}* until {until}.", "Approve"),
            },
            {
                "type": "button",
                "action_id": DENY,
                "style": "danger",
                "value": c.request_id,
                "text": {"type": "plain_text", "text": "Deny"},
                "confirm": _confirm("Deny?", "The cap stays as it is; the agent keeps being declined.", "Deny"),
            },
        ],
    }
    footer = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"request `{c.request_id}`"}]}
    return text, [*_context_blocks(c), actions, footer]


def decided(
    c: Context, outcome: str, by: str | None, at: datetime | None, new_limit_minor: int | None
) -> tuple[str, list[dict[str, Any]]]:
    """The same message once decided: no buttons, and who decided, when, and the new limit."""
    when = f"{at:%Y-%m-%d %H:%M} UTC" if at is not None else ""
    who = f"<@{by}>" if by else "nobody"
    line = {
        "approved": f":white_check_mark: Approved by {who} at {when}: the limit is now "
        f"*{_money(new_limit_minor or 0, c.currency)}* until {c.window_ends_at:%Y-%m-%d %H:%M} UTC",
        "denied": f":no_entry: Denied by {who} at {when}",
        "expired": f":hourglass: Expired: nobody decided before the window ended ({when})",
        "rejected": f":warning: Approved by {who}, but the raise was refused by the authorizer at {when}",
    }[outcome]
    footer = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"request `{c.request_id}`"}]}
    return line.replace("*", ""), [*_context_blocks(c), {"type": "section", "text": {"type": "mrkdwn", "text": line}},
                                   footer]  # fmt: skip


@dataclass(frozen=True)
class Breach:
    """A cap that money the issuer moved without our approval pushed over its limit."""

    wallet_id: str
    wallet_label: str
    cap: str
    scope_id: str
    currency: str
    used_minor: int
    limit_minor: int
    over_minor: int
    moved_by: str  # the issuer's transaction (or authorization) id


_BREACH_WHY = (
    ":warning: The issuer moved this money without asking us (a force capture, a network stand-in, or an "
    "increment approved without us), so no cap could decline it. Later purchases are declined until there "
    "is room again."
)


def breached(b: Breach) -> tuple[str, list[dict[str, Any]]]:
    """A notice, not a request: nothing to approve, the money has moved; someone should look at the agent."""
    agent = b.wallet_label or b.wallet_id
    cap_name = _CAP_NAMES.get(b.cap, b.cap)
    used, limit, over = (_money(minor, b.currency) for minor in (b.used_minor, b.limit_minor, b.over_minor))
    text = (
        f"{agent} is over its {cap_name}: the issuer let money through without asking us. "
        f"{used} of {limit} used, {over} over."
    )
    fields = [
        f"*Agent*\n{agent} (`{b.wallet_id}`)",
        f"*Cap*\n{cap_name} (`{b.scope_id}`)",
        f"*Used*\n{used} of {limit}",
        f"*Over by*\n{over}",
    ]
    return text, [
        {"type": "header", "text": {"type": "plain_text", "text": f"{agent} is over its {cap_name}"[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": field} for field in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _BREACH_WHY}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"issuer's id `{b.moved_by}`"}]},
    ]


def frozen_automatically(agent: str, wallet_id: str, card_id: str, why: str) -> tuple[str, list[dict[str, Any]]]:
    """A notice: the authorizer froze a card by itself (an agent hammering a declined card); a
    person unfreezes it (`pursestrings cards unfreeze`) once the agent is looked at.
    """
    text = f"{agent}'s card {card_id} was frozen automatically: {why}."
    return text, [
        {"type": "header", "text": {"type": "plain_text", "text": f"{agent}'s card {card_id} is frozen"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f":no_entry: {why}. Every authorization on it is "
                                                                  "declined until someone unfreezes it."}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"`{wallet_id}` · `pursestrings cards unfreeze "
                                                                      f"{card_id} --reason ...`"}]},
    ]  # fmt: skip
