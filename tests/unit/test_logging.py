"""Logging writes one JSON object per line off a terminal, with trace and wallet ids bound."""

from __future__ import annotations

import json

import pytest
import structlog

from services.platform.logging import bound_ids, configure_logging, get_logger


def test_json_lines_carry_bound_trace_and_wallet_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """Ids bound for a unit of work appear on its log lines, and only inside it."""
    configure_logging("info", "json")
    log = get_logger("authorizer")
    with bound_ids(trace_id="PR-4823", wallet_id="wal_1"):
        log.info("decided", approved=True)
    log.info("idle")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    for line in lines:
        line.pop("timestamp")
    assert lines == [
        {"component": "authorizer", "event": "decided", "approved": True, "level": "info",
         "trace_id": "PR-4823", "wallet_id": "wal_1"},
        {"component": "authorizer", "event": "idle", "level": "info"},
    ]  # fmt: skip
    structlog.reset_defaults()
