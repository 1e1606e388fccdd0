"""Request/reply over Kafka: each gateway instance reads every partition of `auth.decisions` (no
consumer group: every instance sees every decision, so its own replies too) and resolves the future
of the request it is waiting for, by issuer authorization id. FastStream's `request()` works only
against its in-memory test broker, hence aiokafka here (decision 0006).

The map of pending requests is bounded: past `max_pending` a request is refused at once
(`Overloaded`) and the caller answers decline, rather than queueing past the issuer's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.authorizations import AuthorizationDecided
from schemas.registry import InvalidMessage, parse
from schemas.topics import Topic, topic_name
from services.platform.kafka import create_consumer, partition_count
from services.platform.logging import get_logger
from services.platform.settings import Settings

_log = get_logger("gateway.replies")


class Overloaded(RuntimeError):
    """Too many requests are waiting already."""


class DecisionWaiter:
    """Futures of decisions, by issuer authorization id, resolved from `auth.decisions`."""

    def __init__(self, settings: Settings, max_pending: int) -> None:
        self._settings = settings
        self._max_pending = max_pending
        self._pending: dict[str, asyncio.Future[AuthorizationDecided]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """How many requests wait for their decision now."""
        return len(self._pending)

    async def start(self) -> None:
        """Read every partition of auth.decisions from its end (earlier decisions are not ours)."""
        topic = topic_name(Topic.AUTH_DECISIONS, self._settings.topic_prefix)
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

    def expect(self, authorization_id: str) -> asyncio.Future[AuthorizationDecided]:
        """The future of `authorization_id`'s decision (shared by a retry that arrives meanwhile)."""
        waiting = self._pending.get(authorization_id)
        if waiting is not None:
            return waiting
        if len(self._pending) >= self._max_pending:
            raise Overloaded(f"{len(self._pending)} requests already wait for a decision")
        future: asyncio.Future[AuthorizationDecided] = asyncio.get_running_loop().create_future()
        self._pending[authorization_id] = future
        future.add_done_callback(lambda _: self._forget(authorization_id, future))
        return future

    def _forget(self, authorization_id: str, future: asyncio.Future[AuthorizationDecided]) -> None:
        if self._pending.get(authorization_id) is future:
            del self._pending[authorization_id]

    async def _run(self) -> None:
        assert self._consumer is not None  # noqa: S101 - start() runs first
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=1_000)
            for records in batches.values():
                for record in records:
                    self._resolve(record.value or b"")

    def _resolve(self, value: bytes) -> None:
        if not self._pending:
            return  # nobody waits: skip the parse
        try:
            decision = parse(Topic.AUTH_DECISIONS, value)
        except InvalidMessage as error:
            _log.warning("decision_unreadable", error=str(error).splitlines()[0])
            return
        assert isinstance(decision, AuthorizationDecided)  # noqa: S101 - auth.decisions carries only these
        future = self._pending.get(decision.issuer_authorization_id)
        if future is not None and not future.done():
            future.set_result(decision)
