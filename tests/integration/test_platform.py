"""Platform plumbing against the real services: migrations, topics, health checks, the infra scripts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.platform.health import check_kafka, check_postgres
from services.platform.kafka import (
    TopicSetupError,
    TopicSpec,
    create_consumer,
    create_producer,
    ensure_topics,
    partition_for,
    project_topics,
    send_in_batches,
)
from services.platform.migrations import Migration, MigrationError, apply_migrations, discover
from services.platform.settings import Settings
from tests.support.infra import ROOT, Infrastructure, free_port


async def _tables(connection: asyncpg.Connection) -> set[str]:
    rows = await connection.fetch(
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
        " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    return {row["name"] for row in rows}


async def test_migrations_apply_once_on_real_postgres(empty_database_url: str) -> None:
    """All migrations apply to an empty database; a second run applies nothing."""
    connection = await asyncpg.connect(dsn=empty_database_url)
    try:
        first = await apply_migrations(connection)
        second = await apply_migrations(connection)
        tables = await _tables(connection)
    finally:
        await connection.close()
    assert (first, second) == ([m.version for m in discover()], [])
    assert {
        "public.schema_migrations",
        "authorizer.wallets",
        "authorizer.cards",
        "authorizer.partition_offsets",
        "authorizer.outbox",
    } <= tables


async def test_concurrent_starts_apply_each_migration_once(empty_database_url: str) -> None:
    """Services starting together serialise on the advisory lock: one applies, the others see it done."""
    connections = [await asyncpg.connect(dsn=empty_database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*[apply_migrations(connection) for connection in connections])
    finally:
        for connection in connections:
            await connection.close()
    assert sorted(results, key=len) == [[], [], [], [m.version for m in discover()]]


async def test_an_edited_migration_stops_the_runner(empty_database_url: str) -> None:
    """A migration changed after it was applied is refused; so is an applied one the code does not know."""
    migration = Migration(1, "first", "CREATE TABLE t (id int);")
    connection = await asyncpg.connect(dsn=empty_database_url)
    try:
        await apply_migrations(connection, [migration])
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await apply_migrations(connection, [Migration(1, "first", "CREATE TABLE t (id bigint);")])
        with pytest.raises(MigrationError, match="does not know"):
            await apply_migrations(connection, [])
    finally:
        await connection.close()


async def test_a_failing_migration_leaves_nothing_behind(empty_database_url: str) -> None:
    """A migration that fails midway is rolled back whole and not recorded."""
    broken = Migration(1, "broken", "CREATE TABLE half (id int); SELECT * FROM missing_table;")
    connection = await asyncpg.connect(dsn=empty_database_url)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await apply_migrations(connection, [broken])
        tables = await _tables(connection)
        recorded = await connection.fetchval("SELECT count(*) FROM public.schema_migrations")
    finally:
        await connection.close()
    assert (tables, recorded) == ({"public.schema_migrations"}, 0)


async def test_ensure_topics_creates_partitions_and_is_idempotent(settings: Settings) -> None:
    """Every project topic is created with the configured partitions; a second call changes nothing."""
    await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))
    await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))
    too_many = TopicSpec(f"{settings.topic_prefix}.auth.requests", settings.kafka_partitions + 1)
    with pytest.raises(TopicSetupError, match="has 3 partitions, 4 configured"):
        await ensure_topics(settings.kafka_bootstrap_servers, [too_many])


async def test_messages_sent_in_batches_land_by_key_in_order(settings: Settings) -> None:
    """`send_in_batches` (the authorizer's outbox): every message on its key's partition, each key's
    messages in the order given, batches filled past their size and split; one ack per batch.
    """
    topics = [f"{settings.topic_prefix}.batches.{name}" for name in ("a", "b")]
    await ensure_topics(settings.kafka_bootstrap_servers, [TopicSpec(topic, 3) for topic in topics])
    sent = [(topics[index % 2], f"wallet-{index % 7}".encode(), f"{index}:".encode() + b"x" * 3_000)
            for index in range(60)]  # fmt: skip
    producer = create_producer(settings)
    await producer.start()
    try:
        acks = await send_in_batches(producer, sent)
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    consumer = create_consumer(settings, topics, group_id=None)
    await consumer.start()
    received: list[tuple[str, int, bytes, bytes]] = []
    try:
        while len(received) < len(sent):
            for records in (await consumer.getmany(timeout_ms=1_000)).values():
                received += [(r.topic, r.partition, r.key or b"", r.value or b"") for r in records]
    finally:
        await consumer.stop()
    assert all(partition == partition_for(key, 3) for _, partition, key, _ in received)
    by_key = {(topic, key): [value for t, _, k, value in received if (t, k) == (topic, key)] for topic, key, _ in sent}
    assert by_key == {(topic, key): [v for t, k, v in sent if (t, k) == (topic, key)] for topic, key, _ in sent}
    assert len(sent) / 5 < len(acks) < len(sent)  # ~16 KB batches of 3 KB messages: several, not one each


async def test_health_checks_tell_up_from_down(infrastructure: Infrastructure) -> None:
    """The real services report healthy; a closed port reports unhealthy instead of hanging."""
    results = await asyncio.gather(
        check_kafka(infrastructure.kafka_bootstrap_servers),
        check_postgres(infrastructure.database_url),
        check_kafka("127.0.0.1:1", timeout_s=2),
        check_postgres("postgresql://nobody:x@127.0.0.1:1/none", timeout_s=2),
    )
    assert [result.healthy for result in results] == [True, True, False, False]


@pytest.mark.slow
def test_infra_scripts_are_idempotent_and_leave_nothing_running(infrastructure: Infrastructure, tmp_path: Path) -> None:
    """A private Kafka+Postgres pair: up, up again (reused), down, down again; no process survives."""
    if infrastructure.source != "local":
        pytest.skip("the local scripts are what this proves")
    state = tmp_path / "state"
    env = {
        **os.environ,
        "PURSESTRINGS_STATE_DIR": str(state),
        "PURSESTRINGS_KAFKA_LIB": str(
            ROOT / ".state" / "kafka-lib" / os.environ.get("PURSESTRINGS_KAFKA_VERSION", "4.1.1")
        ),
        "PURSESTRINGS_KAFKA_PORT": str(free_port()),
        "PURSESTRINGS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "PURSESTRINGS_PG_PORT": str(free_port()),
        "PURSESTRINGS_PG_DIR": str(Path("/var/tmp") / f"pursestrings-test-{uuid.uuid4().hex[:8]}"),
    }
    script = str(ROOT / "deploy" / "infra.sh")

    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, action], env=env, capture_output=True, text=True, timeout=300, check=False)

    try:
        assert run("up").returncode == 0
        again = run("up")
        assert (again.returncode, "already running" in again.stderr) == (0, True)
        assert run("status").returncode == 0
    finally:
        first_down = run("down")
    second_down = run("down")
    shutil.rmtree(env["PURSESTRINGS_PG_DIR"], ignore_errors=True)
    survivors = subprocess.run(
        ["pgrep", "-f", f"{state}|{env['PURSESTRINGS_PG_DIR']}"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert (first_down.returncode, second_down.returncode, run("status").returncode, survivors) == (0, 0, 1, [])
