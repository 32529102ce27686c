"""The offline path's own decode lane on CPU: one thread at the lowest scheduling priority, beside the live pool.

Why: sharing the live pool's worker (`Engine.run_background`) makes an upload's job wait until no speaker wants
a decode, but once it starts, a batched minute of audio holds the worker for seconds. Measured 2026-12-03 on two
cores: a live speaker's word -> committed p95 went from 3.1 s alone to 10.6 s beside a one-hour upload. Yet one
live decode keeps only about 1.1 of the 2 cores busy. So on CPU the offline path gets a copy of the model of its
own (`--offline-threads` threads; base int8 is about 100 MB) in a thread whose nice value is 19, set before the
model is loaded so CTranslate2's worker threads inherit it: the kernel then gives it the CPU the live decodes
leave and takes it back the moment they want it (a nice-19 thread weighs 15 against 1024 at nice 0).

With no live speaker there is nothing to leave room for, and one thread is half the machine: a 10-minute file
took RTF 0.171 on one thread against 0.096 on both cores (2026-12-03). So a job asks for the `wide` copy (every
core, `--offline-idle-threads`) when no speaker is admitted as it starts, the narrow one otherwise; each copy is
loaded on first use, and a speaker who arrives meanwhile competes with at most one chunk (60 s of audio, about
6 s of decoding) at the lowest priority. With the wide copy beside a live speaker all the time, that speaker's p95
rose from 2.23 s to 3.06 s; with the narrow one it was 2.08 s against 2.56 s alone.

Jobs run one at a time in FIFO order; a job whose caller was cancelled before it started is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
NICE = 19


def lower_this_thread() -> bool:
    """Give the calling thread (and the threads it starts later) the lowest CPU priority; False where the OS
    does not allow per-thread priorities (they are a Linux feature)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        return True
    except (AttributeError, OSError):
        return False


class Lane:
    """A single low-priority thread that runs blocking jobs; `load(threads)` makes what the jobs share (a model
    copy with that many threads) on that thread on first use, so whatever threads it starts inherit the priority."""

    def __init__(self, load: Callable[[int], Any], narrow: int, wide: int):
        self._load = load
        self.threads = {False: narrow, True: max(narrow, wide)}
        self._loaded: dict[int, Any] = {}
        self.niced = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="offline", initializer=self._init)
        self._gate = asyncio.Lock()  # FIFO: asyncio.Lock wakes waiters in order
        self.waiting = 0
        self.jobs = {False: 0, True: 0}  # jobs run on the narrow and on the wide copy

    def _init(self) -> None:
        self.niced = lower_this_thread()
        if not self.niced:
            log.warning("offline lane: per-thread priority not available; uploads compete with live decodes")

    def _run(self, fn: Callable[[Any], T], threads: int) -> T:
        if threads not in self._loaded:
            self._loaded[threads] = self._load(threads)
        return fn(self._loaded[threads])

    async def run(self, fn: Callable[[Any], T], wide: Callable[[], bool] = lambda: False) -> T:
        """Run `fn(loaded)` on the lane, after the jobs queued before it; on the wide copy if `wide()` says so
        when the job starts."""
        self.waiting += 1
        started = False
        try:
            async with self._gate:
                started = True
                self.waiting -= 1
                use_wide = wide()
                self.jobs[use_wide] += 1
                future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn,
                                                                    self.threads[use_wide])
                try:
                    return await asyncio.shield(future)
                except asyncio.CancelledError:  # the lane stays taken until the job on the thread is over
                    with contextlib.suppress(BaseException):
                        await future
                    raise
        finally:
            if not started:
                self.waiting -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
