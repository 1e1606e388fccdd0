"""`python -m bench._profiled OUT MODULE`: run MODULE as `python -m MODULE` would, and write where
its CPU time went to OUT when it ends, as folded stacks (`frame;frame;... count`, the input of
flamegraph tools; `python -m bench._profiled --summary OUT` prints the largest items).

A sampler driven by the process's own CPU time (`ITIMER_PROF`), not by the clock. The bench's
systems share two cores with the broker, Postgres and the load generator, and a clock-driven
sampler (py-spy, used here before) also counts the time a process spends preempted: a write to a
loopback socket wakes its reader, which often takes the core at once, so py-spy charged 12.7% of
the authorizer's samples at 1,000/s to `StreamWriter.write` where its CPU time was 4.3%, and
showed asyncpg's encoding at 12% where it was under 5% (decision 0005).

How to read it: a sample names the Python frame running when the signal is handled, at the next
bytecode. CPU spent inside a C call (pydantic-core, asyncpg's codecs, a system call) is charged
to the Python line that made the call, as it should be; the event loop's own C work (uvloop
reading sockets, running timers) is charged to the next Python callback it runs. The kernel's tick
sets the real sampling rate (every 4 ms of CPU on this machine), whatever the interval asked.
"""

from __future__ import annotations

import collections
import re
import runpy
import signal
import sys
from pathlib import Path
from types import FrameType

INTERVAL_S = 0.001
_samples: collections.Counter[str] = collections.Counter()


def _sample(_signum: int, frame: FrameType | None) -> None:
    stack = []
    while frame is not None:
        code = frame.f_code
        stack.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        frame = frame.f_back
    _samples[";".join(reversed(stack))] += 1


def profile(out: Path, module: str) -> None:
    """Run `module` as `__main__` under the sampler; write the folded stacks to `out` at its end,
    however it ends (a SIGTERM from the bench ends a service normally).
    """
    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL_S, INTERVAL_S)
    sys.argv = [module]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        out.write_text("".join(f"{stack} {count}\n" for stack, count in _samples.most_common()))


def summary(path: Path, top: int = 40) -> str:
    """The largest items of a folded-stacks file: by inclusive share (a function and everything it
    calls) and by own share (its own lines), line numbers left out.
    """
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r" \((?:.*/)?([^/:]+):\d+\)$", r" (\1)", frame) for frame in stack.split(";")]
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        own[frames[-1]] += int(count)
    lines = [f"{total} samples", "--- inclusive"]
    lines += [f"{100 * n / total:5.1f}% {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["--- own"]
    lines += [f"{100 * n / total:5.1f}% {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        print(summary(Path(sys.argv[2])))
    else:
        profile(Path(sys.argv[1]), sys.argv[2])
