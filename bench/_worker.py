"""The two baselines of bench/authorizer.py, each run as a process of its own like the authorizer.

    python -m bench._worker passthrough SOURCE SINK   # consume → produce, no logic: the ceiling
    python -m bench._worker naive SOURCE SINK         # one row-locked Postgres transaction per request

Settings come from the environment (PURSESTRINGS_*), as for a service. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable

from schemas.authorizations import AuthorizationRequested
from schemas.registry import parse
from schemas.topics import Topic
from services.platform.kafka import create_consumer, create_producer
from services.platform.postgres import create_pool
from services.platform.service import tune_garbage_collector
from services.platform.settings import Settings, load_settings

NAIVE_CAP_MINOR = 10**12


async def _relay(settings: Settings, source: str, sink: str, answer: Callable[[bytes], Awaitable[bytes]]) -> None:
    """Consume `source` in batches and produce `answer(value)` for each record to `sink`."""
    consumer = create_consumer(settings, [source], group_id=f"relay-{uuid.uuid4().hex[:8]}")
    producer = create_producer(settings)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signal_number, stop.set)
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100, max_records=500)).values():
                for record in records:
                    await producer.send(sink, await answer(record.value or b""), key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()


async def passthrough(settings: Settings, source: str, sink: str) -> None:
    """The ceiling: consume a batch, produce each value unchanged, no logic, no database."""

    async def unchanged(value: bytes) -> bytes:
        return value

    await _relay(settings, source, sink, unchanged)


async def naive(settings: Settings, source: str, sink: str) -> None:
    """The usual design: one transaction per request, the wallet row locked, then publish."""
    pool = await create_pool(settings)
    async with pool.acquire() as connection:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_naive (wallet_id text PRIMARY KEY, spent_minor bigint NOT NULL)"
        )

    async def decide_in_postgres(value: bytes) -> bytes:
        request = parse(Topic.AUTH_REQUESTS, value)
        assert isinstance(request, AuthorizationRequested)  # noqa: S101 - bench input is ours
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("INSERT INTO bench_naive VALUES ($1, 0) ON CONFLICT DO NOTHING", request.wallet_id)
            spent = await connection.fetchval(
                "SELECT spent_minor FROM bench_naive WHERE wallet_id = $1 FOR UPDATE", request.wallet_id
            )
            approved = spent + request.amount.amount_minor <= NAIVE_CAP_MINOR
            if approved:
                await connection.execute(
                    "UPDATE bench_naive SET spent_minor = spent_minor + $2 WHERE wallet_id = $1",
                    request.wallet_id, request.amount.amount_minor,
                )  # fmt: skip
        return json.dumps({"issuer_authorization_id": request.issuer_authorization_id, "approved": approved}).encode()

    try:
        await _relay(settings, source, sink, decide_in_postgres)
    finally:
        await pool.close()


def main() -> None:
    """`python -m bench._worker passthrough|naive SOURCE SINK`."""
    kind, source, sink = sys.argv[1:4]
    settings = load_settings(f"pursestrings-bench-{kind}")
    tune_garbage_collector()
    asyncio.run({"passthrough": passthrough, "naive": naive}[kind](settings, source, sink))


if __name__ == "__main__":
    main()
