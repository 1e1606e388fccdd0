"""Topic naming, committed JSON Schemas, policy templates and settings behave as documented."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from schemas.export import JSON_DIR, rendered
from schemas.money import Money
from schemas.policies import PolicyTemplate, template_caps
from schemas.topics import Topic, topic_name
from schemas.wallet import AnyWalletEvent
from services.platform.settings import Settings


def test_topic_names_take_a_prefix_and_a_dead_letter_suffix() -> None:
    """Prefixes isolate tests and tenants; every topic has a dead-letter twin."""
    assert [
        topic_name(Topic.AUTH_REQUESTS),
        topic_name(Topic.AUTH_REQUESTS, "t1"),
        topic_name(Topic.WALLET_COMMANDS, dead_letter=True),
    ] == ["auth.requests", "t1.auth.requests", "wallet.commands.dead-letter"]


def test_committed_json_schemas_are_current() -> None:
    """schemas/json/ holds exactly what `make schemas` would write now."""
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in JSON_DIR.glob("*.schema.json")}
    assert on_disk == rendered(), "JSON Schemas are stale: run `make schemas` and commit schemas/json/"


def test_starter_template_has_every_cap() -> None:
    """The starter template sets a rolling daily, monthly, per-trace and per-authorization cap."""
    caps = template_caps(PolicyTemplate.STARTER, "USD")
    assert (caps.rolling_24h, caps.monthly, caps.per_trace, caps.per_authorization) == (
        Money.of(5_000, "USD"),
        Money.of(50_000, "USD"),
        Money.of(2_000, "USD"),
        Money.of(1_000, "USD"),
    )


def test_settings_require_the_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret has no default: without PURSESTRINGS_DATABASE_URL settings refuse to load."""
    monkeypatch.delenv("PURSESTRINGS_DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="database_url"):
        Settings()


def test_settings_hide_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL is read from the environment and never printed in full."""
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:hunter2@h/db")
    settings = Settings()
    assert ("hunter2" in repr(settings), settings.database_url.get_secret_value()) == (
        False,
        "postgresql://u:hunter2@h/db",
    )


def test_the_authorizer_knows_the_topic_of_every_wallet_event() -> None:
    """A wallet event type without a topic in the authorizer's map failed every command producing
    it (an internal error, dead-lettered): every type the contracts define has one.
    """
    from services.authorizer.runtime import OUTPUT_TOPIC  # noqa: PLC0415 - the runtime pulls in Kafka

    members = typing.get_args(AnyWalletEvent)
    assert {member.model_fields["type"].default for member in members} <= set(OUTPUT_TOPIC)
