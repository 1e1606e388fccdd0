"""`make docs`: the gateway's OpenAPI document and an AsyncAPI 3.0 document of every Kafka topic,
written to docs/api/ (committed; a unit test fails when they are stale).

The AsyncAPI document is built from the contracts (`schemas/`), the one place the services agree:
each topic is a channel keyed by wallet id, with the JSON Schema of its messages, and each service's
operations say which topics it sends to and receives from (ARCHITECTURE.md's table).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from schemas.registry import json_schema
from schemas.topics import Topic
from services.gateway.http import create_app
from services.platform.settings import Settings

API_DIR = Path(__file__).resolve().parent.parent / "docs" / "api"
# Who writes and who reads each topic (ARCHITECTURE.md).
_FLOWS: dict[Topic, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Topic.AUTH_REQUESTS: (("gateway",), ("authorizer",)),
    Topic.AUTH_DECISIONS: (("authorizer",), ("gateway", "ledger", "notifier")),
    Topic.WALLET_COMMANDS: (("gateway", "notifier"), ("authorizer",)),
    Topic.WALLET_EVENTS: (("authorizer",), ("ledger", "notifier", "gateway")),
    Topic.ISSUER_EVENTS: (("gateway", "authorizer"), ("authorizer", "ledger")),
}


def openapi() -> dict[str, Any]:
    """The gateway's OpenAPI document, as it serves it at /openapi.json."""
    settings = Settings(database_url=SecretStr("postgresql://docs@localhost/docs"))
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def asyncapi() -> dict[str, Any]:
    """Every topic as an AsyncAPI 3.0 channel, with each service's send and receive operations."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in Topic:
        name = topic.value.replace(".", "_")
        channels[name] = {
            "address": topic.value,
            "description": f"Kafka topic `{topic.value}` (with the deployment's prefix), keyed by wallet id; "
            f"its dead-letter twin is `{topic.value}.dead-letter`.",
            "messages": {f"{name}_message": {"name": topic.value, "contentType": "application/json",
                                             "payload": json_schema(topic)}},
        }  # fmt: skip
        senders, receivers = _FLOWS[topic]
        for action, services in (("send", senders), ("receive", receivers)):
            for service in services:
                operations[f"{service}_{action}s_{name}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{name}"},
                    "summary": f"{service} {action}s {topic.value}",
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "pursestrings events",
            "version": "1",
            "description": "Every event and command between the pursestrings services. Money is integer minor "
            "units with an ISO 4217 currency; every message carries its schema_version.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
    }


def rendered() -> dict[str, str]:
    """File name → the text it must hold."""
    return {
        "openapi.json": json.dumps(openapi(), indent=2, sort_keys=True) + "\n",
        "asyncapi.json": json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n",
    }


def main() -> int:
    """Write docs/api/."""
    API_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (API_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(rendered())} to {API_DIR}")  # noqa: T201 - a CLI says what it did
    return 0


if __name__ == "__main__":
    sys.exit(main())
