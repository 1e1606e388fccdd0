"""Wiring for the authorizer: builds the pool and the consumer loop from settings; the one place
it connects. Nothing connects at import.
"""

from __future__ import annotations

import asyncpg

from services.authorizer.rates import load_rate_table
from services.authorizer.runtime import Authorizer
from services.authorizer.state import NO_RATES
from services.platform.service import Service, pooled_service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8081


def build(settings: Settings, health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The authorizer process, ready for `services.platform.service.run`."""

    def make(pool: asyncpg.Pool) -> Authorizer:
        rates = NO_RATES if settings.fx_rates_file is None else load_rate_table(settings.fx_rates_file)
        return Authorizer(settings, pool, rates=rates)

    return pooled_service("authorizer", settings, health_port, make)
