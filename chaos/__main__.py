"""`make chaos [SEED=n SECONDS=s]`: one seeded chaos run; prints the summary line, writes
chaos/results/latest.json, exits 1 when a guarantee failed. `make soak MINUTES=30` is a long one at a
steady rate, printing progress and every process's memory each minute.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from chaos.harness import Config
from chaos.run import run, summary_line
from services.platform.logging import configure_logging


def main() -> int:
    """Parse the options, run, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the storm lasts")
    parser.add_argument("--events", type=int, default=0, help="run until this many events (at most --seconds)")
    parser.add_argument("--wallets", type=int, default=12)
    parser.add_argument("--rate", type=float, default=80.0, help="workload actions per second")
    parser.add_argument("--fault-every", type=float, default=5.0, help="mean seconds between faults")
    parser.add_argument("--faults", default="", help="comma-separated subset of the faults (default: all)")
    parser.add_argument("--report-every", type=float, default=0.0, help="print progress and memory this often")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1, 10**9)
    configure_logging("warning")
    faults = tuple(f for f in options.faults.split(",") if f) or Config(seed=seed).faults
    config = Config(faults=faults, seed=seed, wallets=options.wallets, seconds=options.seconds, rate_per_s=options.rate,
                    fault_every_s=options.fault_every, report_every_s=options.report_every,
                    events=options.events)  # fmt: skip
    command = " ".join(["python -m chaos", *sys.argv[1:]])
    summary = asyncio.run(run(config, command=command))
    print(summary_line(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
