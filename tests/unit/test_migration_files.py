"""The migration runner's file rules, checked without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.platform.migrations import MigrationError, discover


def test_shipped_migrations_are_numbered_without_gaps() -> None:
    """schemas/sql/ runs 0001, 0002, ... in order."""
    versions = [migration.version for migration in discover()]
    assert versions == list(range(1, len(versions) + 1))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "without gaps"),
        (["1_a.sql"], "NNNN_lower_snake.sql"),
        (["0001_Bad-Name.sql"], "NNNN_lower_snake.sql"),
    ],
)
def test_misnumbered_or_misnamed_files_are_refused(tmp_path: Path, names: list[str], message: str) -> None:
    """A gap or a misnamed file stops the runner before it touches a database."""
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        discover(tmp_path)
