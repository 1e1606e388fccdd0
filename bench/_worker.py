"""The two baselines of bench/authorizer.py, each run as a process of its own like the authorizer.

    python -m bench._worker passthrough SOURCE SINK   # consume → produce, no logic: the ceiling
    python -m bench._worker naive SOURCE SINK         # one row-locked Postgres transaction per request
    python -m bench._worker webhook SOURCE SINK       # HTTP → Kafka → (a passthrough) → Kafka → HTTP,
                                                      # no logic: the ceiling of bench/webhook.py

Settings come from the environment (PURSESTRINGS_*), as for a service. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop
from aiokafka import AIOKafkaConsumer

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


class _Echoes:
    """Futures by value, resolved when the value comes back on the sink topic."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._numbers = itertools.count()

    def expect(self) -> tuple[bytes, asyncio.Future[None]]:
        number = str(next(self._numbers)).encode()
        future = self._pending[number] = asyncio.get_running_loop().create_future()
        return number, future

    def forget(self, number: bytes) -> None:
        self._pending.pop(number, None)

    async def run(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=500, max_records=1_000)).values():
                for record in records:
                    future = self._pending.pop(record.value or b"", None)
                    if future is not None and not future.done():
                        future.set_result(None)


async def _respond(send: Callable[[dict[str, Any]], Awaitable[None]], body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def webhook(settings: Settings, source: str, sink: str) -> None:
    """The ceiling of the webhook path: an HTTP server on the gateway's port (uvicorn, httptools,
    uvloop, as the gateway) that publishes each POST to `source` (acks=all, as the gateway), waits
    for the same value back on `sink` (a passthrough relays it) and answers `{"approved": true}`.
    No signature, no parsing, no Postgres, no framework: what HTTP and two Kafka hops cost here.
    """
    producer = create_producer(settings)
    echoes = _Echoes(create_consumer(settings, [sink], group_id=None, auto_offset_reset="latest"))
    deadline_s = settings.auth_deadline_ms / 1000

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:  # noqa: ANN401 - ASGI
        if scope["type"] != "http":
            return
        more = True
        while more:  # the body, read as the gateway reads it
            more = (await receive()).get("more_body", False)
        if scope["path"] == "/healthz":
            await _respond(send, b"{}")
            return
        number, future = echoes.expect()
        await (await producer.send(source, number, key=number))
        try:
            await asyncio.wait_for(future, deadline_s)
        except TimeoutError:
            echoes.forget(number)
            await _respond(send, b'{"approved": false}')
            return
        await _respond(send, b'{"approved": true}')

    await producer.start()
    await echoes.consumer.start()
    reading = asyncio.create_task(echoes.run())
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=settings.gateway_port, loop="none", http="httptools", lifespan="off",
            log_level="warning", access_log=False,
        )
    )  # fmt: skip
    try:
        await server.serve()  # until SIGTERM (uvicorn handles it)
    finally:
        reading.cancel()
        await echoes.consumer.stop()
        await producer.stop()


def main() -> None:
    """`python -m bench._worker passthrough|naive|webhook SOURCE SINK`."""
    kind, source, sink = sys.argv[1:4]
    settings = load_settings(f"pursestrings-bench-{kind}")
    tune_garbage_collector()
    work = {"passthrough": passthrough, "naive": naive, "webhook": webhook}[kind](settings, source, sink)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as the services run
        runner.run(work)


if __name__ == "__main__":
    main()
