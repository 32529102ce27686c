"""The decoder pool's low-priority lane (Engine.run_background), scheduling order only: a tiny in-test decoder that
records what ran, real LectureStreams fed synthetic PCM. The real model runs through the lane in the e2e tests."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from realtime.asr.pool import Engine
from realtime.core.lecture import DecodeRequest, LectureStream, StreamConfig
from realtime.core.protocol import Start
from realtime.core.vad import Segmenter

RATE = 16000


class RecordingDecoder:
    """Decodes nothing; logs each live decode (and how many jobs ran at once) in the order the workers ran them."""

    name = "recording"

    def __init__(self, log: list[str], delay_s: float = 0.0):
        self.log = log
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def decode(self, req: DecodeRequest):
        with self.lock:
            self.log.append(req.kind)
        time.sleep(self.delay_s)
        return [], None


def voiced(seconds: float) -> bytes:
    n = round(seconds * RATE)
    return np.where(np.arange(n) % 2, 1000, -1000).astype("<i2").tobytes()


def utterance_stream() -> LectureStream:
    """A stream holding one ended utterance (it wants a final) fed before any decode ran."""
    seg = Segmenter(lambda frame: any(frame), frame_ms=30, preroll_ms=300, hangover_ms=300, min_speech_ms=180)
    stream = LectureStream(seg, Start(language="en"), StreamConfig(prompt_chars=0))
    stream.feed(voiced(1.0) + bytes(RATE * 2))
    assert stream.wants_final()
    return stream


def job(log: list[str], name: str, gate: threading.Event | None = None, running: list[int] | None = None):
    """A background job that logs its start, optionally blocks until `gate` opens, and counts overlap."""

    def fn() -> str:
        if running is not None:
            running.append(1)
            assert sum(running) <= 1, "two background jobs ran at once"
        log.append(name)
        if gate is not None:
            assert gate.wait(10)
        if running is not None:
            running.append(-1)
        return name

    return fn


async def until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_live_decodes_go_before_queued_background_jobs() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        engine = Engine(RecordingDecoder(log), workers=1, max_speakers=2)
        engine.start()
        gate = threading.Event()
        first = asyncio.ensure_future(engine.run_background(job(log, "bg1", gate)))
        await until(lambda: log == ["bg1"])  # nothing live: the lane takes the free worker
        second = asyncio.ensure_future(engine.run_background(job(log, "bg2")))
        handle = engine.admit("room", utterance_stream(), lambda e: None)
        engine.finish(handle)
        engine.kick()
        await asyncio.sleep(0.05)
        assert log == ["bg1"], "the running background job holds its worker; nothing else started"
        gate.set()
        assert await first == "bg1" and await second == "bg2"
        await asyncio.wait_for(handle.done.wait(), 5)
        await engine.close()
        return log

    log = asyncio.run(main())
    # The live final waited for the one background job already running, then went before the queued one.
    assert log[:2] == ["bg1", "final"] and log[-1] == "bg2", log
    assert log.count("bg2") == 1


def test_background_waits_while_any_live_decode_is_wanted() -> None:
    """With two workers and a live stream busy on one, a background job still runs on the other only once no
    admitted stream wants a decode; here the stream's final is in flight and it wants nothing else."""

    async def main() -> list[str]:
        log: list[str] = []
        engine = Engine(RecordingDecoder(log, delay_s=0.3), workers=2, max_speakers=2)
        engine.start()
        a = engine.admit("a", utterance_stream(), lambda e: None)
        b = engine.admit("b", utterance_stream(), lambda e: None)
        engine.finish(a)
        engine.finish(b)
        result = asyncio.ensure_future(engine.run_background(job(log, "bg")))
        engine.kick()
        assert await result == "bg"
        await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait()), 5)
        await engine.close()
        return log

    log = asyncio.run(main())
    assert log == ["final", "final", "bg"], log  # both finals took both workers before the lane got one


def test_one_background_job_at_a_time_even_with_free_workers() -> None:
    async def main() -> None:
        log: list[str] = []
        running: list[int] = []
        engine = Engine(RecordingDecoder(log), workers=3)
        engine.start()
        gate = threading.Event()
        jobs = [asyncio.ensure_future(engine.run_background(job(log, f"bg{i}", gate, running))) for i in range(3)]
        await until(lambda: log == ["bg0"])
        await asyncio.sleep(0.05)
        assert log == ["bg0"] and engine.background_waiting == 2
        gate.set()
        assert await asyncio.gather(*jobs) == ["bg0", "bg1", "bg2"]  # FIFO
        assert log == ["bg0", "bg1", "bg2"]
        assert engine.stats.background == 3
        await engine.close()

    asyncio.run(main())


def test_cancelled_queued_job_never_runs_and_errors_reach_the_caller() -> None:
    async def main() -> None:
        log: list[str] = []
        engine = Engine(RecordingDecoder(log), workers=1)
        engine.start()
        gate = threading.Event()
        first = asyncio.ensure_future(engine.run_background(job(log, "bg1", gate)))
        await until(lambda: log == ["bg1"])
        queued = asyncio.ensure_future(engine.run_background(job(log, "never")))
        await asyncio.sleep(0.01)
        queued.cancel()
        gate.set()
        assert await first == "bg1"

        def boom() -> None:
            raise ValueError("bad chunk")

        with pytest.raises(ValueError, match="bad chunk"):
            await engine.run_background(boom)
        assert await engine.run_background(job(log, "after")) == "after"  # the lane is free again
        assert log == ["bg1", "after"]
        with pytest.raises(asyncio.CancelledError):
            await queued
        await engine.close()

    asyncio.run(main())


def test_live_work_arriving_during_a_background_job_waits_for_that_job_only() -> None:
    """A stream admitted while a chunk runs: its final runs as soon as the chunk is done, before two more queued
    background jobs, and the lane resumes once the stream wants nothing."""

    async def main() -> list[str]:
        log: list[str] = []
        engine = Engine(RecordingDecoder(log), workers=1)
        engine.start()
        gate = threading.Event()
        jobs = [asyncio.ensure_future(engine.run_background(job(log, "bg0", gate)))]
        await until(lambda: log == ["bg0"])
        jobs += [asyncio.ensure_future(engine.run_background(job(log, f"bg{i}"))) for i in (1, 2)]
        handle = engine.admit("room", utterance_stream(), lambda e: None)
        engine.finish(handle)
        await asyncio.sleep(0.02)
        gate.set()
        await asyncio.gather(*jobs)
        await engine.close()
        return log

    log = asyncio.run(main())
    assert log == ["bg0", "final", "bg1", "bg2"], log
