"""Wiring for the ledger service: builds its pool and consumer loop from settings; the one place it
connects. Nothing connects at import.
"""

from __future__ import annotations

from services.ledger.consumer import Ledger
from services.platform.service import Service, pooled_service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8082


def build(settings: Settings, health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The ledger process, ready for `services.platform.service.run`."""
    return pooled_service("ledger", settings, health_port, lambda pool: Ledger(settings, pool))
