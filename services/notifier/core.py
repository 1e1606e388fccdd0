"""The notifier's work: cap declines (auth.decisions) become approval requests; wallet.events keep
its wallets current and confirm raises; clicks decide; a sweep expires requests whose window ended
and re-sends approvals the authorizer has not confirmed.

Consumption is at least once with idempotent effects (a request's id derives from its decline; a
raise's command id is its request's id), committed to Kafka after each batch's transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from schemas.authorizations import AuthorizationDecided
from schemas.common import CapKind
from schemas.registry import serialize
from schemas.topics import Topic, topic_name
from schemas.wallet import (
    CapBreachedByIssuer,
    CapRaised,
    CardCreated,
    CommandRejected,
    RaiseCap,
    StatusChanged,
    WalletCreated,
)
from services.notifier import messages, store
from services.notifier.metrics import (
    BREACHES_NOTICED,
    CLICKS,
    DECIDED,
    DECLINES_FOLDED,
    REQUESTS_OPENED,
    TIME_TO_DECISION,
)
from services.notifier.requests import WalletInfo, draft, may_decide, raise_command
from services.platform.consuming import IdempotentConsumer, Record
from services.platform.logging import get_logger
from services.platform.settings import Settings

INPUT_TOPICS = (Topic.WALLET_EVENTS, Topic.AUTH_DECISIONS)
BATCH_MAX_RECORDS = 500
RESEND_APPROVALS_AFTER_S = 15
SWEEP_INTERVAL_S = 5
_log = get_logger("notifier")


@dataclass(frozen=True)
class Click:
    """One button press, as Slack sent it (after its signature was verified)."""

    request_id: uuid.UUID
    action: str
    user_id: str
    user_name: str | None
    action_ts: str


class Notifier:
    """One notifier instance: a member of the `notifier` group, a producer for raises, a pool."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self._kafka = IdempotentConsumer(settings, "notifier", INPUT_TOPICS, BATCH_MAX_RECORDS)
        self.owed = asyncio.Event()  # set when a Slack call was added to the outbox

    async def start(self) -> None:
        """Start the producer and join the group."""
        await self._kafka.start()

    async def stop(self) -> None:
        """Leave the group and stop the producer."""
        await self._kafka.stop()

    # ───────────────────────────── consuming ─────────────────────────────

    async def run(self) -> None:
        """Consume until cancelled."""
        await self._kafka.run(self.handle)

    async def handle(self, records: Sequence[Record]) -> None:
        """One batch in one transaction; wallet events first, so a wallet created in the batch is known."""
        parsed = [found[1] for record in records if (found := await self._kafka.parse(record)) is not None]
        parsed.sort(key=lambda message: 0 if not isinstance(message, AuthorizationDecided) else 1)
        owed = False
        async with self._pool.acquire() as connection, connection.transaction():
            for message in parsed:
                owed = await self._apply(connection, message) or owed
        if owed:
            self.owed.set()

    async def _apply(self, connection: store.Connection, message: object) -> bool:
        """Apply one message; True when a Slack call became owed."""
        if isinstance(message, WalletCreated):
            await store.save_wallet(connection, _wallet_info(message))
        elif isinstance(message, CardCreated):
            await store.save_card(connection, message.card_id, message.wallet_id, message.label, message.last4)
        elif isinstance(message, CapRaised) and message.command_id is not None:
            return await self._confirmed(connection, message.command_id, "approved", message.new_limit.amount_minor)
        elif isinstance(message, CommandRejected) and message.command_id is not None:
            return await self._confirmed(connection, message.command_id, "rejected", None, message.error)
        elif isinstance(message, AuthorizationDecided) and not message.approved:
            return await self._declined(connection, message)
        elif isinstance(message, CapBreachedByIssuer):
            return await self._breached(connection, message)
        elif isinstance(message, StatusChanged) and message.command_id is None and message.card_id is not None:
            return await self._frozen_automatically(connection, message)
        return False

    async def _frozen_automatically(self, connection: store.Connection, changed: StatusChanged) -> bool:
        """Say in the wallet's channel that the authorizer froze a card by itself (declines in a row)."""
        wallet = await store.load_wallet(connection, changed.wallet_id)
        channel = (wallet.slack_channel if wallet is not None else None) or self._settings.slack_default_channel
        agent = (wallet.label if wallet is not None else "") or changed.wallet_id
        text, blocks = messages.frozen_automatically(agent, changed.wallet_id, changed.card_id or "", changed.reason)
        owed = await store.owe_notice(
            connection, changed.event_id, {"channel": channel, "text": text, "blocks": blocks}
        )
        if owed:
            _log.info("card_freeze_noticed", wallet_id=changed.wallet_id, card_id=changed.card_id)
        return owed

    async def _breached(self, connection: store.Connection, breach: CapBreachedByIssuer) -> bool:
        """Say in the wallet's channel that money the issuer moved without us pushed a cap over."""
        wallet = await store.load_wallet(connection, breach.wallet_id)
        channel = (wallet.slack_channel if wallet is not None else None) or self._settings.slack_default_channel
        text, blocks = messages.breached(
            messages.Breach(
                wallet_id=breach.wallet_id,
                wallet_label=wallet.label if wallet is not None else "",
                cap=breach.cap.value,
                scope_id=breach.scope_id,
                currency=breach.limit.currency,
                used_minor=breach.spent.amount_minor,
                limit_minor=breach.limit.amount_minor,
                over_minor=breach.over_by.amount_minor,
                moved_by=breach.issuer_transaction_id,
            )
        )
        owed = await store.owe_notice(connection, breach.event_id, {"channel": channel, "text": text, "blocks": blocks})
        if owed:
            BREACHES_NOTICED.inc()
            _log.info("breach_noticed", wallet_id=breach.wallet_id, cap=breach.cap.value, scope_id=breach.scope_id,
                      over_by_minor=breach.over_by.amount_minor, issuer_id=breach.issuer_transaction_id)  # fmt: skip
        return owed

    async def _declined(self, connection: store.Connection, decision: AuthorizationDecided) -> bool:
        wallet = await store.load_wallet(connection, decision.wallet_id)
        proposed = draft(decision, wallet, self._settings.slack_default_channel)
        if proposed is None:
            return False
        if await store.fold_decline(connection, proposed):
            DECLINES_FOLDED.inc()  # an agent retrying: no context to gather, no message to render
            return False
        context = await store.cost_context(connection, proposed, wallet)
        text, blocks = messages.ask(context)
        opened = await store.open_request(
            connection, proposed, context, {"channel": proposed.channel, "text": text, "blocks": blocks}
        )
        if opened:
            REQUESTS_OPENED.labels(proposed.cap.value).inc()
            _log.info("approval_requested", wallet_id=proposed.wallet_id, cap=proposed.cap.value,
                      request_id=str(proposed.request_id), trace_id=proposed.trace_id)  # fmt: skip
        else:
            DECLINES_FOLDED.inc()
        return opened

    async def _confirmed(
        self, connection: store.Connection, request_id: uuid.UUID, outcome: str, new_limit: int | None,
        note: str | None = None,
    ) -> bool:  # fmt: skip
        """The authorizer applied (or refused) an approval's raise: say so in the message."""
        row = await store.transition(connection, request_id, ("approving",), outcome, new_limit_minor=new_limit,
                                     note=note)  # fmt: skip
        if row is None:
            return False  # not ours, or already confirmed (a redelivered event)
        await store.owe(connection, request_id, "chat.update", {})
        DECIDED.labels(outcome).inc()
        _log.info("approval_applied" if outcome == "approved" else "approval_rejected",
                  request_id=str(request_id), wallet_id=row["wallet_id"], note=note)  # fmt: skip
        return True

    # ───────────────────────────── clicks ─────────────────────────────

    async def click(self, click: Click) -> str:
        """Decide a request from a verified click; returns the outcome (recorded with the click)."""
        now = self._clock()
        async with self._pool.acquire() as connection, connection.transaction():
            row = await store.request(connection, click.request_id)
            wallet = None if row is None else await store.load_wallet(connection, row["wallet_id"])
            outcome, command = await self._decide(connection, click, row, wallet, now)
            if not await store.record_click(
                connection, click.request_id, click.user_id, click.action_ts, action=click.action, outcome=outcome
            ):
                CLICKS.labels("replayed").inc()
                raise _Replayed
        CLICKS.labels(outcome).inc()
        if command is not None:
            await self._send_raise(command)
        self.owed.set()
        _log.info("click", request_id=str(click.request_id), user=click.user_id, action=click.action, outcome=outcome)
        return outcome

    async def _decide(  # noqa: PLR0911 - one return per outcome, each recorded with the click
        self, connection: store.Connection, click: Click, row: asyncpg.Record | None, wallet: WalletInfo | None,
        now: datetime,
    ) -> tuple[str, bytes | None]:  # fmt: skip
        if row is None:
            return "unknown_request", None
        if not may_decide(wallet, click.user_id, click.user_name):
            await self._refuse(connection, row, click, "Only this wallet's approvers may decide this request.")
            return "refused_not_approver", None
        if row["state"] != "pending":
            await self._refuse(connection, row, click, f"This request is already {row['state']}.")
            return f"already_{row['state']}", None
        if click.action == messages.DENY:
            decided = await store.transition(connection, click.request_id, ("pending",), "denied",
                                             decided_by=click.user_id, decided_at=now)  # fmt: skip
            if decided is None:
                return "already_decided", None
            await store.owe(connection, click.request_id, "chat.update", {})
            DECIDED.labels("denied").inc()
            TIME_TO_DECISION.observe((now - row["opened_at"]).total_seconds())
            return "denied", None
        assert wallet is not None  # noqa: S101 - may_decide needs a wallet
        new_limit = row["limit_minor"] + row["raise_minor"]
        if row["raise_minor"] <= 0:
            await self._refuse(connection, row, click, "The wallet has no raise step configured.")
            return "refused_no_step", None
        if wallet.max_raise_minor is not None and new_limit > wallet.max_raise_minor:
            await self._refuse(connection, row, click, "That raise would exceed the wallet's maximum; ask an admin.")
            return "refused_above_maximum", None
        decided = await store.transition(connection, click.request_id, ("pending",), "approving",
                                         decided_by=click.user_id, decided_at=now)  # fmt: skip
        if decided is None:
            return "already_decided", None
        TIME_TO_DECISION.observe((now - row["opened_at"]).total_seconds())
        return "approving", serialize(_command(decided, now))

    async def _refuse(self, connection: store.Connection, row: asyncpg.Record, click: Click, text: str) -> None:
        await store.owe(connection, row["request_id"], "chat.postEphemeral", {"user": click.user_id, "text": text})

    async def _send_raise(self, command: bytes) -> None:
        wallet_id = json.loads(command)["wallet_id"]
        await self._kafka.send_and_wait(
            topic_name(Topic.WALLET_COMMANDS, self._kafka.settings.topic_prefix), command, wallet_id.encode()
        )

    # ───────────────────────────── sweep ─────────────────────────────

    async def sweep(self) -> None:
        """Expire requests whose window ended; send again raises the authorizer has not confirmed."""
        now = self._clock()
        async with self._pool.acquire() as connection, connection.transaction():
            expired = await store.expire_due(connection, now)
            stuck = await store.stuck_approvals(connection, store.ago(now, RESEND_APPROVALS_AFTER_S))
        for row in expired:
            DECIDED.labels("expired").inc()
            _log.info("approval_expired", request_id=str(row["request_id"]), wallet_id=row["wallet_id"])
        if expired:
            self.owed.set()
        for row in stuck:
            await self._send_raise(serialize(_command(row, row["decided_at"])))

    async def sweep_loop(self) -> None:
        """Sweep until cancelled."""
        while True:
            try:
                await self.sweep()
            except (OSError, asyncpg.PostgresError) as error:
                _log.warning("sweep_failed", error=str(error)[:300])
            await asyncio.sleep(SWEEP_INTERVAL_S)


class _Replayed(Exception):
    """This click was received before: it changes nothing again."""


Replayed = _Replayed


def _command(row: asyncpg.Record, issued_at: datetime) -> RaiseCap:
    return raise_command(
        request_id=row["request_id"],
        wallet_id=row["wallet_id"],
        cap=CapKind(row["cap"]),
        scope_id=row["scope_id"],
        card_id=row["card_id"],
        raise_minor=row["raise_minor"],
        currency=row["currency"],
        until=row["window_ends_at"],
        approver=row["decided_by"],
        issued_at=issued_at,
    )


def _wallet_info(created: WalletCreated) -> WalletInfo:
    return WalletInfo(
        wallet_id=created.wallet_id,
        label=created.label,
        currency=created.currency,
        time_zone=created.time_zone,
        slack_channel=created.slack_channel,
        approvers=tuple(created.approvers),
        raise_step_minor=created.raise_step.amount_minor,
        max_raise_minor=None if created.max_raise is None else created.max_raise.amount_minor,
    )
