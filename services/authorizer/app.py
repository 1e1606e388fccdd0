"""Wiring for the authorizer service: builds its Service from settings; the one place it connects.

Skeleton: it prepares Kafka and Postgres and answers /healthz; its handlers arrive with its issue.
"""

from __future__ import annotations

from services.platform.service import Service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8081


def build(settings: Settings, health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The authorizer process, ready for `services.platform.service.run`."""
    return Service(name="authorizer", settings=settings, health_port=health_port)
