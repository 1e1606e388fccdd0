"""Service processes started by tests through their real entry points (`python -m services.X`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from services.platform.settings import Settings
from tests.support.infra import ROOT


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service process needs to find the test's Kafka, database and topics."""
    env = {
        **os.environ,
        "PURSESTRINGS_DATABASE_URL": settings.database_url.get_secret_value(),
        "PURSESTRINGS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "PURSESTRINGS_TOPIC_PREFIX": settings.topic_prefix,
        "PURSESTRINGS_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "PURSESTRINGS_LOG_FORMAT": "json",
        **extra,
    }
    env.pop("PURSESTRINGS_ENV_FILE", None)
    return env


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `python -m module`, its output appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=output, stderr=output)


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    """Wait until `url` answers 200; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], kill: bool = False) -> None:  # noqa: FBT001, FBT002 - reads as stop(p, kill)
    """SIGTERM (or SIGKILL) and wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running(
    module: str, env: dict[str, str], log: Path, health_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A service process for the block's duration.

    If it exits on its own before the block ends, leaving the block raises with its log's tail (a test
    that failed because a service died then also says why it died).
    """
    process = start(module, env, log)
    try:
        if health_url is not None:
            wait_healthy(health_url, process, log)
        yield process
    finally:
        exited_early = process.poll()
        stop(process)
    if exited_early is not None:
        raise RuntimeError(f"{module} exited on its own (rc {exited_early})\n{log.read_text()[-3000:]}")
