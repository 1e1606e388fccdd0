"""The shell every service process runs in: settings, logging, migrations, topics, a health
and metrics endpoint, and a clean stop on SIGINT/SIGTERM. Holds no business rules; each service hands it
its own start and stop steps.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.platform.health import check_kafka, check_postgres
from services.platform.kafka import ensure_topics, project_topics
from services.platform.logging import configure_logging, get_logger
from services.platform.migrations import apply_migrations
from services.platform.postgres import create_pool
from services.platform.settings import Settings, load_settings
from services.platform.tasks import describe_tasks

_HEALTH_READ_TIMEOUT_S = 5


@dataclass
class Service:
    """One process: a name, its health port, and the steps that start and stop its work."""

    name: str
    settings: Settings
    health_port: int | None  # None: the service answers /healthz itself (the gateway, on its HTTP port)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Long-running work (a consumer loop); if one ends or fails, the process stops with it.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)


class Component(Protocol):
    """A service's work over a Postgres pool: started, run until cancelled, stopped."""

    async def start(self) -> None: ...  # noqa: D102
    async def run(self) -> None: ...  # noqa: D102
    async def stop(self) -> None: ...  # noqa: D102


def pooled_service(
    name: str, settings: Settings, health_port: int | None, make: Callable[[asyncpg.Pool], Component]
) -> Service:
    """A Service whose start makes a pool and `make(pool)`, runs it in the background, and whose stop
    stops it and closes the pool (the authorizer, the ledger).
    """
    service = Service(name=name, settings=settings, health_port=health_port)
    parts: dict[str, Any] = {}

    async def start() -> None:
        parts["pool"] = await create_pool(settings)
        parts["component"] = make(parts["pool"])
        await parts["component"].start()

    async def run() -> None:
        await parts["component"].run()

    async def stop() -> None:
        if "component" in parts:
            await parts["component"].stop()
        if "pool" in parts:
            await parts["pool"].close()

    service.on_start.append(start)
    service.background.append(run)
    service.on_stop.append(stop)
    return service


async def prepare_dependencies(settings: Settings) -> None:
    """Apply pending migrations and create missing topics; safe to run from every process at once."""
    connection = await asyncpg.connect(dsn=settings.database_url.get_secret_value(), timeout=10)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))


async def health_report(settings: Settings) -> tuple[int, bytes]:
    """HTTP status and JSON body of the health check: Kafka and Postgres both answer, or 503."""
    results = await asyncio.gather(
        check_kafka(settings.kafka_bootstrap_servers, timeout_s=2),
        check_postgres(settings.database_url.get_secret_value(), timeout_s=2),
    )
    healthy = all(result.healthy for result in results)
    body = {"status": "ok" if healthy else "unhealthy", "checks": {r.name: r.healthy for r in results}}
    return (200 if healthy else 503), json.dumps(body).encode()


async def _serve_health(settings: Settings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request_line = await asyncio.wait_for(reader.readline(), _HEALTH_READ_TIMEOUT_S)
        path = request_line.split()[1].decode() if len(request_line.split()) > 1 else ""
        content_type = "application/json"
        if path == "/healthz":
            status, body = await health_report(settings)
        elif path == "/metrics":
            status, body, content_type = 200, generate_latest(), CONTENT_TYPE_LATEST
        else:
            status, body = 404, b'{"error": "try /healthz or /metrics"}'
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass  # a client that hangs up or never speaks gets nothing; the service is unaffected
    finally:
        writer.close()


def main(name: str, build: Callable[[Settings, int], Service], default_health_port: int) -> None:
    """A service's `python -m` entry: read settings once, build the service, run it to the end.

    The health port can be moved with PURSESTRINGS_<NAME>_HEALTH_PORT (0 picks a free one).
    """
    settings = load_settings(service_name=f"pursestrings-{name}")
    port = int(os.environ.get(f"PURSESTRINGS_{name.upper()}_HEALTH_PORT", default_health_port))
    tune_garbage_collector()
    # uvloop: the same asyncio, on libuv; Kafka, Postgres and HTTP clients all spend less per message.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(build(settings, port)))


def tune_garbage_collector() -> None:
    """Collect the young generation less often and leave start-up objects out of every scan.

    A service keeps a large, long-lived heap (the authorizer's wallets) and allocates many small
    short-lived objects per message; with the default threshold (700) the collector ran every few
    messages and scanned more as the heap grew: about 40% of a decision's time in a profile
    (docs/decisions/0005). Reference counting still frees almost everything at once. Each young
    collection scans what is alive of the batches in flight, so fewer, larger ones cost less in
    all, but each is a pause: draining 40,000 requests, 10,000 ran 86 young collections (0.27 s,
    ~6 µs a decision, ~3 ms each) and 50,000 ran 5 (0.08 s) of 15-35 ms each, as long as the
    pass-through's p99 at 5,000/s. 20,000 keeps a pause under ~10 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 1_000)
    if _time_collections not in gc.callbacks:
        gc.callbacks.append(_time_collections)


# Seconds the garbage collector spent, by generation, since the process started: a service's
# canonical stop line reports them (the authorizer's `authorizer_stopped`), and so does the bench.
GC_SECONDS: dict[int, float] = {0: 0.0, 1: 0.0, 2: 0.0}
GC_COLLECTIONS: dict[int, int] = {0: 0, 1: 0, 2: 0}
_gc_started = 0.0


def _time_collections(phase: str, info: dict[str, int]) -> None:
    global _gc_started  # noqa: PLW0603 - one collector per process
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    generation = info["generation"]
    GC_SECONDS[generation] += time.perf_counter() - _gc_started
    GC_COLLECTIONS[generation] += 1


async def run(service: Service) -> None:
    """Prepare, start, serve /healthz, and wait for SIGINT or SIGTERM; then stop in reverse order."""
    settings = service.settings
    configure_logging(settings.log_level, settings.log_format)
    log = get_logger(service.name)
    await prepare_dependencies(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    # `kill -USR1 <pid>`: log where every task waits (a process gone quiet; the chaos harness asks).
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("task_dump", tasks=describe_tasks(loop)))
    health = None
    if service.health_port is not None:
        health = await asyncio.start_server(
            lambda reader, writer: _serve_health(settings, reader, writer), settings.health_host, service.health_port
        )
    try:
        for start in service.on_start:
            await start()
        tasks = [asyncio.create_task(work()) for work in service.background]
        log.info("service_ready", health_port=service.health_port)
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        log.info("service_stopping", reason="signal" if stopping in done else "background work ended")
        for task in [stopping, *tasks]:
            task.cancel()
        for task in done:
            if task is not stopping and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for stop_step in reversed(service.on_stop):
            await stop_step()
        if health is not None:
            health.close()
            await health.wait_closed()
