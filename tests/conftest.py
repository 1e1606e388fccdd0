"""Session fixtures: the real Kafka and Postgres (started or reused once), and per-test isolation:
a fresh database cloned from a migrated template, fresh uuid-prefixed topics and group ids.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.platform.kafka import delete_topics_with_prefix, ensure_topics, project_topics
from services.platform.migrations import apply_migrations
from services.platform.settings import Settings
from tests.support.databases import admin_execute, drop_database
from tests.support.infra import Infrastructure, provide

_TESTS = Path(__file__).parent
_MARKER_BY_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e"}
_NEEDS_INFRA = {"integration", "e2e"}
_infrastructure: Infrastructure | None = None
_SESSION = uuid.uuid4().hex[:8]
_TEMPLATE_DATABASE = f"pursestrings_template_{_SESSION}"
# Every topic of this session starts with this, so the session can delete them all at its end.
_TOPIC_PREFIX = f"test-{_SESSION}-"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m unit` and friends select by kind."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if folder in _MARKER_BY_FOLDER:
            item.add_marker(_MARKER_BY_FOLDER[folder])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start (or reuse) Kafka and Postgres once, if a selected test needs them, and say which."""
    if not any(marker.name in _NEEDS_INFRA for item in session.items for marker in item.iter_markers()):
        return
    infrastructure = _infra()
    postgres_version = asyncio.run(_server_version(infrastructure.database_url))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"infrastructure ({infrastructure.source}): Apache Kafka {infrastructure.kafka_version} at "
            f"{infrastructure.kafka_bootstrap_servers}; PostgreSQL {postgres_version}"
        )


def pytest_sessionfinish() -> None:
    """Containers go with the session; local services stay for `make infra-down`."""
    if _infrastructure is not None:
        _infrastructure.stop()


def _infra() -> Infrastructure:
    global _infrastructure  # noqa: PLW0603 - one infrastructure per test session, by design
    if _infrastructure is None:
        _infrastructure = provide()
    return _infrastructure


async def _server_version(database_url: str) -> str:
    connection = await asyncpg.connect(dsn=database_url, timeout=10)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def _with_database(database_url: str, name: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _migrate(database_url: str) -> None:
    connection = await asyncpg.connect(dsn=database_url, timeout=10)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    """The session's real Kafka and Postgres; the session's topics are deleted at its end."""
    infrastructure = _infra()
    yield infrastructure
    asyncio.run(delete_topics_with_prefix(infrastructure.kafka_bootstrap_servers, _TOPIC_PREFIX))


@pytest.fixture(scope="session")
def template_database_url(infrastructure: Infrastructure) -> Iterator[str]:
    """A database with every migration applied, cloned by each test that needs Postgres."""
    url = _with_database(infrastructure.database_url, _TEMPLATE_DATABASE)
    asyncio.run(admin_execute(infrastructure.database_url, f'CREATE DATABASE "{_TEMPLATE_DATABASE}"'))
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(drop_database(infrastructure.database_url, _TEMPLATE_DATABASE))


@pytest.fixture
def empty_database_url(infrastructure: Infrastructure) -> Iterator[str]:
    """A fresh database with no tables at all, dropped after the test."""
    name = f"pursestrings_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_execute(infrastructure.database_url, f'CREATE DATABASE "{name}"'))
    yield _with_database(infrastructure.database_url, name)
    asyncio.run(drop_database(infrastructure.database_url, name))


@pytest.fixture
def database_url(infrastructure: Infrastructure, template_database_url: str) -> Iterator[str]:
    """A fresh, fully migrated database of the test's own, dropped after it."""
    template = urlsplit(template_database_url).path.lstrip("/")
    name = f"pursestrings_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_execute(infrastructure.database_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _with_database(infrastructure.database_url, name)
    asyncio.run(drop_database(infrastructure.database_url, name))


@pytest.fixture
def settings(infrastructure: Infrastructure, database_url: str) -> Settings:
    """Settings for one test: its own database and a fresh topic prefix, so tests never collide."""
    return Settings(
        service_name="pursestrings-test",
        database_url=database_url,  # type: ignore[arg-type]
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        kafka_partitions=3,
        topic_prefix=f"{_TOPIC_PREFIX}{uuid.uuid4().hex[:10]}",
    )


@pytest.fixture(scope="module")
def module_settings(infrastructure: Infrastructure, template_database_url: str) -> Iterator[Settings]:
    """Like `settings`, shared by a module's tests (processes started once for many hypothesis examples)."""
    template = urlsplit(template_database_url).path.lstrip("/")
    name = f"pursestrings_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_execute(infrastructure.database_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield Settings(
        service_name="pursestrings-test",
        database_url=_with_database(infrastructure.database_url, name),  # type: ignore[arg-type]
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        kafka_partitions=3,
        topic_prefix=f"{_TOPIC_PREFIX}{uuid.uuid4().hex[:10]}",
    )
    asyncio.run(drop_database(infrastructure.database_url, name))


@pytest.fixture
async def kafka_topics(settings: Settings) -> Settings:
    """Creates every project topic under the test's prefix; returns the settings naming them."""
    await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))
    return settings


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test's own database, built by the platform's factory."""
    from services.platform.postgres import create_pool  # noqa: PLC0415 - keep unit runs free of asyncpg pools

    created = await create_pool(settings)
    yield created
    await created.close()
