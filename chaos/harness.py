"""The chaos run: every service as its own process on the real Kafka and Postgres, a seeded workload,
faults at seeded moments, then a quiet end and the oracle (chaos/oracle.py).

Everything random comes from the seed, through two generators: one for the workload, one for the
faults and their moments (with one shared generator, timing decided how many workload draws came
before each fault, so a seed did not name the same faults twice). Thread scheduling, Kafka and
Postgres are not deterministic, so a seed reproduces the same storm, not the same interleaving;
the oracle's checks hold for every interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from aiokafka.errors import KafkaError

from schemas.authorizations import AuthorizationDecided, AuthorizationRequested
from schemas.common import CapKind, Issuer, Merchant
from schemas.issuer_events import (
    AuthorizationApprovedByIssuer,
    AuthorizationCleared,
    AuthorizationReversed,
    ForcePosted,
    RefundPosted,
)
from schemas.money import Money
from schemas.policies import CardCaps, WalletCaps
from schemas.registry import Message, parse, serialize
from schemas.topics import Topic, message_key, topic_name
from schemas.wallet import BindTrace, CreateCard, CreateWallet, FreezeCard, RaiseCap, UnfreezeCard, UpdateCaps
from services.gateway.signatures import STRIPE_HEADER, sign_stripe
from services.gateway.simulator import sign_for_stripe, stripe_authorization_request, stripe_incremental_request
from services.platform.kafka import create_consumer, create_producer, ensure_topics, project_topics
from services.platform.logging import get_logger
from services.platform.settings import Settings
from tests.support.processes import service_env, start

STRIPE_SECRET = "whsec_chaos"  # noqa: S105 - a local test secret
SLACK_SECRET = "chaos-slack-signing-secret"  # noqa: S105 - a local test secret
# Slack users who are no wallet's approver: a click of theirs must never decide a request.
INTRUDER_PREFIX = "U0CHAOSINTRUDER"
MERCHANTS = (
    Merchant(name="OpenAI API", mcc="5734", network_id="openai", country="US"),
    Merchant(name="Anthropic", mcc="5734", network_id="anthropic", country="US"),
    Merchant(name="Modal Labs", mcc="7372", network_id="modal", country="US"),
)
_log = get_logger("chaos")
WEBHOOK_PREFIX = "iauth_chaos_"  # authorization ids asked through the gateway's webhook
SENT_KEPT = 20_000  # messages kept for redelivery (a uniform sample of all sent)


@dataclass(frozen=True)
class Config:
    """One run's shape."""

    seed: int
    wallets: int = 8
    seconds: float = 40.0  # how long the storm lasts; with `events`, the most it may last
    events: int = 0  # when set, the storm lasts until this many events were sent (or `seconds` passed)
    rate_per_s: float = 60.0  # workload actions per second
    fault_every_s: float = 6.0  # mean time between faults
    deadline_ms: int = 600
    report_every_s: float = 0.0  # a soak prints progress and memory this often (0: never)
    bad_input_share: float = 0.06  # of the workload's actions: webhooks that must be refused or declined
    faults: tuple[str, ...] = (
        "kill_authorizer", "second_authorizer", "stall_authorizer", "kill_ledger", "kill_gateway",
        "kill_notifier", "restart_postgres", "restart_kafka", "zombie_authorizer", "postgres_full", "crash_kafka",
    )  # fmt: skip


@dataclass
class Tally:
    """What happened, for the summary."""

    events: int = 0
    kills: int = 0
    restarts: int = 0
    rebalances: int = 0
    duplicates: int = 0
    stand_ins: int = 0  # authorizations the issuer approved without asking (AuthorizationApprovedByIssuer)
    increments: int = 0  # incremental authorizations asked (on Kafka or by webhook)
    stalls: int = 0
    zombies: int = 0
    postgres_restarts: int = 0
    kafka_restarts: int = 0
    postgres_full: int = 0  # times Postgres refused every new connection for a while (max_connections)
    kafka_crashes: int = 0  # times the broker was killed -9 with committed decisions not yet published
    webhook_answers: dict[str, bool] = field(default_factory=dict)  # authorization id → approved
    # Webhooks never answered 200 in all their retries (30 s and more: every fault is over by then).
    webhooks_unanswered: list[str] = field(default_factory=list)
    webhook_reasons: dict[str, str] = field(default_factory=dict)
    requested: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)
    # What was in flight when each fault struck (`Workload.in_flight`), in the order they struck.
    struck: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    # Bad input sent on purpose, by kind: how many, and how many got the refusal or decline expected.
    bad_inputs: dict[str, dict[str, int]] = field(default_factory=dict)
    bad_input_surprises: list[str] = field(default_factory=list)  # kind, status and body of the rest
    intruder_click_outcomes: dict[str, int] = field(default_factory=dict)  # as the notifier recorded them
    crashed: list[str] = field(default_factory=list)  # processes that exited on their own


class Processes:
    """The services as processes; restarted on demand, each with its log under the run's folder."""

    def __init__(
        self, settings: Settings, logs: Path, gateway_port: int, deadline_ms: int, notifier_port: int = 0
    ) -> None:
        self._logs = logs
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        # Slack's clicks reach the notifier here (None: no port of its own, no clicks sent).
        self.notifier_url = f"http://127.0.0.1:{notifier_port}" if notifier_port else None
        self._env = service_env(
            settings,
            PURSESTRINGS_LOG_LEVEL="info",
            PURSESTRINGS_GATEWAY_PORT=str(gateway_port),
            PURSESTRINGS_STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
            PURSESTRINGS_AUTH_DEADLINE_MS=str(deadline_ms),
            PURSESTRINGS_SLACK_SIGNING_SECRET=SLACK_SECRET,
            PURSESTRINGS_NOTIFIER_PORT=str(notifier_port),
            PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0",
            PURSESTRINGS_LEDGER_HEALTH_PORT="0",
        )
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.crashed: list[str] = []  # "name (exit code)" of each process found exited on its own

    def _note_exit(self, name: str) -> None:
        process = self.running.get(name)
        if process is not None and process.poll() is not None:
            self.crashed.append(f"{name} ({process.returncode})")

    def start(self, name: str) -> None:
        """Start (or restart) `name`: authorizer, authorizer-2, ledger, gateway or notifier."""
        self._note_exit(name)
        module = "services." + name.split("-", maxsplit=1)[0]
        self.running[name] = start(module, self._env, self._logs / f"{name}.log")

    def signal(self, name: str, number: int) -> None:
        """Send a signal to `name` if it runs."""
        process = self.running.get(name)
        if process is not None and process.poll() is None:
            process.send_signal(number)

    def kill(self, name: str) -> None:
        """Kill -9, and wait for it to be gone."""
        self._note_exit(name)
        process = self.running.pop(name, None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self, name: str, grace_s: float) -> None:
        """SIGTERM `name`; kill -9 it if it is still there after `grace_s` (a leaving instance)."""
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop_all(self) -> None:
        """SIGCONT (in case), SIGTERM, wait; SIGKILL what lingers."""
        for name, process in list(self.running.items()):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            self.running.pop(name, None)

    def dead(self) -> list[str]:
        """Processes that exited on their own."""
        return [name for name, process in self.running.items() if process.poll() is not None]

    async def gateway_ready(self, timeout_s: float = 60) -> None:
        """Wait until the gateway answers /healthz."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get(f"{self.gateway_url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the gateway did not become healthy")


def _usd(minor: int) -> Money:
    return Money.of(minor, "USD")


class Workload:
    """Seeded traffic: authorizations (Kafka and webhooks), commands, lifecycle events, duplicates."""

    def __init__(
        self, settings: Settings, config: Config, rng: random.Random, tally: Tally, gateway_url: str, *,
        notifier_url: str | None = None,
    ) -> None:  # fmt: skip
        self._settings, self._config, self._rng, self._tally = settings, config, rng, tally
        self._gateway_url, self._notifier_url = gateway_url, notifier_url
        self._pending_requests: list[uuid.UUID] = []  # approval requests open, read now and then
        self._intruder_clicks = 0
        self._producer: Any = None  # made by start()
        self.wallets = [f"cw{index}" for index in range(config.wallets)]
        self.cards = {w: [f"{w}-c{n}" for n in range(2)] for w in self.wallets}
        self.approved: dict[str, AuthorizationDecided] = {}  # first approvals seen on auth.decisions
        self.decided: set[str] = set()  # every authorization id with a decision on auth.decisions
        # Approvals not settled yet, in the order they were seen (a list, for a seeded choice in O(1)
        # at any scale), and each one's place in it.
        self._open: list[str] = []
        self._open_at: dict[str, int] = {}
        # Authorizations the issuer approved without asking (stand-ins): id → (wallet, card, amount).
        self._stand_ins: dict[str, tuple[str, str, int]] = {}
        self._settled: set[str] = set()  # authorizations with a final clearing or a full reversal
        self._cleared: dict[str, int] = {}
        # Messages sent, for redelivery: a uniform sample of at most SENT_KEPT of them (reservoir), so
        # a long run redelivers old messages as well as new ones without keeping every message.
        self._sent: list[tuple[Topic, Message]] = []
        self._sent_count = 0
        self._webhooks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start a producer (a stopped one cannot start again)."""
        self._producer = create_producer(self._settings)
        await self._producer.start()

    async def stop(self) -> None:
        """Wait for webhooks in flight; stop the producer."""
        if self._webhooks:
            await asyncio.gather(*self._webhooks, return_exceptions=True)
        await self._producer.stop()

    async def send(self, topic: Topic, message: Message, *, remember: bool = True) -> None:
        """Publish one message (keyed by wallet) and count it; retried while the broker is away."""
        for attempt in range(120):
            try:
                if self._producer is None:
                    await self.start()
                await self._producer.send_and_wait(
                    topic_name(topic, self._settings.topic_prefix), serialize(message), key=message_key(message)
                )
                break
            except KafkaError:
                if attempt == 119:
                    raise
                # An idempotent producer may be left fenced by a broker restart: a new one goes on.
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None
                await asyncio.sleep(0.5)
        self._tally.events += 1
        if remember:
            self._remember(topic, message)

    def _remember(self, topic: Topic, message: Message) -> None:
        """Keep `message` in the redelivery sample (reservoir sampling: every message sent has the
        same chance to be in it).
        """
        self._sent_count += 1
        if len(self._sent) < SENT_KEPT:
            self._sent.append((topic, message))
            return
        slot = self._rng.randrange(self._sent_count)
        if slot < SENT_KEPT:
            self._sent[slot] = (topic, message)

    def seen_approved(self, decision: AuthorizationDecided) -> None:
        """The follower saw `decision` approved (an authorization's own, not an increment's)."""
        authorization_id = decision.issuer_authorization_id
        if authorization_id in self.approved:
            return
        self.approved[authorization_id] = decision
        if authorization_id not in self._settled:
            self._open_at[authorization_id] = len(self._open)
            self._open.append(authorization_id)

    def _settle(self, authorization_id: str) -> None:
        """`authorization_id` is settled (a final clearing or a full reversal): no longer open."""
        self._settled.add(authorization_id)
        at = self._open_at.pop(authorization_id, None)
        if at is None:
            return
        last = self._open.pop()
        if last != authorization_id:
            self._open[at] = last
            self._open_at[last] = at

    def _pick_open(self, also: Callable[[str], bool] = lambda _: True) -> AuthorizationDecided | None:
        """A seeded choice among the open approvals the issuer knows as approved (and `also`), or None
        when a few draws find none.
        """
        for _ in range(8):
            if not self._open:
                return None
            authorization_id = self._open[self._rng.randrange(len(self._open))]
            if self._issuer_approved(authorization_id) and also(authorization_id):
                return self.approved[authorization_id]
        return None

    def in_flight(self) -> dict[str, int]:
        """What is in flight now: requests sent and not decided yet, webhooks not answered yet, and
        approvals not settled yet.
        """
        return {
            "events_so_far": self._tally.events,
            "requests_undecided": len(self._tally.requested - self.decided),
            "webhooks_in_flight": len(self._webhooks),
            "approvals_open": len(self._open),
        }

    def _fields(self, wallet_id: str) -> dict[str, Any]:
        return {"command_id": uuid.uuid4(), "wallet_id": wallet_id, "actor": "chaos", "issued_at": datetime.now(UTC)}

    def setup_commands(self) -> list[Message]:
        """Wallets with a rolling cap, a funded and an unfunded card each, and bound traces."""
        commands: list[Message] = []
        for number, wallet_id in enumerate(self.wallets):
            # One wallet in three has a tight cap (a few purchases fill it): contended from the start.
            cap = self._rng.randrange(500, 1_500) if number % 3 == 2 else self._rng.randrange(2_000, 8_000)
            commands.append(CreateWallet(**self._fields(wallet_id), caps=WalletCaps(rolling_24h=_usd(cap))))
            for index, card_id in enumerate(self.cards[wallet_id]):
                funded = _usd(self._rng.randrange(1_000, 4_000)) if index == 0 else None
                commands.append(
                    CreateCard(
                        **self._fields(wallet_id),
                        card_id=card_id,
                        issuer=Issuer.STRIPE,
                        issuer_card_token=f"tok-{card_id}",
                        last4="4242",
                        funded_amount=funded,
                        caps=CardCaps(),
                    )
                )
            commands.append(BindTrace(**self._fields(wallet_id), trace_id=f"T-{wallet_id}-0", card_id=None))
        return commands

    async def step(self) -> None:
        """One seeded action."""
        if self._rng.random() < self._config.bad_input_share:
            kinds = BAD_INPUTS + BAD_CLICKS if self._notifier_url else BAD_INPUTS
            self._spawn(self._bad_input(self._rng.choice(kinds)))
            return
        roll = self._rng.random()
        wallet_id = self._rng.choice(self.wallets)
        if roll < 0.37:
            await self._authorize_on_kafka(wallet_id)
        elif roll < 0.40:
            await self._increment()
        elif roll < 0.55:
            self._authorize_by_webhook(wallet_id)
        elif roll < 0.78:
            await self._lifecycle()
        elif roll < 0.90:
            await self._command(wallet_id)
        else:
            await self._redeliver()

    def _request(self, wallet_id: str, card_id: str, authorization_id: str, amount: int) -> AuthorizationRequested:
        now = datetime.now(UTC)
        return AuthorizationRequested(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, authorization_id), wallet_id=wallet_id, card_id=card_id,
            issuer=Issuer.STRIPE, issuer_authorization_id=authorization_id, amount=_usd(amount),
            merchant_amount=_usd(amount), merchant=self._rng.choice(MERCHANTS), requested_at=now,
            deadline_at=now + timedelta(minutes=10),
        )  # fmt: skip

    async def _authorize_on_kafka(self, wallet_id: str) -> None:
        authorization_id = f"ck-{self._rng.getrandbits(48):012x}"
        card_id = self._rng.choice(self.cards[wallet_id])
        self._tally.requested.add(authorization_id)
        await self.send(Topic.AUTH_REQUESTS, self._request(wallet_id, card_id, authorization_id,
                                                           self._rng.randrange(50, 1_500)))  # fmt: skip

    async def _increment(self) -> None:
        """An incremental authorization of an open approval (a hotel's extra night): by webhook as
        Stripe asks it when the approval came that way, else on Kafka as the gateway asks it.
        """
        decision = self._pick_open()
        if decision is None:
            return
        amount = self._rng.randrange(10, 400)
        if decision.issuer_authorization_id.startswith(WEBHOOK_PREFIX):
            event = stripe_incremental_request(
                decision.issuer_authorization_id, f"tok-{decision.card_id}", amount,
                approved_minor=decision.amount.amount_minor,
            )  # fmt: skip
            task = asyncio.create_task(self._webhook_event(f"{decision.issuer_authorization_id}:{event['id']}", event))
            self._webhooks.add(task)
            task.add_done_callback(self._webhooks.discard)
            return
        increment_id = f"{decision.issuer_authorization_id}:i{self._rng.getrandbits(32):08x}"
        self._tally.requested.add(increment_id)
        self._tally.increments += 1
        request = self._request(decision.wallet_id, decision.card_id, increment_id, amount)
        await self.send(Topic.AUTH_REQUESTS, request.model_copy(
            update={"schema_version": 2, "increment_of": decision.issuer_authorization_id}))  # fmt: skip

    def _authorize_by_webhook(self, wallet_id: str) -> None:
        authorization_id = f"{WEBHOOK_PREFIX}{self._rng.getrandbits(48):012x}"
        card_id = self._rng.choice(self.cards[wallet_id])
        amount = self._rng.randrange(50, 1_500)
        task = asyncio.create_task(self._webhook(authorization_id, f"tok-{card_id}", amount))
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    async def _webhook(self, authorization_id: str, card_token: str, amount: int) -> None:
        """POST like Stripe, retrying (same authorization id) while the gateway is down, as Stripe would."""
        await self._webhook_event(authorization_id, stripe_authorization_request(authorization_id, card_token, amount))

    async def _webhook_event(self, authorization_id: str, event: dict[str, Any]) -> None:
        """POST `event` like Stripe (its answer tallied under `authorization_id`, an increment's own
        id for an increment), retrying while the gateway is down.
        """
        if event["data"]["object"].get("request_history"):
            self._tally.increments += 1
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(60):
                signed = sign_for_stripe(event, STRIPE_SECRET)
                try:
                    response = await client.post(f"{self._gateway_url}{signed.path}", content=signed.body,
                                                 headers=signed.headers)  # fmt: skip
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code == 200:
                    body = response.json()
                    self._tally.webhook_answers[authorization_id] = bool(body["approved"])
                    self._tally.webhook_reasons[authorization_id] = body.get("metadata", {}).get(
                        "pursestrings_reason", ""
                    )
                    self._tally.events += 1
                    return
                await asyncio.sleep(0.5)
        self._tally.webhooks_unanswered.append(authorization_id)

    async def _lifecycle(self) -> None:
        roll = self._rng.random()
        if roll < 0.05:
            await self._stand_in()
            return
        if roll < 0.1:
            wallet_id = self._rng.choice(self.wallets)
            card_id = self._rng.choice(self.cards[wallet_id])
            await self.send(Topic.ISSUER_EVENTS, ForcePosted(
                event_id=uuid.uuid4(), wallet_id=wallet_id, card_id=card_id, issuer=Issuer.STRIPE,
                occurred_at=datetime.now(UTC), issuer_transaction_id=f"ft-{uuid.uuid4().hex[:10]}",
                amount=_usd(self._rng.randrange(10, 300)), merchant=self._rng.choice(MERCHANTS)))  # fmt: skip
            return
        decision = self._pick_open()
        if decision is None:
            return
        held = decision.amount.amount_minor
        base: dict[str, Any] = {"event_id": uuid.uuid4(), "wallet_id": decision.wallet_id,
                                "card_id": decision.card_id, "issuer": Issuer.STRIPE, "occurred_at": datetime.now(UTC),
                                "issuer_authorization_id": decision.issuer_authorization_id}  # fmt: skip
        if roll < 0.55:
            amount = max(1, held + self._rng.randrange(-held // 2, held // 5 + 1))  # below or above the hold
            final = self._rng.random() < 0.8
            transaction_id = f"ct-{uuid.uuid4().hex[:10]}"
            await self.send(Topic.ISSUER_EVENTS, AuthorizationCleared(
                **base, issuer_transaction_id=transaction_id, amount=_usd(amount), final=final))  # fmt: skip
            self._cleared[decision.issuer_authorization_id] = amount
            if final:
                self._settle(decision.issuer_authorization_id)
        elif roll < 0.85:
            full = self._rng.random() < 0.6
            amount = held if full else self._rng.randrange(1, held + 1)
            await self.send(Topic.ISSUER_EVENTS, AuthorizationReversed(**base, amount=_usd(amount), full=full))
            if full:
                self._settle(decision.issuer_authorization_id)
        elif decision.issuer_authorization_id in self._cleared:
            base.pop("issuer_authorization_id")
            await self.send(Topic.ISSUER_EVENTS, RefundPosted(
                **base, issuer_transaction_id=f"rf-{uuid.uuid4().hex[:10]}",
                issuer_authorization_id=decision.issuer_authorization_id,
                amount=_usd(self._rng.randrange(1, self._cleared[decision.issuer_authorization_id] + 1))))  # fmt: skip

    async def _stand_in(self) -> None:
        """An authorization the issuer approved without asking us: held whatever the caps (the
        oracle counts it as exposure for every approval after it), reversed at the end. One time in
        three, an increment the issuer approved on an open authorization of ours instead: its hold
        grows to the new total.
        """
        decision = self._pick_open(lambda a: not a.startswith(WEBHOOK_PREFIX)) if self._rng.random() < 1 / 3 else None
        if decision is not None:
            self._tally.stand_ins += 1
            total = decision.amount.amount_minor + self._rng.randrange(10, 300)
            await self.send(Topic.ISSUER_EVENTS, AuthorizationApprovedByIssuer(
                event_id=uuid.uuid4(), wallet_id=decision.wallet_id, card_id=decision.card_id, issuer=Issuer.STRIPE,
                occurred_at=datetime.now(UTC), issuer_authorization_id=decision.issuer_authorization_id,
                amount=_usd(total)))  # fmt: skip
            return
        wallet_id = self._rng.choice(self.wallets)
        card_id = self._rng.choice(self.cards[wallet_id])
        authorization_id, amount = f"sa-{self._rng.getrandbits(48):012x}", self._rng.randrange(10, 300)
        self._stand_ins[authorization_id] = (wallet_id, card_id, amount)
        self._tally.stand_ins += 1
        await self.send(Topic.ISSUER_EVENTS, AuthorizationApprovedByIssuer(
            event_id=uuid.uuid4(), wallet_id=wallet_id, card_id=card_id, issuer=Issuer.STRIPE,
            occurred_at=datetime.now(UTC), issuer_authorization_id=authorization_id, amount=_usd(amount),
            merchant=self._rng.choice(MERCHANTS)))  # fmt: skip

    async def _command(self, wallet_id: str) -> None:
        card_id = self._rng.choice(self.cards[wallet_id])
        roll = self._rng.random()
        fields = self._fields(wallet_id)
        command: Message
        if roll < 0.3:
            command = FreezeCard(**fields, card_id=card_id, reason="chaos")
        elif roll < 0.6:
            command = UnfreezeCard(**fields, card_id=card_id, reason="chaos")
        elif roll < 0.75:
            command = RaiseCap(**fields, cap=CapKind.WALLET_ROLLING_24H, amount=_usd(self._rng.randrange(100, 1_000)),
                               until=datetime.now(UTC) + timedelta(minutes=self._rng.randrange(1, 30)))  # fmt: skip
        elif roll < 0.9:
            command = BindTrace(**fields, trace_id=f"T-{wallet_id}-{self._rng.randrange(5)}", card_id=card_id)
        else:
            command = UpdateCaps(**fields, wallet_caps=WalletCaps(rolling_24h=_usd(self._rng.randrange(2_000, 8_000))))
        await self.send(Topic.WALLET_COMMANDS, command)

    async def _redeliver(self) -> None:
        """A message again, later and out of order: the same ids, so it must change nothing."""
        if not self._sent:
            return
        topic, message = self._rng.choice(self._sent)
        self._tally.duplicates += 1
        await self.send(topic, message, remember=False)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    def _bad_webhook(self, kind: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one bad webhook of `kind` (see BAD_INPUTS)."""
        wallet_id = self._rng.choice(self.wallets)
        token = f"tok-{self._rng.choice(self.cards[wallet_id])}"
        authorization_id = f"iauth_bad_{self._rng.getrandbits(48):012x}"
        event = stripe_authorization_request(authorization_id, token, self._rng.randrange(50, 1_500))
        stamp = int(time.time())
        body = json.dumps(event).encode()
        if kind == "malformed":
            body = b'{"type": "issuing_authorization.request", "data": {"object": ' + body[:40]
        elif kind == "oversized":
            body = json.dumps(event | {"padding": "x" * (1024 * 1024)}).encode()
        elif kind == "nested":
            body = b"[" * 50_000 + b"]" * 50_000
        elif kind == "unknown_card":
            body = json.dumps(stripe_authorization_request(authorization_id, "tok-nobody", 100)).encode()
        elif kind == "wrong_currency":  # a currency the wallet has no rate for: declined, never held
            body = json.dumps(stripe_authorization_request(authorization_id, token, 500, currency="jpy")).encode()
        elif kind == "replayed":
            stamp -= 3_600  # a captured request sent again an hour later
        headers = {"Content-Type": "application/json"}
        if kind != "unsigned":
            secret = "whsec_not_ours" if kind == "bad_signature" else STRIPE_SECRET
            headers[STRIPE_HEADER] = sign_stripe(body, secret, stamp)
        return body, headers

    async def _bad_click(self, kind: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one bad Slack click of `kind` (see BAD_CLICKS): Approve pressed on
        an open approval request (a random id when none is known) by a user who is no approver.
        """
        if kind == "click_non_approver" and self._intruder_clicks % 25 == 0:
            await self._read_pending_requests()
        self._intruder_clicks += kind == "click_non_approver"
        known = self._pending_requests
        request_id = self._rng.choice(known) if known else uuid.UUID(int=self._rng.getrandbits(128))
        user = f"{INTRUDER_PREFIX}{self._rng.randrange(10)}"
        payload = {
            "type": "block_actions", "user": {"id": user, "username": "intruder"},
            "actions": [{"action_id": "approve", "value": str(request_id), "action_ts": f"{time.time():.6f}"}],
        }  # fmt: skip
        body = urlencode({"payload": json.dumps(payload)}).encode()
        stamp = int(time.time()) - (3_600 if kind == "click_stale" else 0)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if kind != "click_unsigned":
            secret = "not-our-signing-secret" if kind == "click_bad_signature" else SLACK_SECRET
            signature = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
            headers |= {"X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": f"v0={signature}"}
        return body, headers

    async def _read_pending_requests(self) -> None:
        """The approval requests open now (the notifier opens one when a cap declines), kept as they
        were when Postgres is away.
        """
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            connection = await database(self._settings)
            try:
                rows = await connection.fetch(
                    "SELECT request_id FROM notifier.requests WHERE state = 'pending' ORDER BY opened_at DESC LIMIT 50"
                )
            finally:
                await connection.close()
            self._pending_requests = [row["request_id"] for row in rows]

    async def _bad_input(self, kind: str) -> None:
        """POST one bad webhook or Slack click (retried only while its service is down) and tally
        whether it got the refusal or the decline its kind must get; anything else is a surprise,
        kept for the report. A click by a non-approver is acknowledged (Slack wants 200 at once) and
        judged at the end, from what the notifier recorded (`clicks_by_intruders`).
        """
        if kind in BAD_CLICKS:
            if self._notifier_url is None:
                return
            body, headers = await self._bad_click(kind)
            url = f"{self._notifier_url}/slack/interactivity"
        else:
            body, headers = self._bad_webhook(kind)
            url = f"{self._gateway_url}/webhooks/stripe"
        counts = self._tally.bad_inputs.setdefault(kind, {"sent": 0, "as_expected": 0})
        counts["sent"] += 1
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(60):
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code in (502, 503):
                    await asyncio.sleep(0.5)  # starting: the gateway says so, an issuer retries
                    continue
                self._tally.events += 1
                if _as_expected(kind, response):
                    counts["as_expected"] += 1
                else:
                    self._tally.bad_input_surprises.append(f"{kind}: {response.status_code} {response.text[:200]}")
                return
        self._tally.bad_input_surprises.append(f"{kind}: never answered")

    def _issuer_approved(self, authorization_id: str) -> bool:
        """Whether the issuer would settle this authorization: one asked on Kafka (no issuer answer to
        wait for), or a webhook answered approved. A webhook answered decline (the deadline, say) is
        never captured nor reversed by the issuer, even if the authorizer approved it late: its hold
        must go by the gateway's expiry, and a leak shows as `holds_leaked`.
        """
        if not authorization_id.startswith(WEBHOOK_PREFIX):
            return True
        return self._tally.webhook_answers.get(authorization_id) is True

    async def settle_everything(self) -> None:
        """The end: release every hold the issuer knows as approved and not yet settled (full
        reversals). Late approvals of declined webhooks are left to the gateway's expiries.
        """
        for authorization_id in sorted(set(self.approved) - self._settled):
            if not self._issuer_approved(authorization_id):
                continue
            decision = self.approved[authorization_id]
            await self.send(Topic.ISSUER_EVENTS, AuthorizationReversed(
                event_id=uuid.uuid4(), wallet_id=decision.wallet_id, card_id=decision.card_id, issuer=Issuer.STRIPE,
                occurred_at=datetime.now(UTC), issuer_authorization_id=authorization_id,
                amount=decision.amount, full=True))  # fmt: skip
            self._settle(authorization_id)
        for authorization_id, (wallet_id, card_id, amount) in sorted(self._stand_ins.items()):
            await self.send(Topic.ISSUER_EVENTS, AuthorizationReversed(
                event_id=uuid.uuid4(), wallet_id=wallet_id, card_id=card_id, issuer=Issuer.STRIPE,
                occurred_at=datetime.now(UTC), issuer_authorization_id=authorization_id, amount=_usd(amount),
                full=True))  # fmt: skip


# The bad webhooks the workload sends, and what each must get: refused before anything is read
# (unsigned, a signature of another secret, an hour-old timestamp, too large), refused as unreadable
# (malformed, nested 50,000 deep), or declined without a hold (a card not ours, a currency the
# wallet has no rate for; at our deadline when a fault holds the authorizer up).
BAD_INPUTS = ("malformed", "unsigned", "bad_signature", "replayed", "oversized", "nested", "unknown_card",
              "wrong_currency")  # fmt: skip
# Slack clicks: unsigned, signed with another secret, an hour old (refused before anything is read),
# or signed by Slack for a user who approves no wallet (acknowledged, then refused: see the end check).
BAD_CLICKS = ("click_unsigned", "click_bad_signature", "click_stale", "click_non_approver")
_REFUSALS = {
    "click_unsigned": (400, "missing_signature"),
    "click_bad_signature": (401, "invalid_signature"),
    "click_stale": (401, "stale_timestamp"),
    "malformed": (400, "invalid_request"),
    "nested": (400, "invalid_request"),
    "unsigned": (400, "signature_missing_header"),
    "bad_signature": (400, "signature_mismatch"),
    "replayed": (400, "signature_stale_timestamp"),
    "oversized": (413, "payload_too_large"),
}
_DECLINES = {
    "unknown_card": {"card_not_found", "system_unavailable"},  # the latter while Postgres is away
    # No rate for it; or an earlier check declined first (the workload freezes cards), or our deadline.
    "wrong_currency": {"fx_rate_missing", "card_frozen", "deadline_exceeded", "system_unavailable"},
}


def _as_expected(kind: str, response: httpx.Response) -> bool:
    """Whether `response` is the refusal or the decline a bad webhook of `kind` must get."""
    if kind == "click_non_approver":
        return response.status_code == 200  # acknowledged; what it decided is judged at the end
    try:
        body = response.json()
    except ValueError:
        return False
    if kind in _REFUSALS:
        return (response.status_code, body.get("error")) == _REFUSALS[kind]
    reason = body.get("metadata", {}).get("pursestrings_reason")
    return response.status_code == 200 and body.get("approved") is False and reason in _DECLINES[kind]


async def follow_decisions(settings: Settings, workload: Workload, stop: asyncio.Event) -> None:
    """Read auth.decisions from the start: the workload learns which holds exist to clear or reverse."""
    consumer = create_consumer(settings, [topic_name(Topic.AUTH_DECISIONS, settings.topic_prefix)],
                               group_id=f"chaos-{uuid.uuid4().hex[:8]}")  # fmt: skip
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    decision = parse(Topic.AUTH_DECISIONS, record.value or b"")
                    if not isinstance(decision, AuthorizationDecided):
                        continue
                    workload.decided.add(decision.issuer_authorization_id)
                    # An increment's hold is its authorization's: settled with it, never on its own.
                    if decision.approved and not decision.increment_of:
                        workload.seen_approved(decision)
    finally:
        await consumer.stop()


async def prepare(settings: Settings) -> None:
    """The run's topics."""
    await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll `check` until true; fail saying `what` was not reached."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"chaos: {what} not reached within {timeout_s:.0f} s")


async def database(settings: Settings) -> asyncpg.Connection:
    """A connection to the run's database."""
    return await asyncpg.connect(dsn=settings.database_url.get_secret_value(), timeout=10)
