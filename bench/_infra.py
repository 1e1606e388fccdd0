"""What every benchmark needs: a fresh database, and systems under test run as processes of their own."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from services.platform.kafka import TopicSpec, delete_topics_with_prefix, ensure_topics
from services.platform.migrations import apply_migrations
from services.platform.settings import Settings
from tests.support.databases import admin_execute, drop_database


def service_command(module: str, profile: Path | None = None) -> list[str]:
    """`python -m <module>`; with `profile`, under the bench's CPU-time sampler, which writes the
    process's folded stacks there when it ends (bench/_profiled.py).
    """
    if profile is None:
        return [sys.executable, "-m", module]
    return [sys.executable, "-m", "bench._profiled", str(profile), module]


def worker_command(kind: str, source: str, sink: str) -> list[str]:
    """`python -m bench._worker KIND SOURCE SINK`: one of the baselines (see bench/_worker.py)."""
    return [*service_command("bench._worker"), kind, source, sink]


def baseline_topics(settings: Settings) -> tuple[str, str]:
    """The topics the baselines read from and write to (this run's prefix)."""
    return f"{settings.topic_prefix}.bench.in", f"{settings.topic_prefix}.bench.out"


async def ensure_baseline_topics(settings: Settings) -> tuple[str, str]:
    """Create the baselines' topics (as many partitions as the project's); return their names."""
    names = baseline_topics(settings)
    await ensure_topics(
        settings.kafka_bootstrap_servers, [TopicSpec(name, settings.kafka_partitions) for name in names]
    )
    return names


@dataclass
class Running:
    """A system under test while it runs: its process id, and its log lines once it has ended."""

    pid: int
    lines: list[str] = field(default_factory=list)


@contextmanager
def process(command: list[str], settings: Settings, **env: str) -> Iterator[Running]:
    """Run `command` with the bench's settings in its environment; its log lines fill in at exit."""
    environment = os.environ | {
        "PURSESTRINGS_DATABASE_URL": settings.database_url.get_secret_value(),
        "PURSESTRINGS_TOPIC_PREFIX": settings.topic_prefix,
        "PURSESTRINGS_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "PURSESTRINGS_LOG_FORMAT": "json",
        "PURSESTRINGS_LOG_LEVEL": "info",
        **env,
    }
    # Output goes to a file, not a pipe: a pipe nobody reads fills up and stalls a chatty process.
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603 - our own modules
        running = Running(process.pid)
        try:
            yield running
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=180)  # an overloaded gateway has expiries to publish before it stops
            output.seek(0)
            running.lines += output.read().decode(errors="replace").splitlines()


def cpu_seconds(systems: dict[str, Running]) -> dict[tuple[str, int], float]:
    """CPU seconds (user + kernel) each live process has used so far, by role and process id, from
    /proc: each system under test (with its descendants, if any) under its name,
    Postgres's under "postgres", the broker's under "kafka", the load generator's (this process,
    or vegeta) under "driver"; waited-for children (vegeta, once ended) under ("driver", 0).

    On a machine whose two cores the broker, Postgres, the load generator and the system share,
    throughput and latency move with whatever else runs; CPU time per request moves far less, and
    says where a request's cost is paid.
    """
    processes = _processes()
    role_of = {running.pid: name for name, running in systems.items()}
    while more := {
        pid: role_of[seen.parent] for pid, seen in processes.items() if seen.parent in role_of and pid not in role_of
    }:
        role_of |= more  # a descendant of a system under test is part of it
    used = {}
    for pid, seen in processes.items():
        role = role_of.get(pid) or _role(pid, seen)
        if role is not None:
            used[(role, pid)] = seen.seconds
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used[("driver", 0)] = children.ru_utime + children.ru_stime
    return used


def cpu_us_per_request(
    before: dict[tuple[str, int], float], after: dict[tuple[str, int], float], requests: int
) -> dict[str, float]:
    """CPU microseconds per request by role between two `cpu_seconds` readings. A process that
    ended in between (an autovacuum worker) is left out; one that started counts from zero.
    """
    spent: dict[str, float] = {}
    for (role, pid), seconds in after.items():
        spent[role] = spent.get(role, 0.0) + seconds - before.get((role, pid), 0.0)
    return {role: round(seconds * 1e6 / max(requests, 1), 1) for role, seconds in spent.items()}


@dataclass(frozen=True)
class _Seen:
    comm: str
    parent: int
    seconds: float
    cmdline: bytes


def _processes() -> dict[int, _Seen]:
    tick = os.sysconf("SC_CLK_TCK")
    seen = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat, cmdline = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        # pid (comm) state ppid ... utime stime: comm may hold spaces, so split after its ')'.
        rest = stat[stat.rindex(")") + 2 :].split()
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        seen[int(entry.name)] = _Seen(comm, int(rest[1]), (int(rest[11]) + int(rest[12])) / tick, cmdline)
    return seen


def _role(pid: int, seen: _Seen) -> str | None:
    if seen.comm == "postgres":
        return "postgres"
    if seen.comm == "java" and b"kafka" in seen.cmdline:
        return "kafka"
    if pid == os.getpid() or seen.comm == "vegeta":
        return "driver"
    return None


@asynccontextmanager
async def fresh_database(
    base: Settings, label: str = "bench", keep: Callable[[], bool] = lambda: False
) -> AsyncIterator[Settings]:
    """A new database for this run (so no earlier run's decisions answer this one's requests).

    At the end the database is dropped and the run's topics (named with its prefix) deleted, unless
    `keep()` says to keep them (a failed chaos run, to look into): then their names are printed.
    """
    url = base.database_url.get_secret_value()
    name = f"pursestrings_{label}_{uuid.uuid4().hex[:8]}"
    # A connection per statement, none held across the run: a chaos run restarts Postgres under it.
    await admin_execute(url, f'CREATE DATABASE "{name}"')
    fresh = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    try:
        connection = await asyncpg.connect(dsn=fresh)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        yield base.model_copy(update={"database_url": SecretStr(fresh)})
    finally:
        if keep():
            print(f"{label}: kept database {name} and topics {base.topic_prefix}.*", file=sys.stderr)
        else:
            await _drop_database(url, name)
            await delete_topics_with_prefix(base.kafka_bootstrap_servers, base.topic_prefix)


async def _drop_database(url: str, name: str) -> None:
    """Drop the run's database; if Postgres keeps refusing (`drop_database`), say it was left behind
    rather than throw away the run's measurements.
    """
    try:
        await drop_database(url, name)
    except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError) as error:
        print(f"bench: database {name} left behind: {error}", file=sys.stderr)
