"""Entry point: `python -m services.ledger` runs the ledger service until SIGINT or SIGTERM."""

from __future__ import annotations

from services.ledger.app import DEFAULT_HEALTH_PORT, build
from services.platform.service import main

if __name__ == "__main__":
    main("ledger", build, DEFAULT_HEALTH_PORT)
