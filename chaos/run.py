"""One chaos run end to end: fresh database and topics, the services as processes, the seeded storm,
a quiet end, the oracle, the summary line and chaos/results/latest.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench._infra import fresh_database
from chaos.harness import (
    INTRUDER_PREFIX,
    Config,
    Processes,
    Tally,
    Workload,
    database,
    follow_decisions,
    prepare,
    wait_for,
)
from chaos.oracle import Verdict, judge, read_topic
from schemas.authorizations import AuthorizationRequested
from schemas.topics import Topic, message_key
from services.platform.kafka import partition_for
from services.platform.logging import get_logger
from services.platform.settings import Settings, load_settings
from tests.support.infra import ROOT, free_port

RESULTS = Path(__file__).parent / "results" / "latest.json"
_log = get_logger("chaos")
ZOMBIE_PAUSE_S = 13  # past aiokafka's default group session timeout (10 s)
POSTGRES_FULL_S = 10.0  # how long Postgres refuses every new connection
# Faults are dealt from seeded shuffled decks of every fault, each kill twice per deck, so a long run
# has its share of kills whatever the draws (100,000 events: ~56 faults, ~30 kills).
_KILLS = ("kill_authorizer", "kill_ledger", "kill_gateway", "kill_notifier")
# How long the Kafka crash waits for a moment when committed decisions are not yet published.
COMMIT_WINDOW_WAIT_S = 10.0
_FAILURES = ("decisions_lost", "answer_mismatches", "cents_over_cap", "approved_while_frozen", "holds_leaked",
             "ledger_mismatches", "webhooks_unanswered", "bad_input_surprises", "processes_crashed")  # fmt: skip


class Faults:
    """Seeded faults, one at a time, at seeded moments."""

    def __init__(
        self,
        processes: Processes,
        config: Config,
        rng: random.Random,
        tally: Tally,
        in_flight: Callable[[], dict[str, int]] = dict,
        *,
        settings: Settings | None = None,
    ) -> None:
        self._processes, self._config, self._rng, self._tally = processes, config, rng, tally
        self._in_flight, self._settings = in_flight, settings
        self._deck: list[str] = []

    def _deal(self) -> str:
        """The next fault from the deck, a new seeded shuffle of every fault (kills twice) when empty."""
        if not self._deck:
            self._deck = [*self._config.faults, *(fault for fault in self._config.faults if fault in _KILLS)]
            self._rng.shuffle(self._deck)
        return self._deck.pop()

    async def run(self, over: Callable[[], bool]) -> None:
        """Inject faults until the storm is `over`, noting what was in flight when each struck."""
        started = time.monotonic()
        while not over():
            await asyncio.sleep(self._rng.expovariate(1 / self._config.fault_every_s))
            if over():
                return
            fault = self._deal()
            self._tally.faults.append(fault)
            self._tally.struck.append({"fault": fault, "at_s": round(time.monotonic() - started, 1),
                                       **self._in_flight()})  # fmt: skip
            _log.info("chaos_fault", fault=fault)
            await getattr(self, fault)()

    async def _restart(self, name: str) -> None:
        self._processes.kill(name)
        self._tally.kills += 1
        await asyncio.sleep(self._rng.uniform(0.3, 2.0))
        self._processes.start(name)
        self._tally.restarts += 1

    async def kill_authorizer(self) -> None:
        """Kill -9 the authorizer mid-stream; restart it."""
        await self._restart("authorizer")

    async def kill_ledger(self) -> None:
        """Kill -9 the ledger; restart it."""
        await self._restart("ledger")

    async def kill_gateway(self) -> None:
        """Kill -9 the gateway (webhooks in flight are retried, as issuers do); restart it."""
        await self._restart("gateway")

    async def kill_notifier(self) -> None:
        """Kill -9 the notifier; restart it."""
        await self._restart("notifier")

    async def second_authorizer(self) -> None:
        """A second authorizer joins the group (a rebalance), or leaves it (another)."""
        if "authorizer-2" in self._processes.running:
            await asyncio.to_thread(self._processes.stop, "authorizer-2", 0.5)
        else:
            self._processes.start("authorizer-2")
        self._tally.rebalances += 1

    async def zombie_authorizer(self) -> None:
        """A second instance runs; the first is paused past the group's session timeout, so its
        partitions move to the second, then resumed: a zombie whose next commit must be fenced.
        """
        if "authorizer-2" not in self._processes.running:
            self._processes.start("authorizer-2")
            self._tally.rebalances += 1
            await asyncio.sleep(4)
        self._processes.signal("authorizer", signal.SIGSTOP)
        await asyncio.sleep(ZOMBIE_PAUSE_S)
        self._processes.signal("authorizer", signal.SIGCONT)
        self._tally.zombies += 1

    async def stall_authorizer(self) -> None:
        """The authorizer freezes past the webhook deadline (a zombie for a moment), then resumes."""
        self._processes.signal("authorizer", signal.SIGSTOP)
        await asyncio.sleep(self._config.deadline_ms / 1000 + self._rng.uniform(0.3, 1.5))
        self._processes.signal("authorizer", signal.SIGCONT)
        self._tally.stalls += 1

    async def restart_kafka(self) -> None:
        """The Kafka broker stops and starts again under everything (clients must reconnect)."""
        await _down_and_up(ROOT / "deploy" / "kafka" / "kafka.sh")
        self._tally.kafka_restarts += 1

    async def restart_postgres(self) -> None:
        """Postgres stops and starts again under the running services."""
        await _down_and_up(ROOT / "deploy" / "postgres" / "postgres.sh")
        self._tally.postgres_restarts += 1

    async def postgres_full(self) -> None:
        """Postgres refuses every new connection for POSTGRES_FULL_S, as when max_connections is
        reached: this takes every slot our role may have, and ends the services' connections, so
        each service asks again into the refusal (SQLSTATE 53300). A service connection that slips
        in between two tries is ended at the next (every 50 ms). The authorizer decides nothing it
        cannot commit: the gateway answers declines on its deadline meanwhile.
        """
        assert self._settings is not None  # noqa: S101 - the storm passes them
        answers_before = len(self._tally.webhook_answers)
        held, ended = await hold_every_connection(self._settings.database_url.get_secret_value(), POSTGRES_FULL_S)
        answers = list(self._tally.webhook_answers.values())[answers_before:]
        self._tally.struck[-1].update(
            connections_held=held, service_connections_ended=ended,
            answered_meanwhile_approved=sum(answers), answered_meanwhile_declined=len(answers) - sum(answers),
        )  # fmt: skip
        self._tally.postgres_full += 1

    async def crash_kafka(self) -> None:
        """The broker is killed -9 (no clean shutdown) at a moment when the authorizer has decisions
        committed in Postgres and not yet published (its outbox's commit window), then started again.
        """
        assert self._settings is not None  # noqa: S101 - the storm passes them
        pending = await _await_commit_window(self._settings.database_url.get_secret_value(), COMMIT_WINDOW_WAIT_S)
        pid = _broker_pid(Path(os.environ.get("PURSESTRINGS_STATE_DIR", ROOT / ".state")) / "kafka" / "kafka.pid")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._tally.struck[-1].update(unpublished_when_killed=pending)
        await _down_and_up(ROOT / "deploy" / "kafka" / "kafka.sh")
        self._tally.kafka_crashes += 1


async def hold_every_connection(dsn: str, seconds: float) -> tuple[int, int]:
    """Take every connection slot `dsn`'s role may have for `seconds`, ending the other connections
    of that role to its database that services opened (named by `application_name`); return how many
    slots were held at most and how many service connections were ended.
    """
    held: list[asyncpg.Connection] = []
    ended = 0
    deadline = time.monotonic() + seconds
    settings = {"application_name": "chaos-postgres-full"}
    try:
        while time.monotonic() < deadline:
            try:
                held.append(await asyncpg.connect(dsn=dsn, timeout=5, server_settings=settings))
                continue
            except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError, OSError, TimeoutError):
                pass
            if held:
                ended += await held[0].fetchval(
                    """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                       WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()
                         AND application_name <> '' AND application_name NOT LIKE 'chaos%'"""
                )
            await asyncio.sleep(0.05)
        return len(held), ended
    finally:
        for connection in held:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)


async def _await_commit_window(dsn: str, wait_s: float) -> int:
    """Poll the outbox until a row is committed and not yet published (or `wait_s` passed); return
    how many such rows there were when seen (0 when the wait ran out).
    """
    connection = await asyncpg.connect(dsn=dsn, timeout=10)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            pending: int = await connection.fetchval(
                "SELECT count(*) FROM authorizer.outbox WHERE published_at IS NULL"
            )
            if pending:
                return pending
            await asyncio.sleep(0.002)
        return 0
    finally:
        await connection.close()


def _broker_pid(pid_file: Path) -> int | None:
    """The Kafka broker's pid, from deploy/kafka/kafka.sh's pid file."""
    if not pid_file.exists():
        return None
    text = pid_file.read_text().strip()
    return int(text) if text.isdigit() else None


async def _down_and_up(script: Path) -> None:
    """`script down` then `script up` (the deploy/ scripts wait for readiness)."""
    for step in ("down", "up"):
        process = await asyncio.create_subprocess_exec(str(script), step, stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
        await process.wait()


async def _quiet_end(settings: Settings, workload: Workload, processes: Processes, tally: Tally) -> None:
    """Every process up and resumed; every request decided; every hold settled and journaled."""
    for name in processes.dead():
        processes.start(name)  # noted as crashed: it exited on its own
    for name in ("authorizer", "ledger", "gateway", "notifier"):
        processes.signal(name, signal.SIGCONT)
        if name not in processes.running or processes.running[name].poll() is not None:
            processes.start(name)
    await workload.stop()

    async def all_decided() -> bool:
        return tally.requested <= workload.decided  # the follower reads auth.decisions as they come

    phase = time.monotonic()
    try:
        await wait_for(all_decided, 120, "a decision for every request")
    except TimeoutError:
        await _diagnose_undecided(settings, processes, tally)
        raise
    tally.phases["all_decided_s"] = round(time.monotonic() - phase, 1)
    await asyncio.sleep(2)  # the follower sees the last approvals
    await workload.start()
    await workload.settle_everything()
    await workload.stop()

    async def settled() -> bool:
        connection = await asyncpg.connect(dsn=settings.database_url.get_secret_value(), timeout=10)
        try:
            holds = await connection.fetchval("SELECT count(*) FROM authorizer.holds")
            ledger = await connection.fetchval("SELECT count(*) FROM ledger.card_balances WHERE held_minor <> 0")
            behind = await connection.fetchval(
                """SELECT count(*) FROM authorizer.decisions d WHERE NOT EXISTS
                   (SELECT 1 FROM ledger.entries e WHERE e.kind = 'decision'
                      AND e.issuer_authorization_id = d.issuer_authorization_id)"""
            )
        finally:
            await connection.close()
        return bool(holds == 0 and ledger == 0 and behind == 0)

    phase = time.monotonic()
    with contextlib.suppress(TimeoutError):  # the oracle then says what did not settle
        await wait_for(settled, 90, "every hold released and journaled")
    tally.phases["settled_s"] = round(time.monotonic() - phase, 1)


async def _diagnose_undecided(settings: Settings, processes: Processes, tally: Tally) -> None:
    """Requests still without a decision: where they are (partition, offset), where each partition's
    committed position is, and every service's tasks (SIGUSR1 logs where each one waits).
    """
    for name in list(processes.running):
        processes.signal(name, signal.SIGUSR1)
    decided = {d.issuer_authorization_id for d in await read_topic(settings, Topic.AUTH_DECISIONS)}
    missing = tally.requested - decided
    partitions = settings.kafka_partitions
    where: dict[int, list[str]] = {}
    for request in await read_topic(settings, Topic.AUTH_REQUESTS):
        if isinstance(request, AuthorizationRequested) and request.issuer_authorization_id in missing:
            partition = partition_for(message_key(request), partitions)
            where.setdefault(partition, []).append(request.issuer_authorization_id)
    connection = await asyncpg.connect(dsn=settings.database_url.get_secret_value(), timeout=10)
    try:
        offsets = [dict(row) for row in await connection.fetch(
            "SELECT topic, partition, next_offset, epoch, updated_at::text FROM authorizer.partition_offsets "
            "ORDER BY topic, partition")]  # fmt: skip
        unpublished = await connection.fetchval("SELECT count(*) FROM authorizer.outbox WHERE published_at IS NULL")
    finally:
        await connection.close()
    print(f"chaos: {len(missing)} requests undecided; by auth.requests partition: "
          f"{ {p: len(ids) for p, ids in sorted(where.items())} }; not on the topic: "
          f"{len(missing) - sum(map(len, where.values()))}; first: {sorted(missing)[:5]}", flush=True)  # fmt: skip
    print(f"chaos: outbox rows unpublished: {unpublished}; partition_offsets: {offsets}", flush=True)
    await asyncio.sleep(1)  # the task dumps reach the logs


async def run(
    config: Config, base: Settings | None = None, results: Path = RESULTS, command: str | None = None
) -> dict[str, Any]:
    """The whole run (on a database made next to `base`'s); returns the summary, also written to
    chaos/results/latest.json.
    """
    base = base or load_settings("pursestrings-chaos")
    scratch = base.model_copy(update={"topic_prefix": f"chaos-{uuid.uuid4().hex[:8]}", "kafka_partitions": 6})
    # Its own database and topics, dropped and deleted at the end (the logs stay, named in the summary),
    # kept when the run failed, to look into.
    outcome: dict[str, Any] = {}
    async with fresh_database(scratch, "chaos", keep=lambda: outcome.get("passed") is False) as settings:
        outcome = await _storm(config, settings, results, command)
    return outcome


async def _storm(config: Config, settings: Settings, results: Path, command: str | None) -> dict[str, Any]:
    await prepare(settings)
    # Two generators from the seed: the faults' schedule (which fault, when, for how long) does not
    # depend on how many draws the workload made by then, so a seed names the same faults again.
    rng, fault_rng, tally = random.Random(f"{config.seed}:workload"), random.Random(f"{config.seed}:faults"), Tally()
    logs = Path(tempfile.mkdtemp(prefix=f"chaos-{config.seed}-"))
    processes = Processes(settings, logs, free_port(), config.deadline_ms, notifier_port=free_port())
    started = time.monotonic()
    try:
        for name in ("authorizer", "ledger", "notifier", "gateway"):
            processes.start(name)
        await processes.gateway_ready()
        workload = Workload(settings, config, rng, tally, processes.gateway_url, notifier_url=processes.notifier_url)
        await workload.start()
        for setup in workload.setup_commands():
            await workload.send(Topic.WALLET_COMMANDS, setup, remember=False)
        stop_following = asyncio.Event()
        follower = asyncio.create_task(follow_decisions(settings, workload, stop_following))
        until = time.monotonic() + config.seconds

        def over() -> bool:
            return time.monotonic() >= until or 0 < config.events <= tally.events

        faults = Faults(processes, config, fault_rng, tally, workload.in_flight, settings=settings)
        faults_done = asyncio.create_task(faults.run(over))
        reporter = (
            asyncio.create_task(_report(processes, tally, config.report_every_s)) if config.report_every_s else None
        )
        # Paced by a schedule (a Poisson process at `rate_per_s`), not by sleeping after each step, so
        # the time a step takes does not lower the rate; a step that fell behind is not made up in a burst.
        next_at = time.monotonic()
        while not over():
            await workload.step()
            next_at = max(next_at + rng.expovariate(config.rate_per_s), time.monotonic() - 1)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await faults_done
        if reporter is not None:
            reporter.cancel()
        await _quiet_end(settings, workload, processes, tally)
        stop_following.set()
        await follower
        phase = time.monotonic()
        verdict = await judge(settings, tally.webhook_answers, tally.webhook_reasons)
        await _judge_intruders(settings, tally)
        tally.phases["oracle_s"] = round(time.monotonic() - phase, 1)
    finally:
        processes.stop_all()
    return _summary(
        config, tally, verdict, time.monotonic() - started, processes.crashed, logs=logs, results=results,
        command=command,
    )  # fmt: skip


async def _judge_intruders(settings: Settings, tally: Tally) -> None:
    """Every click of a user who approves no wallet was refused (or named no request), and no
    request was ever decided by one: anything else is a surprise that fails the run.
    """
    connection = await database(settings)
    try:
        outcomes = await connection.fetch(
            "SELECT outcome, count(*) AS n FROM notifier.clicks WHERE user_id LIKE $1 GROUP BY outcome",
            f"{INTRUDER_PREFIX}%",
        )
        decided = await connection.fetchval(
            "SELECT count(*) FROM notifier.requests WHERE decided_by LIKE $1", f"{INTRUDER_PREFIX}%"
        )
    finally:
        await connection.close()
    tally.intruder_click_outcomes = {row["outcome"]: row["n"] for row in outcomes}
    for outcome, count in tally.intruder_click_outcomes.items():
        if outcome not in {"refused_not_approver", "unknown_request"}:
            tally.bad_input_surprises.append(f"click_non_approver: {count} recorded as {outcome}")
    if decided:
        tally.bad_input_surprises.append(f"click_non_approver: {decided} requests decided by a non-approver")


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MB (Linux /proc), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def _report(processes: Processes, tally: Tally, every_s: float) -> None:
    """Every `every_s`: what happened so far and each process's memory (a soak must stay flat)."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        memory = {name: rss_mb(process.pid) for name, process in sorted(processes.running.items())}
        tally.memory.append({"at_s": round(time.monotonic() - started), **memory})
        print(f"chaos t={time.monotonic() - started:.0f}s events={tally.events} kills={tally.kills} "
              f"rebalances={tally.rebalances} stalls={tally.stalls} postgres_restarts={tally.postgres_restarts} "
              f"postgres_full={tally.postgres_full} kafka_crashes={tally.kafka_crashes} "
              f"duplicates={tally.duplicates} rss_mb={memory}", flush=True)  # fmt: skip


def fault_table(struck: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per fault: how often it struck, and what was in flight when it did (the most, and in all)."""
    table: dict[str, dict[str, int]] = {}
    for entry in struck:
        row = table.setdefault(entry["fault"], {"struck": 0})
        row["struck"] += 1
        for name in sorted(key for key, value in entry.items() if isinstance(value, int) and key != "at_s"):
            row[f"{name}_max"] = max(row.get(f"{name}_max", 0), entry.get(name, 0))
            row[f"{name}_total"] = row.get(f"{name}_total", 0) + entry.get(name, 0)
    return dict(sorted(table.items()))


def _summary(
    config: Config,
    tally: Tally,
    verdict: Verdict,
    seconds: float,
    crashed: list[str],
    *,
    logs: Path,
    results: Path,
    command: str | None,
) -> dict[str, Any]:
    figures = asdict(verdict) | {
        "webhooks_unanswered": len(tally.webhooks_unanswered),
        "bad_input_surprises": len(tally.bad_input_surprises),
        "processes_crashed": len(crashed),
    }
    details = figures.pop("details") | {
        "webhooks_unanswered": tally.webhooks_unanswered[:20],
        "bad_input_surprises": tally.bad_input_surprises[:20],
        "processes_crashed": crashed,
    }
    bad_inputs = sum(counts["sent"] for counts in tally.bad_inputs.values())
    summary = {
        "seed": config.seed,
        "command": command,
        "cores": os.cpu_count(),
        "wallets": config.wallets,
        "events": tally.events,
        "kills": tally.kills,
        "restarts": tally.restarts,
        "rebalances": tally.rebalances,
        "duplicates": tally.duplicates,
        "stand_ins": tally.stand_ins,
        "increments": tally.increments,
        "stalls": tally.stalls,
        "zombies": tally.zombies,
        "postgres_restarts": tally.postgres_restarts,
        "kafka_restarts": tally.kafka_restarts,
        "postgres_full": tally.postgres_full,
        "kafka_crashes": tally.kafka_crashes,
        "webhook_answers": len(tally.webhook_answers),
        "bad_inputs": bad_inputs,
        "bad_input_share": round(bad_inputs / max(1, tally.events), 3),
        "bad_inputs_by_kind": dict(sorted(tally.bad_inputs.items())),
        # What the notifier recorded of the non-approvers' clicks it acknowledged (a click whose
        # notifier was killed before deciding it is lost, as Slack's would be).
        "intruder_click_outcomes": tally.intruder_click_outcomes,
        **figures,
        "passed": all(figures[name] == 0 for name in _FAILURES),
        "seconds": round(seconds, 1),
        "config": {k: v for k, v in asdict(config).items() if k != "seed"},
        "faults": tally.faults,
        "fault_table": fault_table(tally.struck),
        "struck": tally.struck,
        "phases": tally.phases,
        "memory_mb": tally.memory,
        "details": details,
        "logs": str(logs),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line a human reads first; a failure names the seed that reproduces it."""
    names = ("events", "kills", "restarts", "rebalances", "duplicates", "stand_ins", "increments", "stalls", "zombies",
             "postgres_restarts", "kafka_restarts", "postgres_full", "kafka_crashes", "bad_inputs", *_FAILURES,
             "late_approvals_released")  # fmt: skip
    figures = " ".join(f"{name}={summary[name]}" for name in names)
    verdict = "PASS" if summary["passed"] else f"FAIL (reproduce: make chaos SEED={summary['seed']})"
    return f"chaos seed={summary['seed']} {figures} → {verdict}"
