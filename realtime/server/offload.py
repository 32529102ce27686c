"""A bounded executor for CPU-heavy work that requests ask for: retrieval, summaries, export layout.

On the event loop such work freezes every room's captions (measured on a 6.9-hour room: one SRT export stalled the
loop 2-4.7 s). Here it runs on one worker thread: the loop keeps serving while it runs (Python hands the GIL back to
the loop thread every few milliseconds), at most one such job competes with the decoders for the CPU at a time, and
since jobs run one after another, the indexes and caches they touch need no locks. At most `max_waiting` jobs may
wait; beyond that a request is refused (`Busy`, answered 503) rather than queued without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(RuntimeError):
    """Too many jobs are waiting; try again shortly."""


class Offload:
    def __init__(self, max_waiting: int = 16):
        self.max_waiting = max_waiting
        self.waiting = 0
        self.jobs = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="offload")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.waiting >= self.max_waiting:
            raise Busy(f"{self.waiting} jobs are waiting")
        self.waiting += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.waiting -= 1
        self.jobs += 1
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
