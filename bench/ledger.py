"""`make bench` → bench/results/ledger.json: can the ledger keep up with the authorizer?

In one run, on the real Kafka and a fresh Postgres database: the authorizer (its real entry point, in
a process of its own) decides REQUESTS authorizations flat out, timed as in bench/authorizer.py; then
the ledger (`python -m services.ledger`, its own process) starts on the same topics and journals every
decision from the beginning. Its rate is measured from its first recorded entry to its last (process
start-up and the group join are left out), against the authorizer's decision rate from the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench._infra import fresh_database, process
from bench.authorizer import WARM_UP, _drive, _prepare, _requests
from schemas.topics import Topic, topic_name
from services.platform.logging import configure_logging
from services.platform.settings import load_settings

RESULTS = Path(__file__).parent / "results" / "ledger.json"
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
_POLL_S = 0.01


async def _ledger_rate(database_url: str, expected: int) -> dict[str, float]:
    """Poll the journal until `expected` decisions are in; the rate between the first and the last."""
    connection = await asyncpg.connect(dsn=database_url)
    query = "SELECT count(*) FROM ledger.entries WHERE kind = 'decision'"
    try:
        async with asyncio.timeout(300):
            while (first := await connection.fetchval(query)) == 0:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(_POLL_S)
            started = time.perf_counter()
            while (count := await connection.fetchval(query)) < expected:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(_POLL_S)
            elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return {"entries": count, "first_seen": first, "seconds": round(elapsed, 3), "per_s": (count - first) / elapsed}


async def _measure() -> dict[str, Any]:
    base = load_settings("pursestrings-bench")
    base = base.model_copy(update={"topic_prefix": f"benchl-{uuid.uuid4().hex[:8]}", "kafka_partitions": 12})
    async with fresh_database(base) as settings:
        await _prepare(settings)
        topics = (topic_name(Topic.AUTH_REQUESTS, settings.topic_prefix),
                  topic_name(Topic.AUTH_DECISIONS, settings.topic_prefix))  # fmt: skip
        # Every other request of the authorizer bench's list: half as many decisions for the ledger to record.
        warm_up, measured = _requests(WARM_UP, "w")[::2], _requests(REQUESTS, "a")[::2]
        with process(
            [sys.executable, "-m", "services.authorizer"], settings, PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0"
        ) as system:
            await _drive(settings, *topics, warm_up, None, system=system)
            authorizer = await _drive(settings, *topics, measured, None, system=system)
        expected = len(warm_up) + len(measured)
        with process([sys.executable, "-m", "services.ledger"], settings, PURSESTRINGS_LEDGER_HEALTH_PORT="0"):
            ledger = await _ledger_rate(settings.database_url.get_secret_value(), expected)
    return {"authorizer": authorizer, "ledger": ledger}


def main() -> None:
    """Measure both rates in one run and write the ratio."""
    configure_logging("warning")
    results = asyncio.run(_measure())
    summary = {
        "events_per_s": round(results["ledger"]["per_s"]),
        "authorizer_decisions_per_s": round(results["authorizer"]["per_s"]),
        "ratio_vs_authorizer": round(results["ledger"]["per_s"] / results["authorizer"]["per_s"], 2),
        "target_ratio": 1.0,
        "cores": os.cpu_count(),
        "requests": REQUESTS,
        "details": results,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "details"}))


if __name__ == "__main__":
    main()
