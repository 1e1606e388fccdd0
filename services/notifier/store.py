"""The notifier's Postgres: wallets it knows, approval requests and their state changes, the Slack
outbox, clicks, and the cost context read from the ledger's views.

Every state change of a request is one conditional UPDATE (`WHERE state = ...`): of two clicks, or a
click and its replay, exactly one wins, and the loser changes nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, time, timedelta
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import asyncpg

from services.notifier.messages import Context
from services.notifier.requests import Draft, WalletInfo

Connection: TypeAlias = asyncpg.Connection


async def save_wallet(connection: Connection, wallet: WalletInfo) -> None:
    """Insert or refresh what the notifier knows of a wallet."""
    await connection.execute(
        """INSERT INTO notifier.wallets VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (wallet_id) DO UPDATE SET label = $2, currency = $3, time_zone = $4, slack_channel = $5,
               approvers = $6, raise_step_minor = $7, max_raise_minor = $8""",
        wallet.wallet_id, wallet.label, wallet.currency, wallet.time_zone, wallet.slack_channel,
        list(wallet.approvers), wallet.raise_step_minor, wallet.max_raise_minor,
    )  # fmt: skip


async def save_card(connection: Connection, card_id: str, wallet_id: str, label: str, last4: str) -> None:
    """Remember a card's label and last 4 for the messages."""
    await connection.execute(
        "INSERT INTO notifier.cards VALUES ($1, $2, $3, $4) ON CONFLICT (card_id) DO NOTHING",
        card_id, wallet_id, label, last4,
    )  # fmt: skip


async def load_wallet(connection: Connection, wallet_id: str) -> WalletInfo | None:
    """The wallet as the notifier knows it, or None."""
    row = await connection.fetchrow("SELECT * FROM notifier.wallets WHERE wallet_id = $1", wallet_id)
    if row is None:
        return None
    return WalletInfo(
        row["wallet_id"], row["label"], row["currency"], row["time_zone"], row["slack_channel"],
        tuple(row["approvers"]), row["raise_step_minor"], row["max_raise_minor"],
    )  # fmt: skip


def window_start(window_key: str, time_zone: str) -> datetime:
    """When a window (a day "YYYY-MM-DD" or a month "YYYY-MM" in the wallet's zone) began."""
    zone = ZoneInfo(time_zone)
    month_only = window_key.count("-") == 1
    day = datetime.strptime(window_key + ("-01" if month_only else ""), "%Y-%m-%d").date()  # noqa: DTZ007 - a date
    return datetime.combine(day, time(), tzinfo=zone)


async def cost_context(connection: Connection, draft: Draft, wallet: WalletInfo | None) -> Context:
    """The message's context: the request, the card, and the window's top merchants and last
    transactions from the ledger's views (as far as the ledger has recorded them).
    """
    card = await connection.fetchrow("SELECT label, last4 FROM notifier.cards WHERE card_id = $1", draft.card_id)
    since = window_start(draft.window_key, wallet.time_zone if wallet is not None else "UTC")
    top = await connection.fetch(
        """SELECT coalesce(merchant_name, '?') AS name, sum(spent_minor) AS spent FROM ledger.movements
           WHERE wallet_id = $1 AND kind = 'money_moved' AND counted_at >= $2
           GROUP BY 1 HAVING sum(spent_minor) > 0 ORDER BY 2 DESC LIMIT 3""",
        draft.wallet_id, since,
    )  # fmt: skip
    recent = await connection.fetch(
        """SELECT decided_at, coalesce(merchant_name, '?') AS merchant,
                  coalesce(nullif(final_minor, 0), cap_amount_minor, 0) AS amount, status
           FROM ledger.transactions WHERE wallet_id = $1 AND decided_at IS NOT NULL
           ORDER BY decided_at DESC LIMIT 5""",
        draft.wallet_id,
    )  # fmt: skip
    return Context(
        request_id=str(draft.request_id),
        wallet_id=draft.wallet_id,
        wallet_label=wallet.label if wallet is not None else "",
        card_id=draft.card_id,
        card_label=card["label"] if card is not None else "",
        card_last4=card["last4"] if card is not None else "",
        trace_id=draft.trace_id,
        cap=draft.cap.value,
        window_key=draft.window_key,
        window_ends_at=draft.window_ends_at,
        currency=draft.currency,
        limit_minor=draft.limit_minor,
        used_minor=draft.used_minor,
        declined_minor=draft.declined_minor,
        merchant_name=draft.merchant_name,
        merchant_mcc=draft.merchant_mcc,
        raise_minor=draft.raise_minor,
        top_merchants=tuple((row["name"], int(row["spent"])) for row in top),
        recent=tuple((row["decided_at"], row["merchant"], int(row["amount"]), row["status"]) for row in recent),
    )


def context_json(context: Context) -> str:
    """A Context as stored in notifier.requests.context."""
    fields = context.__dict__ | {
        "window_ends_at": context.window_ends_at.isoformat(),
        "recent": [[at.isoformat(), merchant, minor, status] for at, merchant, minor, status in context.recent],
        "top_merchants": [list(pair) for pair in context.top_merchants],
    }
    return json.dumps(fields)


def context_from_json(raw: str) -> Context:
    """The Context a request was opened with."""
    fields: dict[str, Any] = json.loads(raw)
    fields["window_ends_at"] = datetime.fromisoformat(fields["window_ends_at"])
    fields["recent"] = tuple(
        (datetime.fromisoformat(at), merchant, minor, status) for at, merchant, minor, status in fields["recent"]
    )
    fields["top_merchants"] = tuple((name, minor) for name, minor in fields["top_merchants"])
    return Context(**fields)


async def fold_decline(connection: Connection, draft: Draft) -> bool:
    """Count a decline into the request already open (or denied) in its window; False when none is."""
    folded = await connection.fetchval(
        """UPDATE notifier.requests SET declines_seen = declines_seen + 1
           WHERE wallet_id = $1 AND cap = $2 AND scope_id = $3 AND window_key = $4
             AND state IN ('pending', 'approving', 'denied')
           RETURNING 1""",
        draft.wallet_id, draft.cap.value, draft.scope_id, draft.window_key,
    )  # fmt: skip
    return folded is not None


async def open_request(connection: Connection, draft: Draft, context: Context, ask: dict[str, Any]) -> bool:
    """Open the request and owe its Slack message; False when one is already open (or denied) in the
    window (opened meanwhile by another instance), whose count of declines goes up instead.
    """
    opened = await connection.fetchval(
        """INSERT INTO notifier.requests (request_id, wallet_id, cap, scope_id, window_key, window_ends_at, state,
               card_id, trace_id, issuer_authorization_id, declined_minor, currency, merchant_name, merchant_mcc,
               limit_minor, used_minor, raise_minor, channel, context)
           VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
           ON CONFLICT DO NOTHING RETURNING request_id""",
        draft.request_id, draft.wallet_id, draft.cap.value, draft.scope_id, draft.window_key, draft.window_ends_at,
        draft.card_id, draft.trace_id, draft.issuer_authorization_id, draft.declined_minor, draft.currency,
        draft.merchant_name, draft.merchant_mcc, draft.limit_minor, draft.used_minor, draft.raise_minor,
        draft.channel, context_json(context),
    )  # fmt: skip
    if opened is None:
        await fold_decline(connection, draft)
        return False
    await owe(connection, draft.request_id, "chat.postMessage", ask)
    return True


async def owe(connection: Connection, request_id: uuid.UUID, method: str, payload: dict[str, Any]) -> None:
    """Add a Slack call to the outbox (chat.update payloads are rendered at delivery, from the state)."""
    await connection.execute(
        "INSERT INTO notifier.slack_outbox (request_id, method, payload) VALUES ($1, $2, $3)",
        request_id, method, json.dumps(payload),
    )  # fmt: skip


async def owe_notice(connection: Connection, notice_id: uuid.UUID, payload: dict[str, Any]) -> bool:
    """Add a notice (a `chat.postMessage` of no request) to the outbox, once per `notice_id`; False
    when it was added before (a redelivered event).
    """
    added = await connection.fetchval(
        """INSERT INTO notifier.slack_outbox (notice_id, method, payload) VALUES ($1, 'chat.postMessage', $2)
           ON CONFLICT (notice_id) DO NOTHING RETURNING id""",
        notice_id, json.dumps(payload),
    )  # fmt: skip
    return added is not None


async def request(connection: Connection, request_id: uuid.UUID) -> asyncpg.Record | None:
    """One request row."""
    return await connection.fetchrow("SELECT * FROM notifier.requests WHERE request_id = $1", request_id)


async def transition(
    connection: Connection, request_id: uuid.UUID, from_states: tuple[str, ...], to_state: str, **fields: object
) -> asyncpg.Record | None:
    """Move a request from one of `from_states` to `to_state` (setting `fields`); None if it was not in one."""
    assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(fields, start=4))
    return await connection.fetchrow(
        f"""UPDATE notifier.requests SET state = $3{", " + assignments if assignments else ""}
            WHERE request_id = $1 AND state = ANY($2::text[]) RETURNING *""",  # noqa: S608 - names are ours
        request_id, list(from_states), to_state, *fields.values(),
    )  # fmt: skip


async def record_click(
    connection: Connection, request_id: uuid.UUID, user_id: str, action_ts: str, *, action: str, outcome: str
) -> bool:
    """Record a click once; False when this very click (same user, same action time) was seen before."""
    inserted = await connection.fetchval(
        """INSERT INTO notifier.clicks (request_id, user_id, action_ts, action, outcome) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT DO NOTHING RETURNING 1""",
        request_id, user_id, action_ts, action, outcome,
    )  # fmt: skip
    return inserted is not None


async def expire_due(connection: Connection, now: datetime) -> list[asyncpg.Record]:
    """Pending requests whose window ended become expired; their messages are owed an update."""
    rows = await connection.fetch(
        """UPDATE notifier.requests SET state = 'expired', decided_at = $1
           WHERE state = 'pending' AND window_ends_at <= $1 RETURNING *""",
        now,
    )
    for row in rows:
        await owe(connection, row["request_id"], "chat.update", {})
    return list(rows)


async def stuck_approvals(connection: Connection, older_than: datetime) -> list[asyncpg.Record]:
    """Approvals whose raise the authorizer has not confirmed yet (the command is sent again: same id)."""
    return list(
        await connection.fetch(
            "SELECT * FROM notifier.requests WHERE state = 'approving' AND decided_at <= $1", older_than
        )
    )


def ago(now: datetime, seconds: float) -> datetime:
    """`now` minus `seconds`."""
    return now - timedelta(seconds=seconds)
