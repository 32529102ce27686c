"""realtime.asr.lane: the offline path's own low-priority thread. Its thread (and threads started from it, as
CTranslate2's workers are) run at nice 19; jobs run one at a time in order; a job cancelled before it starts never
runs, and one cancelled while running keeps the lane until it is over."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from realtime.asr.lane import NICE, Lane


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread priority is a Linux feature")
def test_the_lane_and_threads_it_starts_run_at_the_lowest_priority() -> None:
    def load(threads: int) -> dict:
        seen: dict = {"loader": nice_of_this_thread(), "threads": threads}
        child = threading.Thread(target=lambda: seen.__setitem__("child", nice_of_this_thread()))
        child.start()
        child.join()
        return seen

    async def main() -> tuple[dict, int]:
        lane = Lane(load, 1, 2)
        try:
            return await lane.run(lambda loaded: loaded), await lane.run(lambda _: nice_of_this_thread())
        finally:
            lane.close()

    loaded, job = asyncio.run(main())
    assert loaded == {"loader": NICE, "child": NICE, "threads": 1} and job == NICE
    assert nice_of_this_thread() < NICE  # the caller's own thread is untouched


def test_jobs_run_in_order_and_a_cancelled_waiter_never_runs() -> None:
    ran: list[str] = []

    def job(name: str, seconds: float):
        def run(_loaded) -> str:
            time.sleep(seconds)
            ran.append(name)
            return name
        return run

    async def main() -> list:
        lane = Lane(lambda _: object(), 1, 1)
        try:
            first = asyncio.create_task(lane.run(job("a", 0.3)))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(lane.run(job("b", 0.0)))
            third = asyncio.create_task(lane.run(job("c", 0.0)))
            await asyncio.sleep(0.05)
            assert lane.waiting == 2
            second.cancel()
            results = await asyncio.gather(first, second, third, return_exceptions=True)
            return results
        finally:
            lane.close()

    results = asyncio.run(main())
    assert results[0] == "a" and isinstance(results[1], asyncio.CancelledError) and results[2] == "c"
    assert ran == ["a", "c"]


def test_a_job_cancelled_while_running_holds_the_lane_until_it_ends() -> None:
    ran: list[tuple[str, float]] = []

    def job(name: str, seconds: float):
        def run(_loaded) -> None:
            time.sleep(seconds)
            ran.append((name, time.monotonic()))
        return run

    async def main() -> float:
        lane = Lane(lambda _: object(), 1, 1)
        try:
            running = asyncio.create_task(lane.run(job("long", 0.4)))
            await asyncio.sleep(0.1)
            running.cancel()
            start = time.monotonic()
            await lane.run(job("next", 0.0))
            return start
        finally:
            lane.close()

    start = asyncio.run(main())
    assert [name for name, _ in ran] == ["long", "next"] and ran[1][1] - start > 0.2


def test_a_job_takes_the_wide_copy_when_asked_as_it_starts() -> None:
    """Two copies, each loaded once on first use: the narrow one beside live speakers, the wide one without."""
    loads: list[int] = []

    def load(threads: int) -> int:
        loads.append(threads)
        return threads

    async def main() -> list[int]:
        lane = Lane(load, 1, 4)
        speakers = [1]
        try:
            out = [await lane.run(lambda n: n, wide=lambda: speakers[0] == 0)]
            speakers[0] = 0
            out += [await lane.run(lambda n: n, wide=lambda: speakers[0] == 0) for _ in range(2)]
            speakers[0] = 2
            out.append(await lane.run(lambda n: n, wide=lambda: speakers[0] == 0))
            assert lane.jobs == {False: 2, True: 2}
            return out
        finally:
            lane.close()

    assert asyncio.run(main()) == [1, 4, 4, 1] and loads == [1, 4]
