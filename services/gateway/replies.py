"""Request/reply over Kafka: each gateway instance reads every partition of a reply topic (no
consumer group: every instance sees every reply, so its own too) and resolves the future of the
request it is waiting for, by a key: the issuer authorization id on `auth.decisions`, the command
id on `wallet.events`. FastStream's `request()` works only against its in-memory test broker, hence
aiokafka here (decision 0006).

The map of pending requests is bounded: past `max_pending` a request is refused at once
(`Overloaded`) and the caller answers decline, rather than queueing past the issuer's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ValidationError

from schemas.authorizations import DecisionOutcome
from schemas.registry import InvalidMessage, parse
from schemas.topics import Topic, topic_name
from schemas.wallet import AnyWalletEvent
from services.platform.kafka import create_consumer, partition_count
from services.platform.logging import get_logger
from services.platform.settings import Settings

_log = get_logger("gateway.replies")


class Overloaded(RuntimeError):
    """Too many requests are waiting already."""


Reply = TypeVar("Reply", bound=BaseModel)


class Replies(Generic[Reply]):
    """Futures of replies on `topic`, by the key `key_of` reads from each (None: not a reply)."""

    def __init__(
        self,
        settings: Settings,
        topic: Topic,
        key_of: Callable[[BaseModel], str | None],
        max_pending: int,
        read: Callable[[bytes], BaseModel] | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._key_of = key_of
        # How a reply is read: by default the topic's whole contract, validated.
        self._read = read or partial(parse, topic)
        self._max_pending = max_pending
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """How many requests wait for their decision now."""
        return len(self._pending)

    async def start(self) -> None:
        """Read every partition of the topic from its end (earlier replies are not ours)."""
        topic = topic_name(self._topic, self._settings.topic_prefix)
        count = await partition_count(self._settings.kafka_bootstrap_servers, topic)
        if not count:
            raise RuntimeError(f"topic {topic} has no partitions (was it created?)")
        partitions = [TopicPartition(topic, p) for p in range(count)]
        self._consumer = create_consumer(self._settings, [], group_id=None, auto_offset_reset="latest")
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end now: a reply produced from here on is seen
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop reading; whoever still waits times out as usual."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def expect(self, key: str) -> asyncio.Future[Reply]:
        """The future of `key`'s reply (shared by a retry that arrives meanwhile)."""
        waiting = self._pending.get(key)
        if waiting is not None:
            return waiting
        if len(self._pending) >= self._max_pending:
            raise Overloaded(f"{len(self._pending)} requests already wait for a reply")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        future.add_done_callback(lambda _: self._forget(key, future))
        return future

    def _forget(self, key: str, future: asyncio.Future[Reply]) -> None:
        if self._pending.get(key) is future:
            del self._pending[key]

    async def _run(self) -> None:
        assert self._consumer is not None  # noqa: S101 - start() runs first
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=1_000)
            except Exception as error:  # noqa: BLE001 - a reader that dies would leave every request to time out
                _log.error("replies_read_failed", topic=self._topic.value, error=str(error)[:300])
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for record in records:
                    self._resolve(record.value or b"")

    def _resolve(self, value: bytes) -> None:
        if not self._pending:
            return  # nobody waits: skip the parse
        try:
            reply = self._read(value)
        except InvalidMessage as error:
            _log.warning("reply_unreadable", topic=self._topic.value, error=str(error).splitlines()[0])
            return
        key = self._key_of(reply)
        future = self._pending.get(key) if key is not None else None
        if future is not None and not future.done():
            future.set_result(reply)  # type: ignore[arg-type]


def decision_replies(settings: Settings, max_pending: int) -> Replies[DecisionOutcome]:
    """Decisions on auth.decisions, by issuer authorization id: only what answering reads of each."""
    return Replies(
        settings, Topic.AUTH_DECISIONS, lambda d: getattr(d, "issuer_authorization_id", None), max_pending,
        read=_decision_outcome,
    )  # fmt: skip


def _decision_outcome(value: bytes) -> DecisionOutcome:
    """The outcome of the decision `value` encodes, the rest of it skipped (`DecisionOutcome`)."""
    try:
        return DecisionOutcome.model_validate_json(value)
    except ValidationError as error:
        raise InvalidMessage(Topic.AUTH_DECISIONS, error) from error


def command_replies(settings: Settings, max_pending: int) -> Replies[AnyWalletEvent]:
    """What each wallet command became on wallet.events, by command id."""

    def command_of(event: BaseModel) -> str | None:
        command_id = getattr(event, "command_id", None)
        return None if command_id is None else str(command_id)

    return Replies(settings, Topic.WALLET_EVENTS, command_of, max_pending)
