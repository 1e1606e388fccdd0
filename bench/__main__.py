"""`make bench`: runs every benchmark module under bench/ (authorizer, ledger, webhook), each writing
bench/results/<name>.json. `BENCH_PROFILE=1` adds a CPU-time profile of the authorizer and of the
gateway (bench/results/*-profile.txt, not committed).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    """Run `main()` of each bench/<name>.py, in name order."""
    found = [
        module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)]) if not module.name.startswith("_")
    ]
    if not found:
        print("no benchmarks yet (bench/ is empty)")
        return 0
    for name in sorted(found):
        print(f"bench: {name}")
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
