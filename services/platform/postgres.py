"""asyncpg pool factory with bounded size and timeouts; knows nothing about any table."""

from __future__ import annotations

import asyncpg

from services.platform.settings import Settings

# What Postgres failing looks like to a caller that answers for it (a decline, a retry later)
# rather than letting it end a request with a 500: the server's errors, the network, asyncpg's
# interface errors, and its protocol confused by a server that went away or a query cancelled
# mid-flight (`InternalClientError`: "cannot switch to state 12"; seen in chaos, seed 301).
POSTGRES_FAILURES: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
)  # fmt: skip


def transient(error: BaseException) -> bool:
    """Whether doing the same again may succeed: Postgres (or the network) away, a serialization
    failure, a restart, and asyncpg's protocol left confused by a server that went away mid-query
    (`InternalClientError`: "cannot switch to state 15"). Not a value or constraint Postgres refuses
    (SQLSTATE classes 22 and 23, or asyncpg's own argument check) nor a bug in our code.
    """
    if isinstance(error, ValueError):
        return False  # asyncpg refused an argument (an integer past 64 bits, say): the same again
    if isinstance(error, asyncpg.PostgresError):
        return str(getattr(error, "sqlstate", "") or "")[:2] not in {"22", "23"}
    return isinstance(error, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool whose every connection has a statement timeout, so no query waits forever."""
    timeout_ms = int(settings.postgres_command_timeout_s * 1000)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn=settings.database_url.get_secret_value(),
        min_size=settings.postgres_pool_min_size,
        max_size=settings.postgres_pool_max_size,
        command_timeout=settings.postgres_command_timeout_s,
        server_settings={
            "application_name": settings.service_name,
            "statement_timeout": str(timeout_ms),
            "idle_in_transaction_session_timeout": str(timeout_ms * 6),
        },
        reset=_keep_session,
    )
    return pool


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """On release, asyncpg still rolls back a transaction left open; this replaces only its session
    reset (`RESET ALL`, `UNLISTEN *`, advisory unlock, `CLOSE ALL`): a round trip per release, about
    0.2 ms each, twice per authorizer batch (measured; decision 0005). No code of ours changes session
    settings, listens, takes advisory locks or opens cursors on a pooled connection (migrations use a
    connection of their own).
    """
