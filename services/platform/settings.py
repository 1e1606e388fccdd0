"""Settings read once at start from `PURSESTRINGS_*` variables; never read again on a hot path.

Secrets (the database URL carries a password) have no defaults: a service without them refuses to
start with a clear error rather than connecting somewhere by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE_VARIABLE = "PURSESTRINGS_ENV_FILE"


class Settings(BaseSettings):
    """What every pursestrings process needs to find Kafka and Postgres and to log."""

    model_config = SettingsConfigDict(env_prefix="PURSESTRINGS_", extra="ignore", frozen=True)

    service_name: str = "pursestrings"
    database_url: SecretStr = Field(description="postgresql:// URL; a secret, so no default")
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # Every wallet-scoped topic gets this many partitions; keys are wallet ids.
    kafka_partitions: int = Field(default=12, ge=1, le=1024)
    # Prepended to every topic and group name; tests use a fresh one so they never collide.
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=64)
    postgres_pool_min_size: int = Field(default=1, ge=0, le=100)
    postgres_pool_max_size: int = Field(default=10, ge=1, le=100)
    postgres_command_timeout_s: float = Field(default=5.0, gt=0, le=300)
    kafka_request_timeout_ms: int = Field(default=10_000, ge=100, le=120_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Where /healthz and /metrics listen (services without an HTTP port of their own); 0.0.0.0 in a container.
    health_host: str = "127.0.0.1"
    log_format: Literal["auto", "json", "console"] = "auto"
    # Exchange rates for authorizations in another currency than the wallet's: a JSON object such
    # as {"EUR/USD": "1.0852"} (one EUR buys 1.0852 USD). Without it such requests are declined
    # with fx_rate_missing. Read once at start; see services/authorizer/rates.py.
    fx_rates_file: Path | None = None

    # The gateway (issuer webhooks, management API). A webhook whose secret is not set answers 503.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_version: str = "2025-03-31.basil"
    lithic_webhook_secret: SecretStr | None = None
    generic_webhook_secret: SecretStr | None = None
    # Past this the gateway answers decline (fail closed) and publishes an authorization_expired.
    auth_deadline_ms: int = Field(default=1_500, ge=50, le=10_000)
    # Requests waiting for a decision at once; beyond it new ones are declined at once.
    gateway_max_pending: int = Field(default=10_000, ge=1, le=1_000_000)

    # The notifier (Slack approval requests and the Approve/Deny clicks). It serves /healthz,
    # /metrics and Slack's interactivity endpoint (/slack/interactivity) on its own port.
    notifier_host: str = "127.0.0.1"
    notifier_port: int = Field(default=8083, ge=0, le=65535)
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    # The Web API's base URL: Slack's, or the local stand-in's (`make run` without credentials).
    slack_api_url: str = "https://slack.com/api/"
    slack_default_channel: str = Field(default="#pursestrings-approvals", min_length=1, max_length=80)
    slack_timeout_s: float = Field(default=10.0, gt=0, le=60)


def load_settings(service_name: str = "pursestrings") -> Settings:
    """Read the settings once: environment first, then the env file the local scripts write."""
    env_file = os.environ.get(ENV_FILE_VARIABLE) or None
    return Settings(_env_file=env_file, service_name=service_name)
