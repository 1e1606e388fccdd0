"""`make docs` regenerates what is committed: the OpenAPI and AsyncAPI documents in docs/api/."""

from __future__ import annotations

import pytest

from services.docs import API_DIR, rendered

pytestmark = pytest.mark.unit


def test_committed_api_documents_are_current() -> None:
    """Run `make docs` when this fails."""
    for name, text in rendered().items():
        assert (API_DIR / name).read_text(encoding="utf-8") == text, f"docs/api/{name} is stale: run make docs"


def test_every_topic_is_a_channel_with_its_schema() -> None:
    """The AsyncAPI document names each topic, who sends and who receives it."""
    import json  # noqa: PLC0415

    document = json.loads(rendered()["asyncapi.json"])
    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == {
        "auth.requests", "auth.decisions", "wallet.commands", "wallet.events", "issuer.events"
    }  # fmt: skip
    assert "ledger_receives_auth_decisions" in document["operations"]
