"""bench/_profiled.py: the bench's CPU-time sampler (BENCH_PROFILE=1) charges CPU to the code that
spent it, and not the time a process sleeps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench._profiled import summary

_BUSY_THEN_IDLE = """
import time

def burn():
    spent = time.process_time()
    total = 0
    while time.process_time() - spent < 0.4:
        total += sum(range(1000))
    return total

def rest():
    time.sleep(0.6)

burn()
rest()
"""


def test_cpu_time_is_charged_to_the_code_that_spent_it(tmp_path: Path) -> None:
    """A module that burns ~0.4 s of CPU, then sleeps 0.6 s: the samples land on the burning."""
    (tmp_path / "busy_then_idle.py").write_text(_BUSY_THEN_IDLE)
    out = tmp_path / "profile.txt"
    subprocess.run(
        [sys.executable, "-m", "bench._profiled", str(out), "busy_then_idle"],
        check=True,
        cwd=Path(__file__).parents[2],
        env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[2]}"},
        timeout=60,
    )
    stacks = out.read_text().splitlines()
    burning = sum(int(line.rpartition(" ")[2]) for line in stacks if ";burn (" in line)
    resting = sum(int(line.rpartition(" ")[2]) for line in stacks if ";rest (" in line)
    assert burning >= 20  # ~0.4 s of CPU at one sample per kernel tick (1-4 ms)
    assert resting <= 1  # sleeping spends no CPU, however long


def test_summary_folds_line_numbers_and_ranks_inclusive_and_own(tmp_path: Path) -> None:
    """`--summary` merges a function's lines and ranks it with and without what it calls."""
    folded = tmp_path / "folded.txt"
    folded.write_text(
        "main (/x/app.py:1);work (/x/app.py:5);encode (/y/codec.py:9) 3\nmain (/x/app.py:1);work (/x/app.py:6) 1\n"
    )
    text = summary(folded)
    assert text.splitlines()[0] == "4 samples"
    inclusive, own = text.split("--- own")
    assert "100.0% work (app.py)" in inclusive
    assert " 75.0% encode (codec.py)" in own
    assert " 25.0% work (app.py)" in own
