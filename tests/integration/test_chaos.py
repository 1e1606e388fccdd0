"""A small seeded chaos run inside `make test` (`make chaos` runs a longer one): the services as
processes under kills, a second authorizer, a stall past the deadline, and a Postgres restart, with
bad webhooks among the traffic; the oracle must find nothing wrong. The seed is in the failure
message and in chaos/results/latest.json.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.harness import Config
from chaos.run import run, summary_line
from services.platform.settings import Settings
from tests.support.infra import Infrastructure

pytestmark = pytest.mark.slow
SEED = 7


async def test_a_short_storm_breaks_no_guarantee(
    settings: Settings, infrastructure: Infrastructure, tmp_path: Path
) -> None:
    """Every guarantee holds after a 25 s storm with a fault every 4 s on average."""
    # postgres_full stays out of the short run until the stall it found is fixed: seed 7 with it, a
    # zombie and a rebalance just before, left both authorizers processing nothing afterwards (16
    # holds never released; issue 22's note, decision 0009). `make chaos` keeps it.
    faults = tuple(fault for fault in Config(seed=SEED).faults if fault != "postgres_full")
    if infrastructure.source != "local":  # deploy/ restarts the local servers only
        faults = tuple(
            fault
            for fault in faults
            if fault not in {"restart_postgres", "restart_kafka", "postgres_full", "crash_kafka"}
        )
    config = Config(seed=SEED, wallets=6, seconds=25, rate_per_s=50, fault_every_s=4, faults=faults)
    summary = await run(config, settings, results=tmp_path / "chaos.json")
    assert summary["passed"], summary_line(summary) + f"\n{summary['details']}"
    assert summary["events"] > 100  # fewer while a broker restart or a zombie pause holds the storm up
    faults = ("kills", "rebalances", "stalls", "postgres_restarts", "kafka_restarts", "postgres_full", "kafka_crashes")
    assert sum(summary[fault] for fault in faults) > 0
    # Bad webhooks among the traffic (unsigned, stale, oversized, nested, unknown card...): each got
    # the refusal or decline its kind must get (a surprise fails `passed` above), none crashed anything.
    by_kind = summary["bad_inputs_by_kind"]
    assert summary["bad_inputs"] > 0
    assert all(counts["as_expected"] == counts["sent"] for counts in by_kind.values()), by_kind
