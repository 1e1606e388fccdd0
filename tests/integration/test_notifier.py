"""The notifier on the real Kafka, Postgres and authorizer, with slack_sdk pointed at the local Slack
stand-in: one message per cap and window however many declines, Approve by an approver raises the
cap so the next attempt is approved, refusals change nothing, a replay changes nothing twice, and
a 429 is delivered after Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.common import CapKind, Issuer, ReasonCode
from schemas.policies import WalletCaps
from schemas.topics import Topic
from schemas.wallet import CapBreachedByIssuer, CapRaised, CreateCard, CreateWallet, SetDeclineStreakLimit
from services.notifier.core import Notifier
from services.notifier.standin import Fault, block_actions, signed_form
from services.platform.settings import Settings
from tests.support.builders import command_fields, force_post, request, usd
from tests.support.kafka_io import Collector, apply_commands, publish
from tests.support.samples import MERCHANT
from tests.support.services import SLACK_SIGNING_SECRET, SlackLoop, running_authorizer, running_notifier_with_slack

WALLET, CARD = "wal_slack", "card_slack"
APPROVER, STRANGER = "U0ALICE", "U0MALLORY"

pytestmark = pytest.mark.slow


async def _eventually(check: Callable[[], Any], timeout_s: float = 30) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.05)


async def _wallet(settings: Settings, wallet_id: str = WALLET, card_id: str = CARD) -> None:
    now = datetime.now(UTC)

    def fields() -> dict[str, Any]:
        return command_fields(now) | {"wallet_id": wallet_id}

    await apply_commands(
        settings,
        [
            CreateWallet(**fields(), caps=WalletCaps(rolling_24h=usd(1_000)), label="research agent",
                         slack_channel="#agents", approvers=(APPROVER,), raise_step=usd(500), max_raise=usd(2_000)),
            CreateCard(**fields(), card_id=card_id, issuer=Issuer.STRIPE, issuer_card_token=f"ic_{card_id}",
                       last4="4242", label="paper search"),
        ],
    )  # fmt: skip


def _requests(wallet_id: str, card_id: str, amounts: list[int], tag: str) -> list[Any]:
    now = datetime.now(UTC)
    return [
        request(amount, auth=f"{tag}{index}", card=card_id, at=now, deadline_at=now + timedelta(minutes=5)).model_copy(
            update={"wallet_id": wallet_id}
        )
        for index, amount in enumerate(amounts)
    ]


async def _decide(settings: Settings, requests: list[Any]) -> list[Any]:
    async with Collector(settings, Topic.AUTH_DECISIONS) as decisions:
        await publish(settings, Topic.AUTH_REQUESTS, requests)
        wanted = {r.issuer_authorization_id for r in requests}
        items = await decisions.wait_for(lambda items: wanted <= {d.issuer_authorization_id for d in items})
    return [d for d in items if d.issuer_authorization_id in wanted]


def _messages(loop: SlackLoop) -> list[dict[str, Any]]:
    return list(loop.workspace.messages.values())


async def _request_row(pool: asyncpg.Pool) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM notifier.requests WHERE wallet_id = $1", WALLET)


def _texts(message: dict[str, Any]) -> str:
    texts = []
    for block in message["blocks"]:
        texts += [block.get("text", {}).get("text", "")] + [f["text"] for f in block.get("fields", [])]
        texts += [e.get("text", {}).get("text", "") if isinstance(e.get("text"), dict) else e.get("text", "")
                  for e in block.get("elements", [])]  # fmt: skip
    return "\n".join(texts)


async def test_one_message_per_cap_and_window_and_an_approval_raises_the_cap(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A cap decline → one message; 50 more → still one; refusals change nothing; Approve raises the
    cap and the declined purchase goes through; a replayed or repeated click raises nothing twice.
    """
    async with running_authorizer(kafka_topics, pool), running_notifier_with_slack(kafka_topics, pool) as loop:
        await _wallet(kafka_topics)
        decided = await _decide(kafka_topics, _requests(WALLET, CARD, [600, 600], "first"))
        assert [d.reason for d in decided] == [ReasonCode.APPROVED, ReasonCode.WALLET_ROLLING_24H_CAP]
        (message,) = await _eventually(lambda: _messages(loop))
        await _decide(kafka_topics, _requests(WALLET, CARD, [600] * 50, "retry"))
        row = await _eventually(
            lambda: pool.fetchrow("SELECT * FROM notifier.requests WHERE declines_seen = 51 AND wallet_id = $1", WALLET)
        )
        assert len(_messages(loop)) == 1, "an agent in a retry loop must not flood the channel"

        # The message: who, which cap, used vs limit, what was declined, and the two buttons.
        assert message["channel_name"] == "#agents"
        text = _texts(message)
        for expected in ("research agent hit its rolling 24 h cap", "*Card*\npaper search ••4242",
                         "*Used*\n$6.00 of $10.00", f"*Declined*\n$6.00 at {MERCHANT.name}", "window 20"):  # fmt: skip
            assert expected in text
        (actions,) = [b for b in message["blocks"] if b["type"] == "actions"]
        assert [(e["action_id"], e["text"]["text"], "confirm" in e) for e in actions["elements"]] == [
            ("approve", "Approve +$5.00", True),
            ("deny", "Deny", True),
        ]
        request_id = str(row["request_id"])
        approve = next(e for e in actions["elements"] if e["action_id"] == "approve")

        async with httpx.AsyncClient(base_url=loop.notifier_url, timeout=10) as client:
            # Not an approver: acknowledged, refused in an ephemeral message, nothing changes.
            button = {"channel": message["channel"], "ts": message["ts"], "action_id": "approve"}
            stranger = await client.post(f"{loop.standin_url}/_standin/click", json=button | {"user": STRANGER})
            assert stranger.json()["status"] == 200
            await _eventually(lambda: [e for e in loop.workspace.ephemerals if e["user"] == STRANGER])
            assert "approvers" in loop.workspace.ephemerals[-1]["text"]

            # A bad signature, a stale timestamp, no signature at all: refused before anything is read.
            body, headers = signed_form(block_actions(message, approve, APPROVER), SLACK_SIGNING_SECRET)
            forged = await client.post("/slack/interactivity", content=body,
                                       headers=headers | {"X-Slack-Signature": "v0=" + "0" * 64})  # fmt: skip
            stale_body, stale = signed_form(
                block_actions(message, approve, APPROVER), SLACK_SIGNING_SECRET, int(time.time()) - 301
            )
            stale_response = await client.post("/slack/interactivity", content=stale_body, headers=stale)
            unsigned = await client.post("/slack/interactivity", content=body,
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            assert [(r.status_code, r.json()["error"]) for r in (forged, stale_response, unsigned)] == [
                (401, "invalid_signature"),
                (401, "stale_timestamp"),
                (400, "missing_signature"),
            ]
            assert (await _request_row(pool))["state"] == "pending"

            # The approver approves: acknowledged at once; the raise is applied, the message updated.
            async with Collector(kafka_topics, Topic.WALLET_EVENTS) as events:
                approved = await client.post("/slack/interactivity", content=body, headers=headers)
                assert (approved.status_code, approved.text) == (200, "")
                row = await _eventually(
                    lambda: pool.fetchrow(
                        "SELECT * FROM notifier.requests WHERE request_id = $1 AND state = 'approved'",
                        row["request_id"],
                    )
                )
                # The same request again (a replay), and a second click: no second raise.
                replay = await client.post("/slack/interactivity", content=body, headers=headers)
                again_body, again = signed_form(block_actions(message, approve, APPROVER), SLACK_SIGNING_SECRET)
                await client.post("/slack/interactivity", content=again_body, headers=again)
                await _eventually(lambda: [e for e in loop.workspace.ephemerals if "already approved" in e["text"]])
                raises = [e for e in events.items if isinstance(e, CapRaised)]
            assert replay.status_code == 200
            assert [(r.command_id, r.new_limit.amount_minor, r.actor) for r in raises] == [
                (row["request_id"], 1_500, APPROVER)
            ]
            assert (row["decided_by"], row["new_limit_minor"]) == (APPROVER, 1_500)
            updated = await _eventually(lambda: message["updates"] >= 1 and message)
            assert "Approved by <@U0ALICE>" in _texts(updated)
            assert "$15.00" in _texts(updated)
            assert not [b for b in updated["blocks"] if b["type"] == "actions"]
            assert request_id in _texts(updated)

        # The purchase that was declined now goes through.
        (retried,) = await _decide(kafka_topics, _requests(WALLET, CARD, [600], "after"))
        assert retried.reason == ReasonCode.APPROVED
        clicks = await pool.fetch("SELECT user_id, outcome FROM notifier.clicks ORDER BY received_at")
        assert [(c["user_id"], c["outcome"]) for c in clicks] == [
            (STRANGER, "refused_not_approver"),
            (APPROVER, "approving"),
            (APPROVER, "already_approved"),
        ]


async def test_deny_is_recorded_and_a_429_is_delivered_after_retry_after(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """Slack answers 429 (Retry-After: 1) to the first post: the message arrives after it; Deny is
    recorded and the message says so; later declines in the window open nothing new.
    """
    async with running_authorizer(kafka_topics, pool), running_notifier_with_slack(kafka_topics, pool) as loop:
        loop.workspace.faults["chat.postMessage"] = Fault(status=429, count=1, retry_after=1)
        await _wallet(kafka_topics)
        started = time.monotonic()
        await _decide(kafka_topics, _requests(WALLET, CARD, [600, 600], "deny"))
        (message,) = await _eventually(lambda: _messages(loop))
        waited = time.monotonic() - started
        outbox = await _eventually(  # Slack has answered; the outbox row is marked just after
            lambda: pool.fetchrow(
                "SELECT attempts, last_error FROM notifier.slack_outbox"
                " WHERE method = 'chat.postMessage' AND delivered_at IS NOT NULL"
            )
        )
        assert (outbox["attempts"], outbox["last_error"]) == (2, None)  # cleared once delivered
        assert waited >= 1.0
        assert [c["status"] for c in loop.workspace.calls if c["method"] == "chat.postMessage"] == [429, 200]

        async with httpx.AsyncClient(timeout=10) as client:  # the stand-in's page: a form, then back to the page
            page = await client.get(f"{loop.standin_url}/")
            assert "Approve +$5.00" in page.text
            clicked = await client.post(f"{loop.standin_url}/_standin/click", data={
                "channel": message["channel"], "ts": message["ts"], "action_id": "deny", "user": APPROVER})  # fmt: skip
        assert (clicked.status_code, clicked.headers["location"]) == (303, "/")
        row = await _eventually(lambda: pool.fetchrow("SELECT * FROM notifier.requests WHERE state = 'denied'"))
        assert row["decided_by"] == APPROVER
        updated = await _eventually(lambda: message["updates"] >= 1 and message)
        assert "Denied by <@U0ALICE>" in _texts(updated)

        await _decide(kafka_topics, _requests(WALLET, CARD, [600] * 3, "after-deny"))
        await _eventually(lambda: pool.fetchval("SELECT declines_seen = 4 FROM notifier.requests"))
        assert len(_messages(loop)) == 1


async def test_a_request_nobody_decides_expires_with_its_window(kafka_topics: Settings, pool: asyncpg.Pool) -> None:
    """Past the window's end the sweep marks the request expired and the message says so."""
    async with running_authorizer(kafka_topics, pool), running_notifier_with_slack(kafka_topics, pool) as loop:
        await _wallet(kafka_topics)
        await _decide(kafka_topics, _requests(WALLET, CARD, [600, 600], "expire"))
        (message,) = await _eventually(lambda: _messages(loop))
        later = Notifier(loop.settings, pool, clock=lambda: datetime.now(UTC) + timedelta(days=2))
        await later.sweep()
        assert (await _request_row(pool))["state"] == "expired"
        updated = await _eventually(lambda: message["updates"] >= 1 and message)
        assert "Expired: nobody decided" in _texts(updated)


async def test_a_raise_above_the_maximum_is_refused_and_slack_5xx_are_retried(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """The wallet's maximum is $12: Approve (+$5 on $10) is refused in Slack and nothing changes; a
    500 from Slack on the post is retried with backoff and the message arrives.
    """
    async with running_authorizer(kafka_topics, pool), running_notifier_with_slack(kafka_topics, pool) as loop:
        loop.workspace.faults["chat.postMessage"] = Fault(status=500, count=1)
        now = datetime.now(UTC)
        fields = command_fields(now) | {"wallet_id": "wal_max"}
        await apply_commands(kafka_topics, [
            CreateWallet(**fields, caps=WalletCaps(rolling_24h=usd(1_000)), approvers=(APPROVER,), raise_step=usd(500),
                         max_raise=usd(1_200)),
            CreateCard(**command_fields(now) | {"wallet_id": "wal_max"}, card_id="card_max", issuer=Issuer.STRIPE,
                       issuer_card_token="ic_max", last4="4242"),
        ])  # fmt: skip
        await _decide(kafka_topics, _requests("wal_max", "card_max", [600, 600], "max"))
        (message,) = await _eventually(lambda: _messages(loop))
        assert [c["status"] for c in loop.workspace.calls if c["method"] == "chat.postMessage"] == [500, 200]
        button = {"channel": message["channel"], "ts": message["ts"], "action_id": "approve", "user": APPROVER}
        async with httpx.AsyncClient(timeout=10) as client:
            clicked = await client.post(f"{loop.standin_url}/_standin/click", json=button)
        assert clicked.json()["status"] == 200
        refusal = await _eventually(lambda: [e for e in loop.workspace.ephemerals if "maximum" in e["text"]])
        assert refusal[0]["user"] == APPROVER
        row = await pool.fetchrow("SELECT state FROM notifier.requests WHERE wallet_id = 'wal_max'")
        assert row["state"] == "pending"
        outcome = await pool.fetchval("SELECT outcome FROM notifier.clicks WHERE user_id = $1", APPROVER)
        assert outcome == "refused_above_maximum"


async def test_money_the_issuer_moved_over_a_cap_is_said_once_in_the_channel(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A $12.00 force capture on the $10.00 wallet: the authorizer counts it and reports the breach;
    the notifier says so in the wallet's channel, a notice with no buttons (the money has moved).
    The breach redelivered says nothing twice.
    """
    async with running_authorizer(kafka_topics, pool), running_notifier_with_slack(kafka_topics, pool) as loop:
        await _wallet(kafka_topics)
        forced = force_post(1_200, datetime.now(UTC)).model_copy(update={"wallet_id": WALLET, "card_id": CARD})
        async with Collector(kafka_topics, Topic.WALLET_EVENTS) as events:
            await publish(kafka_topics, Topic.ISSUER_EVENTS, [forced])
            said = await events.wait_for(lambda items: any(isinstance(e, CapBreachedByIssuer) for e in items))
        breaches = [e for e in said if isinstance(e, CapBreachedByIssuer)]
        rolling = next(b for b in breaches if b.cap == CapKind.WALLET_ROLLING_24H)
        messages = await _eventually(lambda: len(_messages(loop)) >= len(breaches) and _messages(loop))
        notice = next(m for m in messages if "rolling 24 h cap" in m["text"])
        assert notice["channel_name"] == "#agents"
        assert notice["text"] == (
            "research agent is over its rolling 24 h cap: the issuer let money through without asking us. "
            "$12.00 of $10.00 used, $2.00 over."
        )
        assert f"issuer's id `{forced.issuer_transaction_id}`" in _texts(notice)
        assert not [b for b in notice["blocks"] if b["type"] == "actions"]
        await publish(kafka_topics, Topic.WALLET_EVENTS, [rolling])  # redelivered
        # A card created after it, on the wallet's partition: once the notifier knows it, it has read the repeat.
        marker = CreateCard(**command_fields(datetime.now(UTC)) | {"wallet_id": WALLET}, card_id="card_after",
                            issuer=Issuer.STRIPE, issuer_card_token="ic_card_after", last4="0000")  # fmt: skip
        await apply_commands(kafka_topics, [marker])
        await _eventually(lambda: pool.fetchval("SELECT true FROM notifier.cards WHERE card_id = 'card_after'"))
        notices = "SELECT count(*) FROM notifier.slack_outbox WHERE notice_id IS NOT NULL"
        assert await pool.fetchval(notices) == len(breaches)
        await asyncio.sleep(0.5)  # the delivery loop's period: a second message, were one owed, would be sent
        assert len(_messages(loop)) == len(breaches)


async def test_a_card_frozen_for_declines_in_a_row_is_said_in_the_channel(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """A limit of 3 declines in a row, three $20.00 asks of the $10.00 wallet: the authorizer freezes
    the card itself (the 4th is declined `card_frozen`) and the notifier says so once in the channel.
    """
    async with running_authorizer(kafka_topics, pool), running_notifier_with_slack(kafka_topics, pool) as loop:
        await _wallet(kafka_topics)
        limit = SetDeclineStreakLimit(**command_fields(datetime.now(UTC)) | {"wallet_id": WALLET}, max_declines=3)
        await apply_commands(kafka_topics, [limit])
        decided = await _decide(kafka_topics, _requests(WALLET, CARD, [2_000] * 4, "streak"))
        frozen = await _eventually(lambda: [m for m in _messages(loop) if "frozen automatically" in m["text"]])
    assert sorted(d.reason for d in decided) == sorted(
        [ReasonCode.WALLET_ROLLING_24H_CAP] * 3 + [ReasonCode.CARD_FROZEN]
    )
    assert [(m["channel_name"], m["text"]) for m in frozen] == [
        ("#agents", "research agent's card card_slack was frozen automatically: 3 declines in a row (the limit is 3)."),
    ]
