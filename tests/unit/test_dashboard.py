"""The Grafana dashboard only asks for series the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import services.authorizer.metrics
import services.gateway.metrics
import services.ledger.consumer
import services.notifier.metrics  # noqa: F401 - registers the series

pytestmark = pytest.mark.unit
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pursestrings.json"


def test_every_series_on_the_dashboard_exists() -> None:
    """Each metric name in a panel's query is one the code registers (with its _total/_bucket suffix)."""
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    exported = {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes}
    queries = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    named = {name for query in queries for name in re.findall(r"pursestrings_[a-z0-9_]+", query)}
    missing = sorted(named - exported)
    assert not missing, f"the dashboard asks for series nobody exports: {missing}"
    assert len(named) >= 15
