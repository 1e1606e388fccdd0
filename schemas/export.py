"""Writes the JSON Schema of every topic's messages into `schemas/json/` (`make schemas`).

The files are committed so that non-Python consumers can read the contracts; a unit test fails
when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.registry import json_schema
from schemas.topics import Topic

JSON_DIR = Path(__file__).parent / "json"


def rendered() -> dict[str, str]:
    """File name → the text it must hold."""
    return {
        f"{topic.value}.schema.json": json.dumps(json_schema(topic), indent=2, sort_keys=True) + "\n" for topic in Topic
    }


def main() -> int:
    """Write every schema file, and remove files for topics that no longer exist."""
    JSON_DIR.mkdir(exist_ok=True)
    wanted = rendered()
    for stale in {path.name for path in JSON_DIR.glob("*.schema.json")} - set(wanted):
        (JSON_DIR / stale).unlink()
    for name, text in wanted.items():
        (JSON_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(wanted)} schemas to {JSON_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
