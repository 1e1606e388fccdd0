"""`Publisher`: a broker whose idempotent producer a Kafka restart left refusing every send gets a
new producer (the broker restarted) and the send goes again; the real restart is in the chaos runs.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from services.platform.kafka import Publisher


class _Broker:
    """Refuses every send with `error` until restarted; counts restarts and what it sent."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.restarts = 0
        self.sent: list[bytes] = []

    async def publish(self, payload: bytes, *, topic: str, key: bytes) -> None:  # noqa: ARG002
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        self.sent.append(payload)

    async def stop(self) -> None:
        await asyncio.sleep(0)

    async def start(self) -> None:
        self.restarts += 1
        self.error = None


async def test_a_producer_left_out_of_sequence_is_renewed_once_and_the_sends_go() -> None:
    """Three sends fail on the same broken producer: one renewal, and all three are sent."""
    broker = _Broker(OutOfOrderSequenceNumber())
    publisher = Publisher(broker)  # type: ignore[arg-type]
    await asyncio.gather(*(publisher.publish(p, topic="t", key=b"k") for p in (b"1", b"2", b"3")))
    assert (broker.restarts, sorted(broker.sent)) == (1, [b"1", b"2", b"3"])


async def test_a_broker_that_is_away_is_not_renewed() -> None:
    """Kafka unreachable: the error goes to the caller (who declines); no restart."""
    broker = _Broker(KafkaConnectionError("refused"))
    with pytest.raises(KafkaConnectionError):
        await Publisher(broker).publish(b"1", topic="t", key=b"k")  # type: ignore[arg-type]
    assert broker.restarts == 0
