"""Publishing contracts to, and collecting them from, the real broker in tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Self

from schemas.registry import Message, parse, serialize
from schemas.topics import Topic, message_key, topic_name
from services.platform.kafka import create_consumer, create_producer
from services.platform.settings import Settings


async def publish(settings: Settings, topic: Topic, messages: Sequence[Message]) -> None:
    """Send `messages` to `topic`, keyed by wallet id, and wait until every one is acknowledged."""
    producer = create_producer(settings)
    await producer.start()
    try:
        sent = [
            await producer.send(topic_name(topic, settings.topic_prefix), serialize(m), key=message_key(m))
            for m in messages
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def publish_raw(settings: Settings, topic: Topic, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Send raw (key, value) records, well-formed or not."""
    producer = create_producer(settings)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic_name(topic, settings.topic_prefix), value, key=key)
    finally:
        await producer.stop()


class Collector:
    """Reads a topic from the beginning in the background; tests wait for what they expect."""

    def __init__(self, settings: Settings, topic: Topic, *, dead_letter: bool = False) -> None:
        self._name = topic_name(topic, settings.topic_prefix, dead_letter=dead_letter)
        self._topic, self._dead_letter = topic, dead_letter
        self._consumer = create_consumer(settings, [self._name], group_id=f"collector-{uuid.uuid4().hex[:8]}")
        self.items: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    value = record.value or b""
                    self.items.append(value if self._dead_letter else parse(self._topic, value))
            self._arrived.set()

    async def wait_for(self, done: Callable[[list[Any]], bool], timeout_s: float = 60) -> list[Any]:
        """Wait until `done(items)` holds; fail with what arrived if it does not in time."""
        async with asyncio.timeout(timeout_s):
            while True:
                self._arrived.clear()
                if done(self.items):
                    return self.items
                await self._arrived.wait()


async def apply_commands(settings: Settings, commands: Sequence[Message], timeout_s: float = 60) -> list[Any]:
    """Publish wallet commands and wait until the authorizer has answered each one on wallet.events,
    as the management API does before it returns.
    """
    async with Collector(settings, Topic.WALLET_EVENTS) as events:
        await publish(settings, Topic.WALLET_COMMANDS, commands)
        wanted = {getattr(command, "command_id", None) for command in commands}
        return await events.wait_for(lambda items: wanted <= {e.command_id for e in items}, timeout_s)
