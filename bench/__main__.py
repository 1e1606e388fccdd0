"""`make bench`: runs every benchmark module under bench/ and says where its results went.

No benchmark exists yet: the first ones arrive with the authorizer and the ledger.
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
