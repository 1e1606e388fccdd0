"""Management API keys: `ps_<key id>_<secret>`, stored as the key id and SHA-256 of the secret.

`create_key` prints nothing and returns the key once; only its hash is kept. `authenticate`
finds the key by id and compares hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from services.platform.postgres import create_pool
from services.platform.settings import Settings

PREFIX = "ps"


class Scope(StrEnum):
    """What a key may do."""

    ADMIN = "admin"
    READ = "read"
    AGENT = "agent"


@dataclass(frozen=True)
class ApiKey:
    """An authenticated caller."""

    key_id: str
    scope: Scope
    wallet_id: str | None
    label: str

    @property
    def actor(self) -> str:
        """Who the caller is, in wallet commands and events."""
        return f"key:{self.key_id}" + (f" ({self.label})" if self.label else "")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(pool: asyncpg.Pool, scope: Scope, wallet_id: str | None = None, label: str = "") -> str:
    """A new key; the only time its secret exists outside the caller."""
    if (scope == Scope.AGENT) != (wallet_id is not None):
        raise ValueError("an agent key names its wallet; admin and read keys do not")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO gateway.api_keys (key_id, secret_hash, scope, wallet_id, label) VALUES ($1, $2, $3, $4, $5)",
        key_id, _hash(secret), scope.value, wallet_id, label,
    )  # fmt: skip
    return f"{PREFIX}_{key_id}_{secret}"


async def create_key_once(settings: Settings, scope: Scope, wallet_id: str | None = None, label: str = "") -> str:
    """`create_key` on a pool of its own, closed after: for a program that needs one key and no pool."""
    pool = await create_pool(settings)
    try:
        return await create_key(pool, scope, wallet_id, label)
    finally:
        await pool.close()


async def authenticate(pool: asyncpg.Pool, presented: str) -> ApiKey | None:
    """The key `presented` is, if it is one of ours and not revoked."""
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        return None
    row = await pool.fetchrow(
        "SELECT secret_hash, scope, wallet_id, label FROM gateway.api_keys WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    if row is None or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
        return None
    return ApiKey(key_id, Scope(row["scope"]), row["wallet_id"], row["label"])
