"""kill -9 of the authorizer process mid-stream: after a restart every authorization has exactly one
decision (repeats are identical), the cap is exact, and no hold is doubled or lost.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from schemas.authorizations import AuthorizationDecided
from schemas.common import Issuer, ReasonCode
from schemas.policies import WalletCaps
from schemas.topics import Topic
from schemas.wallet import CreateCard, CreateWallet
from services.platform.settings import Settings
from tests.support.builders import CARD, WALLET, command_fields, request, usd
from tests.support.kafka_io import Collector, apply_commands, publish
from tests.support.processes import service_env, start

REQUESTS = 1_000
CAP_MINOR = 60_000  # $600.00 of $1.00 requests: 600 approvals


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return start("services.authorizer", service_env(settings, PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0"), log)


@pytest.mark.slow
async def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(
    kafka_topics: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """SIGKILL after some decisions, restart: identical answers, exact approvals, one hold each."""
    settings, log = kafka_topics, tmp_path / "authorizer.log"
    now = datetime.now(UTC)
    process = _start(settings, log)
    await apply_commands(
        settings,
        [
            CreateWallet(**command_fields(now), caps=WalletCaps(rolling_24h=usd(CAP_MINOR))),
            CreateCard(
                **command_fields(now), card_id=CARD, issuer=Issuer.STRIPE, issuer_card_token="ic_1", last4="4242"
            ),
        ],
    )
    requests = [
        request(100, auth=f"k{index}", at=now, deadline_at=now + timedelta(minutes=5)) for index in range(REQUESTS)
    ]
    async with Collector(settings, Topic.AUTH_DECISIONS) as decisions:
        # Half the stream is sent while it runs, the rest while it is dead: the kill lands mid-stream
        # however fast it decides.
        publishing = asyncio.create_task(publish(settings, Topic.AUTH_REQUESTS, requests[: REQUESTS // 2]))
        await decisions.wait_for(lambda items: len(items) >= REQUESTS // 5, timeout_s=90)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed_after = len(decisions.items)
        await publishing
        await publish(settings, Topic.AUTH_REQUESTS, requests[REQUESTS // 2 :])
        process = _start(settings, log)
        try:
            items = await decisions.wait_for(
                lambda items: len({d.issuer_authorization_id for d in items}) >= REQUESTS, timeout_s=120
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    first: dict[str, object] = {}
    for decision in items:
        assert first.setdefault(decision.issuer_authorization_id, decision) == decision, "a repeat changed its answer"
    outcomes = Counter((d.approved, d.reason) for d in first.values())  # type: ignore[attr-defined]
    held = await pool.fetchval(
        "SELECT count(*) FROM authorizer.holds WHERE wallet_id = $1",
        WALLET,
    )
    recorded = await pool.fetchval("SELECT count(*) FROM authorizer.decisions WHERE wallet_id = $1", WALLET)
    assert 0 < killed_after < REQUESTS
    assert (outcomes, held, recorded) == (
        Counter({(True, ReasonCode.APPROVED): 600, (False, ReasonCode.WALLET_ROLLING_24H_CAP): 400}),
        600,
        REQUESTS,
    )


@pytest.mark.slow
async def test_a_paused_zombie_resumed_after_its_partitions_moved_changes_nothing(
    kafka_topics: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """SIGSTOP one instance, let another take over, SIGCONT the first: the cap stays exact."""
    settings = kafka_topics
    now = datetime.now(UTC)
    first = _start(settings, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    await apply_commands(
        settings,
        [
            CreateWallet(**command_fields(now), caps=WalletCaps(rolling_24h=usd(30_000))),
            CreateCard(
                **command_fields(now), card_id=CARD, issuer=Issuer.STRIPE, issuer_card_token="ic_1", last4="4242"
            ),
        ],
    )
    requests = [request(100, auth=f"z{i}", at=now, deadline_at=now + timedelta(minutes=5)) for i in range(500)]
    try:
        async with Collector(settings, Topic.AUTH_DECISIONS) as decisions:
            await publish(settings, Topic.AUTH_REQUESTS, requests[:100])
            await decisions.wait_for(lambda items: len(items) >= 100)
            first.send_signal(signal.SIGSTOP)
            second = _start(settings, tmp_path / "second.log")
            await publish(settings, Topic.AUTH_REQUESTS, requests[100:400])
            await decisions.wait_for(lambda items: len({d.issuer_authorization_id for d in items}) >= 400, 120)
            first.send_signal(signal.SIGCONT)
            await publish(settings, Topic.AUTH_REQUESTS, requests[400:])
            items = await decisions.wait_for(lambda items: len({d.issuer_authorization_id for d in items}) >= 500, 120)
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    answers: dict[str, AuthorizationDecided] = {}
    for decision in items:
        assert answers.setdefault(decision.issuer_authorization_id, decision) == decision, "a repeat changed"
    approved = len([d for d in answers.values() if d.approved])
    held = await pool.fetchval(
        "SELECT count(*) FROM authorizer.holds WHERE wallet_id = $1",
        WALLET,
    )
    assert (approved, held) == (300, 300)
