"""Where every asyncio task of a process is waiting, for a process that has gone quiet.

A stuck asyncio service shows nothing useful to a sampling profiler (the loop sits in its poll);
what matters is the chain of awaits each task is suspended in. `describe_tasks` walks that chain
(coroutine → the coroutine or future it awaits → ...) for every task; a service logs it on SIGUSR1
(`services.platform.service.run`), and the chaos harness asks for it when a run stalls.
"""

from __future__ import annotations

import asyncio
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

_MAX_DEPTH = 40


def describe_tasks(loop: asyncio.AbstractEventLoop | None = None) -> list[dict[str, Any]]:
    """Each pending task of the loop: its name and, outermost first, where it waits."""
    tasks = asyncio.all_tasks(loop)
    return [
        {"task": task.get_name(), "waiting": await_chain(task.get_coro())}
        for task in sorted(tasks, key=lambda t: t.get_name())
        if not task.done()
    ]


def await_chain(awaitable: object) -> list[str]:
    """`file:line function` for each coroutine in the chain, then what the innermost one awaits."""
    chain: list[str] = []
    current: object = awaitable
    for _ in range(_MAX_DEPTH):
        frame = _frame_of(current)
        if frame is None:
            if current is not None:
                chain.append(_describe_leaf(current))
            return chain
        chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        current = _awaited_by(current)
    chain.append("...")
    return chain


def _frame_of(awaitable: object) -> FrameType | None:
    if isinstance(awaitable, CoroutineType):
        return awaitable.cr_frame
    if isinstance(awaitable, GeneratorType):
        return awaitable.gi_frame
    frame = getattr(awaitable, "cr_frame", None)  # Cython coroutines (uvloop, asyncpg) mimic the protocol
    return frame if isinstance(frame, FrameType) else None


def _awaited_by(awaitable: object) -> object:
    if isinstance(awaitable, GeneratorType):
        return awaitable.gi_yieldfrom
    return getattr(awaitable, "cr_await", None)


def _describe_leaf(leaf: object) -> str:
    if isinstance(leaf, asyncio.Task):
        return f"task {leaf.get_name()}"
    if isinstance(leaf, asyncio.Future):
        return f"future {'done' if leaf.done() else 'pending'}: {leaf!r}"[:300]
    if type(leaf).__name__ == "FutureIter":  # `await future`: the line above says which
        return "(a future)"
    return f"{type(leaf).__name__}: {leaf!r}"[:300]
