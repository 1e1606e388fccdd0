"""Health checks for Kafka (a metadata call) and Postgres (a query), and a CLI that waits for them.

`python -m services.platform.health --kafka HOST:PORT --postgres URL --timeout-s 60` exits 0 once
every named dependency answers, 1 when the timeout passes first. Used by deploy/ for readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

_POLL_INTERVAL_S = 0.25


@dataclass(frozen=True)
class HealthResult:
    """One dependency's answer: healthy or not, and what it said."""

    name: str
    healthy: bool
    detail: str


async def check_kafka(bootstrap_servers: str, timeout_s: float = 5.0) -> HealthResult:
    """Healthy when the broker answers a metadata request naming at least one broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        brokers = cluster.get("brokers", [])
        if not brokers:
            return HealthResult(name="kafka", healthy=False, detail="metadata named no broker")
        return HealthResult(
            name="kafka", healthy=True, detail=f"cluster {cluster.get('cluster_id')} with {len(brokers)} broker(s)"
        )
    except Exception as error:  # noqa: BLE001 - any failure to answer is "unhealthy", reported with its text
        return HealthResult(name="kafka", healthy=False, detail=f"{type(error).__name__}: {error}")
    finally:
        await admin.close()


async def check_postgres(dsn: str, timeout_s: float = 5.0) -> HealthResult:
    """Healthy when the server runs `SELECT version()`."""
    try:
        connection = await asyncpg.connect(dsn=dsn, timeout=timeout_s)
    except Exception as error:  # noqa: BLE001 - any failure to answer is "unhealthy", reported with its text
        return HealthResult(name="postgres", healthy=False, detail=f"{type(error).__name__}: {error}")
    try:
        version = await connection.fetchval("SELECT version()", timeout=timeout_s)
        return HealthResult(name="postgres", healthy=True, detail=str(version))
    finally:
        await connection.close()


async def wait_until_healthy(kafka: str | None, postgres: str | None, timeout_s: float) -> list[HealthResult]:
    """Poll every named dependency until all are healthy or `timeout_s` passes; the last answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        checks = []
        if kafka:
            checks.append(check_kafka(kafka))
        if postgres:
            checks.append(check_postgres(postgres))
        results = list(await asyncio.gather(*checks))
        if all(result.healthy for result in results) or time.monotonic() >= deadline:
            return results
        await asyncio.sleep(_POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print each dependency's state; exit 0 only when all are healthy."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers, host:port")
    parser.add_argument("--postgres", help="postgresql:// URL")
    parser.add_argument("--timeout-s", type=float, default=0.0, help="keep trying this long")
    arguments = parser.parse_args(argv)
    if not arguments.kafka and not arguments.postgres:
        parser.error("name at least one of --kafka and --postgres")
    results = asyncio.run(wait_until_healthy(arguments.kafka, arguments.postgres, arguments.timeout_s))
    for result in results:
        print(f"{result.name}: {'ok' if result.healthy else 'unhealthy'} ({result.detail})")
    return 0 if all(result.healthy for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
