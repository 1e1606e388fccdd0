"""Delivering the Slack outbox with slack_sdk's AsyncWebClient: 429 waits for Retry-After, timeouts
and 5xx back off exponentially, and nothing owed is dropped. Runs beside the consumer, never in it.

A row is marked delivered in the transaction that claimed it; a crash between Slack's answer and
that commit sends it again (at least once: a duplicate message is better than a lost request).
`chat.update` is rendered at delivery from the request's current state, so a late update never
shows an older state than an earlier one. A notice (a cap the issuer's money pushed over) is a
`chat.postMessage` of no request, sent as it was rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from services.notifier import messages
from services.notifier.metrics import SLACK_CALLS, SLACK_ERRORS
from services.notifier.store import context_from_json
from services.platform.logging import get_logger

BATCH = 20
MAX_BACKOFF_S = 300
_log = get_logger("notifier")


def backoff_s(attempts: int) -> float:
    """1, 2, 4, ... seconds after each failure, at most five minutes."""
    return float(min(MAX_BACKOFF_S, 2 ** max(0, attempts - 1)))


def web_client(token: str, base_url: str, timeout_s: float) -> AsyncWebClient:
    """A Web API client with slack_sdk's own retries off: the outbox retries, and remembers."""
    return AsyncWebClient(token=token, base_url=base_url, timeout=int(max(1, timeout_s)), retry_handlers=[])


def _payload(row: asyncpg.Record) -> dict[str, Any] | None:
    """What to send for an outbox row, or None when it must wait (its message is not posted yet)."""
    payload: dict[str, Any] = json.loads(row["payload"])
    if row["method"] == "chat.postMessage":
        return payload
    if row["message_ts"] is None and row["method"] == "chat.update":
        return None
    channel = row["message_channel"] or row["channel"]
    if row["method"] == "chat.postEphemeral":
        return payload | {"channel": channel}
    context = context_from_json(row["context"])
    text, blocks = messages.decided(context, row["state"], row["decided_by"], row["decided_at"], row["new_limit_minor"])
    return {"channel": channel, "ts": row["message_ts"], "text": text, "blocks": blocks}


async def deliver_due(pool: asyncpg.Pool, client: AsyncWebClient) -> int:
    """Send what is due now; returns how many rows were settled (delivered or rescheduled)."""
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            """SELECT o.id, o.method, o.payload, o.attempts, r.channel, r.message_channel, r.message_ts, r.state,
                      r.decided_by, r.decided_at, r.new_limit_minor, r.context, r.request_id
               FROM notifier.slack_outbox o LEFT JOIN notifier.requests r USING (request_id)
               WHERE o.delivered_at IS NULL AND o.next_attempt_at <= now()
               ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED""",
            BATCH,
        )
        for row in rows:
            payload = _payload(row)
            if payload is None:
                await connection.execute(
                    "UPDATE notifier.slack_outbox SET next_attempt_at = now() + interval '1 second' WHERE id = $1",
                    row["id"],
                )
                continue
            await _send(connection, client, row, payload)
    return len(rows)


async def _send(
    connection: asyncpg.Connection, client: AsyncWebClient, row: asyncpg.Record, payload: dict[str, Any]
) -> None:
    method, attempts = row["method"], row["attempts"] + 1
    wait_s: float | None = None
    try:
        response = await client.api_call(method, json=payload)
    except SlackApiError as error:
        status = error.response.status_code
        if status == 429:  # noqa: PLR2004 - HTTP Too Many Requests
            wait_s = float(error.response.headers.get("Retry-After", error.response.headers.get("retry-after", 1)))
            kind = "rate_limited"
        else:
            wait_s = backoff_s(attempts)
            kind = "server_error" if status >= 500 else f"api_error:{error.response.get('error', status)}"  # noqa: PLR2004
        detail = f"{status} {error.response.get('error', '')}".strip()
    except (TimeoutError, aiohttp.ClientError, SlackClientError) as error:
        wait_s, kind, detail = backoff_s(attempts), "unreachable", f"{type(error).__name__}: {error}"
    if wait_s is not None:
        SLACK_ERRORS.labels(kind).inc()
        SLACK_CALLS.labels(method, "retry").inc()
        await connection.execute(
            "UPDATE notifier.slack_outbox SET attempts = $2, last_error = $3, next_attempt_at = $4 WHERE id = $1",
            row["id"], attempts, detail[:500], datetime.now(UTC) + timedelta(seconds=wait_s),
        )  # fmt: skip
        _log.warning("slack_call_failed", method=method, attempts=attempts, retry_in_s=wait_s, error=detail[:300])
        return
    SLACK_CALLS.labels(method, "ok").inc()
    await connection.execute(
        "UPDATE notifier.slack_outbox SET attempts = $2, delivered_at = now(), last_error = NULL WHERE id = $1",
        row["id"], attempts,
    )  # fmt: skip
    if method == "chat.postMessage" and row["request_id"] is not None:  # a notice has no message to update
        await connection.execute(
            "UPDATE notifier.requests SET message_channel = $2, message_ts = $3 WHERE request_id = $1",
            row["request_id"], response.get("channel"), response.get("ts"),
        )  # fmt: skip


async def delivery_loop(pool: asyncpg.Pool, client: AsyncWebClient | None, wake: asyncio.Event) -> None:
    """Deliver until cancelled; woken when something is owed, else every half second."""
    if client is None:
        _log.warning("slack_not_configured", detail="PURSESTRINGS_SLACK_BOT_TOKEN unset: messages stay owed")
        await asyncio.Event().wait()
        return
    while True:
        try:
            settled = await deliver_due(pool, client)
        except (OSError, asyncpg.PostgresError) as error:
            _log.warning("slack_delivery_paused", error=str(error)[:300])
            settled = 0
        if settled == 0:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=0.5)
