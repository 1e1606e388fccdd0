"""`describe_tasks`: where each asyncio task of a quiet process waits, outermost await first, and
a service logs it on SIGUSR1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from services.platform.tasks import describe_tasks


async def _inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _inner(gate)


async def test_each_task_is_described_by_its_chain_of_awaits() -> None:
    """Outermost first: the task's coroutine, the one it awaits, ..., then the future at the bottom."""
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate), name="stuck-here")
    await asyncio.sleep(0)
    try:
        (described,) = [t for t in describe_tasks() if t["task"] == "stuck-here"]
        functions = [line.rsplit(" ", 1)[-1] for line in described["waiting"]]
        assert functions[:3] == ["_outer", "_inner", "wait"]
        assert described["waiting"][0].startswith(f"{__file__}:")
        assert described["waiting"][-1] == "(a future)"
    finally:
        gate.set()
        await task
    assert "stuck-here" not in {t["task"] for t in describe_tasks()}


def test_sigusr1_makes_a_service_loop_log_its_tasks() -> None:
    """The handler `services.platform.service.run` installs, on the uvloop loop services run on."""
    script = textwrap.dedent(
        """
        import asyncio, json, signal, sys, uvloop
        from services.platform.tasks import describe_tasks

        async def parked():
            await asyncio.Event().wait()

        async def main():
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            def dump():
                print(json.dumps(describe_tasks(loop)), flush=True)
                done.set()
            loop.add_signal_handler(signal.SIGUSR1, dump)
            asyncio.create_task(parked(), name="parked")
            print("ready", flush=True)
            await asyncio.wait_for(done.wait(), 20)

        uvloop.run(main())
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    os.kill(process.pid, signal.SIGUSR1)
    dumped = process.stdout.readline()
    assert process.wait(timeout=20) == 0
    assert '"task": "parked"' in dumped
    assert " parked" in dumped
