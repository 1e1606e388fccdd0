"""Provides the real Kafka and Postgres for a test session: testcontainers when a Docker engine
answers, otherwise the project's local (no Docker) services from deploy/, started or reused.

Never substitutes an in-memory broker or a mocked database.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.platform.settings import ENV_FILE_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = os.environ.get("PURSESTRINGS_KAFKA_VERSION", "4.1.1")
POSTGRES_IMAGE = "postgres:15"


@dataclass
class Infrastructure:
    """Where the session's Kafka and Postgres answer, and how to let them go."""

    source: str
    kafka_bootstrap_servers: str
    database_url: str
    kafka_version: str
    stop: Callable[[], None] = field(default=lambda: None)


def docker_engine_answers() -> bool:
    """True when a Docker engine answers a ping (the client alone is not enough)."""
    try:
        import docker  # noqa: PLC0415 - optional at run time: only needed with a Docker engine

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:  # noqa: BLE001 - docker.errors.DockerException and connection errors alike mean "no engine"
        return False
    return True


def provide() -> Infrastructure:
    """Containers when Docker answers (and PURSESTRINGS_TEST_INFRA is not `local`), else local services."""
    if os.environ.get("PURSESTRINGS_TEST_INFRA", "auto") != "local" and docker_engine_answers():
        return _containers()
    return _local()


def _local() -> Infrastructure:
    subprocess.run([str(ROOT / "deploy" / "infra.sh"), "up"], check=True, cwd=ROOT)
    state = Path(os.environ.get("PURSESTRINGS_STATE_DIR", ROOT / ".state"))
    env_file = Path(os.environ.get(ENV_FILE_VARIABLE) or state / "local.env")
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return Infrastructure(
        source="local",
        kafka_bootstrap_servers=values["PURSESTRINGS_KAFKA_BOOTSTRAP_SERVERS"],
        database_url=values["PURSESTRINGS_DATABASE_URL"],
        kafka_version=_running_kafka_version(state / "kafka" / "logs" / "server.log"),
    )


def _running_kafka_version(server_log: Path) -> str:
    """The version the running broker announced at start (the newest such line of its logs; the
    log rolls over hourly, so the announcement may be in an older file).
    """
    logs = sorted(server_log.parent.glob(f"{server_log.name}*"), key=lambda path: path.stat().st_mtime, reverse=True)
    for log in logs:
        found = re.findall(r"Kafka version: (\S+)", log.read_text(errors="replace"))
        if found:
            return str(found[-1])
    return "unknown"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _containers() -> Infrastructure:  # pragma: no cover - this machine has no Docker engine
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    postgres = PostgresContainer(
        POSTGRES_IMAGE, username="pursestrings", password="pursestrings", dbname="pursestrings"
    )
    postgres.start()
    # The same single-node KRaft settings as deploy/compose.yaml and deploy/kafka/server.properties.in;
    # the host port is fixed before start because the broker must advertise it.
    port = free_port()
    kafka = DockerContainer(f"apache/kafka:{KAFKA_VERSION}").with_bind_ports(9092, port)
    for key, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }.items():
        kafka.with_env(key, value)
    kafka.start()
    wait_for_logs(kafka, "Kafka Server started", timeout=120)
    url = postgres.get_connection_url(driver=None).replace("localhost", "127.0.0.1")

    def stop() -> None:
        kafka.stop()
        postgres.stop()

    return Infrastructure("testcontainers", f"127.0.0.1:{port}", url, KAFKA_VERSION, stop)
