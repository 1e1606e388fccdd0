"""`make bench` → bench/results/authorizer.json: the authorizer's sustained decisions/s and latency,
measured in one run against (1) an aiokafka consume→produce pass-through with no logic, the ceiling
of this stack, and (2) a naive authorizer doing one row-locked Postgres transaction per request.

All three run in this process, on the same real Kafka and Postgres, fed the same pre-serialized
requests; latency is from a request's send to its decision's receipt (one clock).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from schemas.authorizations import AuthorizationRequested
from schemas.common import Issuer
from schemas.money import Money
from schemas.policies import WalletCaps
from schemas.registry import parse, serialize
from schemas.topics import Topic, topic_name
from schemas.wallet import CreateCard, CreateWallet
from services.authorizer.runtime import Authorizer
from services.platform.kafka import create_consumer, create_producer, ensure_topics, project_topics
from services.platform.logging import configure_logging
from services.platform.migrations import apply_migrations
from services.platform.postgres import create_pool
from services.platform.settings import Settings, load_settings
from tests.support.samples import MERCHANT

RESULTS = Path(__file__).parent / "results" / "authorizer.json"
WALLETS = 64
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
PACED_RATE_PER_S = 5_000
PACED_SECONDS = 3


def _requests(count: int, tag: str) -> list[tuple[str, bytes, bytes]]:
    now = datetime.now(UTC)
    rows = []
    for index in range(count):
        wallet_id = f"bw{index % WALLETS}"
        request = AuthorizationRequested(
            event_id=uuid.uuid4(), wallet_id=wallet_id, card_id=f"bc{index % WALLETS}", issuer=Issuer.STRIPE,
            issuer_authorization_id=f"{tag}{index}", amount=Money.of(100, "USD"),
            merchant_amount=Money.of(100, "USD"), merchant=MERCHANT, requested_at=now,
            deadline_at=now + timedelta(hours=1),
        )  # fmt: skip
        rows.append((request.issuer_authorization_id, wallet_id.encode(), serialize(request)))
    return rows


async def _drive(
    settings: Settings, source: str, sink: str, requests: list[tuple[str, bytes, bytes]], rate_per_s: float | None
) -> dict[str, float]:
    """Send `requests` (paced or flat out) and time each answer on `sink`; return rate and latency."""
    sent: dict[str, int] = {}
    latencies_us: list[float] = []
    consumer = create_consumer(settings, [sink], group_id=f"bench-{uuid.uuid4().hex[:8]}", auto_offset_reset="latest")
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # join and position at the end before sending
    producer = create_producer(settings)
    await producer.start()

    async def collect() -> None:
        while len(latencies_us) < len(requests):
            for records in (await consumer.getmany(timeout_ms=100)).values():
                received = time.perf_counter_ns()
                for record in records:
                    auth = json.loads(record.value or b"{}").get("issuer_authorization_id")
                    if auth in sent:
                        latencies_us.append((received - sent.pop(auth)) / 1000)

    collector = asyncio.create_task(collect())
    started = time.perf_counter()
    for index, (auth, key, value) in enumerate(requests):
        if rate_per_s is not None:
            await asyncio.sleep(max(0.0, started + index / rate_per_s - time.perf_counter()))
        sent[auth] = time.perf_counter_ns()
        await producer.send(source, value, key=key)
    await producer.flush()
    await asyncio.wait_for(collector, timeout=300)
    elapsed = time.perf_counter() - started
    await producer.stop()
    await consumer.stop()
    ordered = sorted(latencies_us)
    return {
        "per_s": len(requests) / elapsed,
        "p50_ms": ordered[len(ordered) // 2] / 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] / 1000,
        "mean_ms": statistics.fmean(ordered) / 1000,
    }


@asynccontextmanager
async def _background(work: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    task = asyncio.create_task(work())
    try:
        yield
    finally:
        task.cancel()


async def _relay(settings: Settings, source: str, sink: str, answer: Callable[[bytes], Awaitable[bytes]]) -> None:
    """Consume `source` in batches and produce `answer(value)` for each record to `sink`."""
    consumer = create_consumer(settings, [source], group_id=f"relay-{uuid.uuid4().hex[:8]}")
    producer = create_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=100, max_records=500)).values():
                for record in records:
                    await producer.send(sink, await answer(record.value or b""), key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()


async def _passthrough(settings: Settings, source: str, sink: str) -> None:
    """The ceiling: consume a batch, produce each value unchanged, no logic, no database."""

    async def unchanged(value: bytes) -> bytes:
        return value

    await _relay(settings, source, sink, unchanged)


async def _naive(settings: Settings, pool: asyncpg.Pool, source: str, sink: str) -> None:
    """The usual design: one transaction per request, the wallet row locked, then publish."""

    async def decide_in_postgres(value: bytes) -> bytes:
        request = parse(Topic.AUTH_REQUESTS, value)
        assert isinstance(request, AuthorizationRequested)  # noqa: S101 - bench input is ours
        async with pool.acquire() as connection, connection.transaction():
            spent = await connection.fetchval(
                "SELECT spent_minor FROM bench_naive WHERE wallet_id = $1 FOR UPDATE", request.wallet_id
            )
            approved = spent + request.amount.amount_minor <= 10**9
            if approved:
                await connection.execute(
                    "UPDATE bench_naive SET spent_minor = spent_minor + $2 WHERE wallet_id = $1",
                    request.wallet_id, request.amount.amount_minor,
                )  # fmt: skip
        return json.dumps({"issuer_authorization_id": request.issuer_authorization_id, "approved": approved}).encode()

    await _relay(settings, source, sink, decide_in_postgres)


async def _prepare(settings: Settings, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await apply_migrations(connection)
        await connection.execute("DROP TABLE IF EXISTS bench_naive")
        await connection.execute("CREATE TABLE bench_naive (wallet_id text PRIMARY KEY, spent_minor bigint NOT NULL)")
        await connection.executemany("INSERT INTO bench_naive VALUES ($1, 0)", [(f"bw{i}",) for i in range(WALLETS)])
    specs = project_topics(settings)
    extra = [
        type(specs[0])(f"{settings.topic_prefix}.bench.{name}", settings.kafka_partitions) for name in ("in", "out")
    ]
    await ensure_topics(settings.kafka_bootstrap_servers, [*specs, *extra])
    producer = create_producer(settings)
    await producer.start()
    now = datetime.now(UTC)
    caps = WalletCaps(rolling_24h=Money.of(10**10, "USD"))
    for index in range(WALLETS):
        fields: dict[str, Any] = {"wallet_id": f"bw{index}", "actor": "bench", "issued_at": now}
        for command in (
            CreateWallet(command_id=uuid.uuid4(), **fields, caps=caps),
            CreateCard(command_id=uuid.uuid4(), **fields, card_id=f"bc{index}", issuer=Issuer.STRIPE,
                       issuer_card_token=f"bt{index}", last4="4242"),
        ):  # fmt: skip
            await producer.send(topic_name(Topic.WALLET_COMMANDS, settings.topic_prefix), serialize(command),
                                key=command.wallet_id.encode())  # fmt: skip
    await producer.stop()


async def _measure() -> dict[str, Any]:
    base = load_settings("pursestrings-bench")
    settings = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}", "kafka_partitions": 12})
    pool = await create_pool(settings)
    requests_topic = topic_name(Topic.AUTH_REQUESTS, settings.topic_prefix)
    decisions_topic = topic_name(Topic.AUTH_DECISIONS, settings.topic_prefix)
    bench_in, bench_out = f"{settings.topic_prefix}.bench.in", f"{settings.topic_prefix}.bench.out"
    await _prepare(settings, pool)
    results: dict[str, Any] = {}
    async with _background(lambda: _passthrough(settings, bench_in, bench_out)):
        results["passthrough"] = await _drive(settings, bench_in, bench_out, _requests(REQUESTS, "p"), None)
    async with _background(lambda: _naive(settings, pool, bench_in, bench_out)):
        results["naive"] = await _drive(settings, bench_in, bench_out, _requests(REQUESTS // 4, "n"), None)
    authorizer = Authorizer(settings, pool)
    await authorizer.start()
    async with _background(authorizer.run):
        await _drive(settings, requests_topic, decisions_topic, _requests(WALLETS * 4, "w"), None)  # warm the cache
        authorizer.seconds_by_stage.update(dict.fromkeys(authorizer.seconds_by_stage, 0.0))
        results["authorizer"] = await _drive(settings, requests_topic, decisions_topic, _requests(REQUESTS, "a"), None)
        results["authorizer_stage_seconds"] = {k: round(v, 2) for k, v in authorizer.seconds_by_stage.items()}
        paced = _requests(PACED_RATE_PER_S * PACED_SECONDS, "l")
        results["authorizer_paced"] = await _drive(settings, requests_topic, decisions_topic, paced, PACED_RATE_PER_S)
    await authorizer.stop()
    await pool.close()
    return results


def main() -> None:
    """Run the three measurements and write the ratios."""
    configure_logging("warning")
    results = asyncio.run(_measure())
    ours, ceiling, naive = results["authorizer"], results["passthrough"], results["naive"]
    summary = {
        "decisions_per_s": round(ours["per_s"]),
        "passthrough_per_s": round(ceiling["per_s"]),
        "naive_per_s": round(naive["per_s"]),
        "ratio_vs_passthrough": round(ours["per_s"] / ceiling["per_s"], 3),
        "ratio_vs_naive": round(ours["per_s"] / naive["per_s"], 2),
        "p50_ms_at_5k": round(results["authorizer_paced"]["p50_ms"], 2),
        "p99_ms_at_5k": round(results["authorizer_paced"]["p99_ms"], 2),
        "achieved_paced_per_s": round(results["authorizer_paced"]["per_s"]),
        "cores": os.cpu_count(),
        "requests": REQUESTS,
        "details": results,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    printed = {key: value for key, value in summary.items() if key != "details"}
    printed["authorizer_stage_seconds"] = results["authorizer_stage_seconds"]
    print(json.dumps(printed, indent=2))


if __name__ == "__main__":
    main()
