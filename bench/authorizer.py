"""`make bench` → bench/results/authorizer.json: the authorizer's sustained decisions/s and latency,
measured in one run against (1) an aiokafka consume→produce pass-through with no logic, the ceiling
of this stack, and (2) a naive authorizer doing one row-locked Postgres transaction per request.

Each system under test runs as a process of its own (the authorizer through its real entry point,
`python -m services.authorizer`; the baselines through `bench._worker`), on the same real Kafka and a
fresh Postgres database, fed the same pre-serialized requests by this process; latency is from a
request's send to its decision's receipt (one clock). Every system is warmed up (group joined,
wallets cached) before it is timed. Last, a second authorizer instance joins the group and the
flat-out run is repeated on both (`decisions_per_s_two_instances`): what scaling out by partitions
gives on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._decide import decide_us
from bench._infra import (
    Running,
    baseline_topics,
    cpu_seconds,
    cpu_us_per_request,
    ensure_baseline_topics,
    fresh_database,
    process,
    service_command,
    worker_command,
)
from schemas.authorizations import AuthorizationRequested
from schemas.common import Issuer
from schemas.money import Money
from schemas.policies import WalletCaps
from schemas.registry import serialize
from schemas.topics import Topic, topic_name
from schemas.wallet import CreateCard, CreateWallet
from services.platform.kafka import TopicSpec, create_consumer, create_producer, ensure_topics, project_topics
from services.platform.logging import configure_logging
from services.platform.settings import Settings, load_settings
from tests.support.samples import MERCHANT

RESULTS = Path(__file__).parent / "results" / "authorizer.json"
WALLETS = 64
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
PACED_RATE_PER_S = 5_000
PACED_SECONDS = 3
LIGHT_RATE_PER_S = 1_000
# A paced run sends what is due at most every millisecond, in one go (5 requests a tick at 5,000/s,
# 1 at 1,000/s), rather than sleeping before each request: this driver shares the machine's two
# cores with what it measures, and a timer per request cost it ~116 us of CPU per request at
# 5,000/s. Each request is timed from its own send, so a burst is not counted as one.
PACING_TICK_S = 0.001
WARM_UP = WALLETS * 4
# A drain run: this many requests produced before the system starts, then timed from its tenth
# answer in a hundred to its last (start-up and the first fetches left out; the driver only polls
# end offsets meanwhile, so it does not compete). The pass-through drains four times as many: it
# goes through 40,000 in under a second, where the polls' 20 ms would weigh.
DRAIN_REQUESTS = int(os.environ.get("BENCH_DRAIN_REQUESTS", "40000"))
DRAIN_PASSTHROUGH_REQUESTS = DRAIN_REQUESTS * 4
DRAIN_WARM_SHARE = 0.1
DRAIN_POLL_S = 0.02
BROKER_WARM_UP = 20_000
# BENCH_PROFILE=1 records where the authorizer's time goes (folded stacks, for flamegraph tools).
PROFILE = RESULTS.with_name("authorizer-profile.txt") if os.environ.get("BENCH_PROFILE") else None
DRAIN_PROFILE = RESULTS.with_name("authorizer-drain-profile.txt") if PROFILE else None


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


def _paced(tag: str) -> tuple[list[tuple[str, bytes, bytes]], float]:
    """Requests to send at 5,000/s, and that rate."""
    return _requests(PACED_RATE_PER_S * PACED_SECONDS, tag), PACED_RATE_PER_S


def _light(tag: str) -> tuple[list[tuple[str, bytes, bytes]], float]:
    """Requests to send at 1,000/s, and that rate."""
    return _requests(LIGHT_RATE_PER_S * PACED_SECONDS, tag), LIGHT_RATE_PER_S


async def _drive(
    settings: Settings,
    source: str,
    sink: str,
    requests: list[tuple[str, bytes, bytes]],
    rate_per_s: float | None,
    *,
    system: Running | tuple[Running, ...],
) -> dict[str, Any]:
    """Send `requests` (paced or flat out) and time each answer on `sink`; return rate, latency and
    CPU time per request of `system` (all its instances together), Postgres, Kafka and this driver.
    """
    instances = system if isinstance(system, tuple) else (system,)
    roles = {f"system{index}": running for index, running in enumerate(instances)}
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
    cpu_before = cpu_seconds(roles)
    started = time.perf_counter()
    index, tick = 0, started
    while index < len(requests):
        upto = len(requests)
        if rate_per_s is not None:  # what is due, at most every PACING_TICK_S (see there)
            now = time.perf_counter()
            await asyncio.sleep(max(0.0, started + index / rate_per_s - now, tick - now))
            tick = time.perf_counter() + PACING_TICK_S
            upto = min(upto, max(index + 1, int((tick - PACING_TICK_S - started) * rate_per_s) + 1))
        for auth, key, value in requests[index:upto]:
            sent[auth] = time.perf_counter_ns()
            await producer.send(source, value, key=key)
        index = upto
    await producer.flush()
    await asyncio.wait_for(collector, timeout=300)
    elapsed = time.perf_counter() - started
    by_role = cpu_us_per_request(cpu_before, cpu_seconds(roles), len(requests))
    cpu = {role: value for role, value in by_role.items() if role not in roles}
    cpu["system"] = round(sum(value for role, value in by_role.items() if role in roles), 1)
    await producer.stop()
    await consumer.stop()
    ordered = sorted(latencies_us)
    return {
        "per_s": len(requests) / elapsed,
        "p50_ms": ordered[len(ordered) // 2] / 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] / 1000,
        "mean_ms": statistics.fmean(ordered) / 1000,
        "cpu_us_per_request": cpu,
    }


async def _drain(
    settings: Settings, source: str, sink: str, requests: list[tuple[str, bytes, bytes]], command: list[str], **env: str
) -> dict[str, Any]:
    """Produce `requests` to `source` with nothing reading them, then start `command` and time its
    drain of that backlog: from the moment a tenth of its answers are on `sink` to the moment the last is.
    Meanwhile this driver only asks the broker for `sink`'s end offsets every DRAIN_POLL_S, so the
    system under test has the cores to itself with Kafka and Postgres; CPU per request of each
    process is read over the same window.
    """
    producer = create_producer(settings)
    await producer.start()
    for _, key, value in requests:
        await producer.send(source, value, key=key)
    await producer.flush()
    await producer.stop()
    probe = create_consumer(settings, [], group_id=None)
    await probe.start()
    try:
        partitions = [TopicPartition(sink, p) for p in range(settings.kafka_partitions)]  # as the bench made them
        start = sum((await probe.end_offsets(partitions)).values())
        with process(command, settings, PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0", **env) as system:
            roles = {"system0": system}
            first = await _answered(probe, partitions, start, max(1, int(len(requests) * DRAIN_WARM_SHARE)))
            cpu_before, began = cpu_seconds(roles), time.perf_counter()
            await _answered(probe, partitions, start, len(requests))
            elapsed, cpu_after = time.perf_counter() - began, cpu_seconds(roles)
    finally:
        await probe.stop()
    answered = len(requests) - first  # those after the poll that saw a tenth
    by_role = cpu_us_per_request(cpu_before, cpu_after, answered)
    cpu = {role: value for role, value in by_role.items() if role not in roles}
    cpu["system"] = by_role.get("system0", 0.0)
    stages = _stage_seconds(system.lines)  # the authorizer's own split and its collector's time
    return {"per_s": answered / elapsed, "requests": len(requests), "cpu_us_per_request": cpu, "stages": stages}


async def _answered(
    probe: AIOKafkaConsumer, partitions: list[TopicPartition], start: int, count: int, timeout_s: float = 300
) -> int:
    """Wait until at least `count` answers are on the sink past `start`; return how many there are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        there: int = sum((await probe.end_offsets(partitions)).values()) - start
        if there >= count:
            return there
        await asyncio.sleep(DRAIN_POLL_S)
    raise TimeoutError(f"fewer than {count} answers within {timeout_s:.0f} s")


async def _prepare(settings: Settings) -> None:
    """Topics (the project's and the baselines' in/out) and the bench's wallets and cards."""
    await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))
    await ensure_baseline_topics(settings)
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


async def _epochs(settings: Settings) -> dict[tuple[str, int], int]:
    """The authorizer's epoch of each partition (a claim takes a new one)."""
    connection = await asyncpg.connect(dsn=settings.database_url.get_secret_value(), timeout=10)
    try:
        rows = await connection.fetch("SELECT topic, partition, epoch FROM authorizer.partition_offsets")
    finally:
        await connection.close()
    return {(row["topic"], row["partition"]): row["epoch"] for row in rows}


async def _reassigned(settings: Settings, before: dict[tuple[str, int], int], timeout_s: float = 60) -> None:
    """Wait until every partition was claimed again (the rebalance a joining instance causes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = await _epochs(settings)
        if all(now.get(key, 0) > epoch for key, epoch in before.items()):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the partitions were not claimed again within {timeout_s:.0f} s")


def _stage_seconds(lines: list[str]) -> dict[str, float | int]:
    """The authorizer's own split of its batch time, from the log line it writes when it stops."""
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "authorizer_stopped":
            split = {key: round(value, 2) for key, value in record["seconds_by_stage"].items()}
            return split | {key: record.get(key) for key in ("batches", "records", "gc_seconds", "gc_collections")}
    return {}


async def _measure() -> dict[str, Any]:
    base = load_settings("pursestrings-bench")
    base = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}", "kafka_partitions": 12})
    results: dict[str, Any] = {}
    async with fresh_database(base) as settings:
        await _prepare(settings)
        requests_topic = topic_name(Topic.AUTH_REQUESTS, settings.topic_prefix)
        decisions_topic = topic_name(Topic.AUTH_DECISIONS, settings.topic_prefix)
        bench_in, bench_out = baseline_topics(settings)
        with process(worker_command("passthrough", bench_in, bench_out), settings) as system:
            drive = partial(_drive, settings, bench_in, bench_out, system=system)
            # The first run also warms the broker: a JVM just started (as `make bench` may have done)
            # spends seconds compiling its hot paths, which would slow the ceiling and flatter the ratio.
            await drive(_requests(BROKER_WARM_UP, "pw"), None)
            results["passthrough"] = await drive(_requests(REQUESTS, "p"), None)
            results["passthrough_light"] = await drive(*_light("pm"))
            # What the driver itself can offer at 5,000/s, against a system that adds almost nothing.
            results["passthrough_paced"] = await drive(*_paced("pp"))
        with process(worker_command("naive", bench_in, bench_out), settings) as system:
            drive = partial(_drive, settings, bench_in, bench_out, system=system)
            await drive(_requests(WARM_UP, "nw"), None)
            results["naive"] = await drive(_requests(REQUESTS // 8, "n"), None)
        # With BENCH_PROFILE, a CPU-time profile of the authorizer process only (bench/_profiled.py).
        with process(
            service_command("services.authorizer", PROFILE), settings, PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0"
        ) as system:
            drive = partial(_drive, settings, requests_topic, decisions_topic, system=system)
            await drive(_requests(WARM_UP, "w"), None)
            results["authorizer"] = await drive(_requests(REQUESTS, "a"), None)
            results["authorizer_paced"] = await drive(*_paced("l"))
            # Latency below saturation too: at 5,000/s a slower system measures its queue, not itself.
            results["authorizer_light"] = await drive(*_light("m"))
            # Scaling out: a second instance joins the group and takes half the partitions. One
            # instance is bound by its one core; this says what the same machine gives with two.
            epochs = await _epochs(settings)
            with process(
                service_command("services.authorizer"), settings, PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0"
            ) as second:
                await _reassigned(settings, epochs)
                both = partial(_drive, settings, requests_topic, decisions_topic, system=(system, second))
                await both(_requests(WARM_UP, "tw"), None)  # each instance caches its wallets again
                results["authorizer_two_instances"] = await both(_requests(REQUESTS, "t"), None)
        results["authorizer_stage_seconds_whole_run"] = _stage_seconds(system.lines)
        # Draining a backlog: the authorizer (wallets read from Postgres on its first batch, as after
        # a restart) and the pass-through on topics of its own, each started after the backlog was
        # produced, so that the driver does not share the cores while they are timed.
        results["authorizer_drain"] = await _drain(
            settings, requests_topic, decisions_topic, _requests(DRAIN_REQUESTS, "d"),
            service_command("services.authorizer", DRAIN_PROFILE),
        )  # fmt: skip
        drain_in, drain_out = f"{bench_in}.drain", f"{bench_out}.drain"
        drain_topics = [TopicSpec(name, settings.kafka_partitions) for name in (drain_in, drain_out)]
        await ensure_topics(settings.kafka_bootstrap_servers, drain_topics)
        passthrough = worker_command("passthrough", drain_in, drain_out)
        results["passthrough_drain"] = await _drain(
            settings, drain_in, drain_out, _requests(DRAIN_PASSTHROUGH_REQUESTS, "pd"), passthrough
        )
    return results


async def _drain_only() -> dict[str, Any]:
    """The authorizer's drain alone (`python -m bench.authorizer --drain`): for trying a change in a
    minute rather than the bench's eight; prints, writes nothing (BENCH_PROFILE=1 still profiles it).
    """
    base = load_settings("pursestrings-bench")
    base = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}", "kafka_partitions": 12})
    async with fresh_database(base) as settings:
        await _prepare(settings)
        requests_topic = topic_name(Topic.AUTH_REQUESTS, settings.topic_prefix)
        decisions_topic = topic_name(Topic.AUTH_DECISIONS, settings.topic_prefix)
        # The wallets made first, as the whole bench has them by its drain (read from Postgres).
        await _drain(
            settings, requests_topic, decisions_topic, _requests(WARM_UP, "w"), service_command("services.authorizer")
        )
        drained = await _drain(
            settings, requests_topic, decisions_topic, _requests(DRAIN_REQUESTS, "d"),
            service_command("services.authorizer", DRAIN_PROFILE),
        )  # fmt: skip
    return {"authorizer_cpu_us_per_decision": drained["cpu_us_per_request"]["system"], **drained}


def main() -> None:
    """Run the three measurements and write the ratios."""
    configure_logging("warning")
    if "--drain" in sys.argv[1:]:
        print(json.dumps(asyncio.run(_drain_only()), indent=2))
        return
    results = asyncio.run(_measure())
    ours, ceiling, naive = results["authorizer"], results["passthrough"], results["naive"]
    drained, drained_ceiling = results["authorizer_drain"], results["passthrough_drain"]
    summary = {
        # The figures the noise of a shared machine moves least: CPU per decision of each process,
        # and throughput draining a backlog with the driver idle (issue 20's targets).
        "authorizer_cpu_us_per_decision": drained["cpu_us_per_request"]["system"],
        "authorizer_cpu_us_per_decision_flat_out": ours["cpu_us_per_request"]["system"],
        "decide_us": decide_us(),
        "drain_decisions_per_s": round(drained["per_s"]),
        "drain_passthrough_per_s": round(drained_ceiling["per_s"]),
        "drain_ratio_vs_passthrough": round(drained["per_s"] / drained_ceiling["per_s"], 3),
        "cpu_us_per_decision_drain": drained["cpu_us_per_request"],
        "cpu_us_per_passthrough_drain": drained_ceiling["cpu_us_per_request"],
        "p99_ratio_vs_passthrough_at_5k": round(
            results["authorizer_paced"]["p99_ms"] / results["passthrough_paced"]["p99_ms"], 2
        ),
        "decisions_per_s": round(ours["per_s"]),
        "passthrough_per_s": round(ceiling["per_s"]),
        "naive_per_s": round(naive["per_s"]),
        "ratio_vs_passthrough": round(ours["per_s"] / ceiling["per_s"], 3),
        "ratio_vs_naive": round(ours["per_s"] / naive["per_s"], 2),
        # Two instances in one group on the same two cores (the design scales out by partitions).
        "decisions_per_s_two_instances": round(results["authorizer_two_instances"]["per_s"]),
        "p50_ms_at_5k": round(results["authorizer_paced"]["p50_ms"], 2),
        "p99_ms_at_5k": round(results["authorizer_paced"]["p99_ms"], 2),
        "achieved_paced_per_s": round(results["authorizer_paced"]["per_s"]),
        "p50_ms_at_1k": round(results["authorizer_light"]["p50_ms"], 2),
        "p99_ms_at_1k": round(results["authorizer_light"]["p99_ms"], 2),
        "passthrough_p50_ms_at_5k": round(results["passthrough_paced"]["p50_ms"], 2),
        "passthrough_p99_ms_at_5k": round(results["passthrough_paced"]["p99_ms"], 2),
        "passthrough_achieved_paced_per_s": round(results["passthrough_paced"]["per_s"]),
        "passthrough_p50_ms_at_1k": round(results["passthrough_light"]["p50_ms"], 2),
        "passthrough_p99_ms_at_1k": round(results["passthrough_light"]["p99_ms"], 2),
        # CPU per request flat out, by who spends it (steadier than rates on a shared machine).
        "cpu_us_per_decision": results["authorizer"]["cpu_us_per_request"],
        "cpu_us_per_passthrough": results["passthrough"]["cpu_us_per_request"],
        "cpu_us_per_naive": results["naive"]["cpu_us_per_request"],
        "cpu_us_per_decision_two_instances": results["authorizer_two_instances"]["cpu_us_per_request"],
        "cores": os.cpu_count(),
        "requests": REQUESTS,
        "details": results,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    printed = {key: value for key, value in summary.items() if key != "details"}
    printed["authorizer_stage_seconds_whole_run"] = results["authorizer_stage_seconds_whole_run"]
    print(json.dumps(printed, indent=2))


if __name__ == "__main__":
    main()
