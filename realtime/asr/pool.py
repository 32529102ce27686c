"""The decoder pool: one shared model, a few worker threads, and a scheduler that decides what runs next.

Each admitted stream has at most one decode in flight. When a worker is free the scheduler takes a final first
(oldest waiting), otherwise the partial of the stream that waited longest; partial work coalesces because a stream
only ever asks for a decode of its newest buffer, and a stream lagging more than `max_lag_s` gets no partials until
it catches up. Admission beyond `max_speakers` is refused with `server_full`.

Offline work (uploaded files, `POST /v1/audio/transcriptions`) goes through `run_background`: a low-priority lane
that takes a free worker only when no admitted stream has a final or a partial waiting, and runs one background
job at a time. Live decodes keep strict priority; a background job already on a worker is never interrupted (a
CTranslate2 call cannot be), so live work waits for at most the one background chunk in flight: its callers keep
chunks short (realtime.asr.offline cuts files into 60 s chunks) for that reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from realtime.core.audio import SAMPLE_RATE
from realtime.core.hallucination import Segment
from realtime.core.lecture import DecodeRequest, LectureStream
from realtime.core.protocol import SERVER_FULL, SPEAKER_EXISTS, Event, ProtocolError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Decoder(Protocol):
    name: str

    def decode(self, req: DecodeRequest) -> tuple[list[Segment], str | None]: ...


@dataclass
class Handle:
    """An admitted stream and where its events go."""

    key: str
    stream: LectureStream
    publish: Callable[[Event], None]
    busy: bool = False
    waiting_since: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Stats:
    decodes: dict[str, int] = field(default_factory=lambda: {"partial": 0, "final": 0})
    decode_s: dict[str, float] = field(default_factory=lambda: {"partial": 0.0, "final": 0.0})
    errors: int = 0
    refused: int = 0
    background: int = 0  # background jobs run (run_background)
    background_s: float = 0.0


class Engine:
    def __init__(self, decoder: Decoder, workers: int = 1, max_speakers: int = 2):
        self.decoder = decoder
        self.workers = max(1, workers)
        self.max_speakers = max(1, max_speakers)
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
        self._handles: dict[str, Handle] = {}
        self._busy = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._background: deque[tuple[Callable[[], Any], asyncio.Future]] = deque()
        self._background_busy = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="engine-dispatch")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        while self._background:
            self._background.popleft()[1].cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- admission

    def admit(self, key: str, stream: LectureStream, publish: Callable[[Event], None]) -> Handle:
        if key in self._handles:
            raise ProtocolError(SPEAKER_EXISTS, "this room's previous stream is still being finished")
        if len(self._handles) >= self.max_speakers:
            self.stats.refused += 1
            raise ProtocolError(SERVER_FULL, f"the server is transcribing {len(self._handles)} lectures, its limit; "
                                             "try again later")
        handle = Handle(key, stream, publish)
        self._handles[key] = handle
        return handle

    def finish(self, handle: Handle) -> None:
        """The stream will get no more audio; release it once its last final is out."""
        handle.stream.stopped = True
        self.kick()

    @property
    def speakers(self) -> int:
        return len(self._handles)

    @property
    def queue_depth(self) -> int:
        return sum(h.stream.pending_finals + h.stream.wants_partial() for h in self._handles.values())

    def lags(self) -> dict[str, float]:
        """Each admitted stream's lag behind its audio, by room."""
        return {key: round(h.stream.lag_s, 2) for key, h in self._handles.items()}

    def kick(self) -> None:
        self._wake.set()

    @property
    def background_waiting(self) -> int:
        """Background jobs queued behind the one running (if any)."""
        return sum(not fut.done() for _, fut in self._background)

    async def run_background(self, fn: Callable[[], T]) -> T:
        """Run the blocking `fn` on a decode worker at low priority and return its result.

        It starts only when a worker is free and no admitted stream wants a decode, and only one background job
        runs at a time (a second waits in FIFO order), so live speakers never wait for more than one job. Cancelling
        the caller drops a job that has not started; one already running finishes on its worker (its result is
        dropped) and holds the lane until then. `fn`'s exception is raised here.
        """
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._background.append((fn, fut))
        self.kick()
        return await fut

    # ---------------------------------------------------------------- scheduling

    def _pick(self) -> Handle | None:
        best: Handle | None = None
        best_key: tuple = ()
        for h in self._handles.values():
            if h.busy:
                continue
            if h.stream.wants_final():
                key = (0, h.waiting_since)
            elif h.stream.wants_partial():
                key = (1, h.waiting_since)
            else:
                continue
            if best is None or key < best_key:
                best, best_key = h, key
        return best

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._release_idle()
            while self._busy < self.workers:
                handle = self._pick()
                if handle is None:
                    self._start_background()
                    break
                req = handle.stream.next_request()
                if req is None:
                    continue
                handle.busy = True
                self._busy += 1
                asyncio.get_running_loop().create_task(self._run(handle, req))

    def _start_background(self) -> None:
        """Hand a free worker to the oldest background job; called only when no live decode is waiting."""
        if self._background_busy or self._busy >= self.workers:
            return
        while self._background:
            fn, fut = self._background.popleft()
            if not fut.done():  # a cancelled caller's job is dropped before it starts
                break
        else:
            return
        self._background_busy = True
        self._busy += 1
        asyncio.get_running_loop().create_task(self._run_background(fn, fut))

    async def _run_background(self, fn: Callable[[], Any], fut: asyncio.Future) -> None:
        started = time.monotonic()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except asyncio.CancelledError:  # the engine is closing
            fut.cancel()
            raise
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(result)
        finally:
            self.stats.background += 1
            self.stats.background_s += time.monotonic() - started
            self._background_busy = False
            self._busy -= 1
            self.kick()

    def _release_idle(self) -> None:
        for key, h in list(self._handles.items()):
            if h.stream.stopped and h.stream.idle and not h.busy:
                del self._handles[key]
                h.done.set()

    async def _run(self, handle: Handle, req: DecodeRequest) -> None:
        started = time.monotonic()
        try:
            segments, language = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.decoder.decode, req)
        except Exception:
            log.exception("decode failed (%s, utterance %d)", req.kind, req.utterance)
            self.stats.errors += 1
            segments, language = [], None
        elapsed = time.monotonic() - started
        log.debug("%s: %s%s decode of utterance %d, %.2f s of audio, in %.2f s", handle.key, req.kind,
                  " (early)" if req.early else "", req.utterance, len(req.audio) / SAMPLE_RATE, elapsed)
        self.stats.decodes[req.kind] += 1
        self.stats.decode_s[req.kind] += elapsed
        try:
            for event in handle.stream.on_result(req, segments, language):
                handle.publish(event)
        except Exception:
            log.exception("applying a decode result failed")
            self.stats.errors += 1
        finally:
            handle.busy = False
            handle.waiting_since = time.monotonic()
            self._busy -= 1
            self.kick()
