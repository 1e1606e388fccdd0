"""Wiring for the ledger service: builds its Service from settings; the one place it connects.

Skeleton: it prepares Kafka and Postgres and answers /healthz; its handlers arrive with its issue.
"""

from __future__ import annotations

from services.platform.service import Service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8082


def build(settings: Settings, health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The ledger process, ready for `services.platform.service.run`."""
    return Service(name="ledger", settings=settings, health_port=health_port)
