"""An uploaded recording being transcribed into a room (`UploadJob`, the room's session while it runs), and what it
publishes: finals on the room's lecture clock through the live path's hallucination guards, `status` events with
the upload's progress, and at the end the notes flush and summary a speaker's `stop` brings. The endpoints are in
`upload.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from realtime.asr.offline import AudioError, decode_chunks, probe, transcribe_file
from realtime.core.agreement import HypWord, join_words
from realtime.core.audio import SAMPLE_RATE
from realtime.core.hallucination import Segment, clean
from realtime.core.protocol import INTERNAL, UNNUMBERED, Final, Status, Word
from realtime.core.room import Room
from realtime.server import appkeys
from realtime.server.appkeys import ENGINE, NOTES, ROOMS, SETTINGS
from realtime.server.ws import model_name

log = logging.getLogger(__name__)


def offline(app: web.Application) -> Any:
    """The server's OfflineTranscriber (`appkeys.OFFLINE`, set where the model is loaded), or None."""
    key = getattr(appkeys, "OFFLINE", None)
    return app.get(key) if key is not None else None


@dataclass(frozen=True)
class UploadStatus(Status):
    """A `status` while an upload runs or as it ends: the live fields plus `upload` (docs/protocol.md)."""

    upload: dict[str, Any] | None = None


class _NoSocket:
    """The Session protocol's `conn` for a session without a socket: there is nobody to send replies to."""

    role = "upload"

    def catch_up(self, texts: list[str]) -> None:
        return None

    def offer(self, text: str) -> bool:
        return True

    def close(self, code: int, reason: str = "") -> None:
        return None


def to_final(segment: Any, offset_s: float, language: str | None, utterance: int, not_before: float,
             limit_s: float) -> Final | None:
    """An offline segment as a room's final, on the room's lecture clock (`offset_s` + file time), through the live
    path's hallucination guards (phantom phrases, repetition loops, silence); None when nothing trustworthy is left.
    Times are clamped into [`not_before`, `limit_s`] so the transcript stays monotone within the file."""
    words = [HypWord(w.word.strip(), w.start, w.end, w.probability) for w in segment.words if w.word.strip()]
    if not words:
        return None
    kept = clean([Segment(words, segment.no_speech_prob, segment.avg_logprob, segment.compression_ratio)])
    if not kept:
        return None

    def clock(t: float) -> float:
        return round(min(max(offset_s + t, not_before), limit_s), 3)

    out = [Word(w.text, clock(w.start), max(clock(w.start), clock(w.end)), round(w.prob, 3)) for w in kept]
    return Final(UNNUMBERED, utterance, out[0].start, out[-1].end, join_words(kept), language, out)


class UploadJob:
    """One recording being transcribed into a room; the room's session while it runs."""

    upload = True  # speaker.py refuses a takeover of an upload

    def __init__(self, app: web.Application, room: Room):
        self.app = app
        self.room = room
        self.conn = _NoSocket()
        self.state = "receiving"  # receiving, checking, transcribing, then done | cancelled | failed | refused
        self.received_bytes = 0
        self.total_s = 0.0
        self.done_s = 0.0
        self.offset_s = room.audio_s
        self.finals = 0
        self.language: str | None = None
        self.error: dict[str, str] | None = None
        self.cancel_reason = ""
        self.started = time.time()
        self.changed = asyncio.Event()
        self._decoding: asyncio.Task | None = None
        self._main: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self.state in ("receiving", "checking", "transcribing")

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "done_s": round(self.done_s, 2), "total_s": round(self.total_s, 2),
                               "offset_s": round(self.offset_s, 2), "finals": self.finals}
        if self.cancel_reason:
            out["reason"] = self.cancel_reason
        if self.error:
            out["error"] = self.error
        return out

    def status(self, state: str) -> UploadStatus:
        settings, engine, notes = self.app[SETTINGS], self.app[ENGINE], self.app[NOTES]
        with_notes = notes if settings.notes else None
        return UploadStatus(state, False, self.room.listeners, round(self.offset_s + self.done_s, 2),
                            round(max(0.0, self.total_s - self.done_s), 2), engine.queue_depth,
                            model_name(engine), with_notes.spent(self.room) if with_notes else 0,
                            with_notes.rejected_in(self.room) if with_notes else 0, self.info())

    def release(self, state: str, code: str = "", message: str = "") -> None:
        """End a job that never published anything (refused before transcription)."""
        self.state = state
        if code:
            self.error = {"code": code, "message": message}
        if self.room.session is self:
            self.room.session = None
        self.changed.set()

    def begin(self, path: Path, options: dict[str, Any]) -> None:
        """Start transcribing: the decoding task (which a room delete cancels) and the task that finishes it."""
        loop = asyncio.get_running_loop()
        self.state = "transcribing"
        self._decoding = self.app[ROOMS].track(self.room, loop.create_task(self._decode(path, options)))
        self._main = loop.create_task(self._run(path))
        self.room.publish(self.status("live"))

    async def _decode(self, path: Path, options: dict[str, Any]) -> None:
        job = transcribe_file(self.app[ENGINE], offline(self.app), path, word_timestamps=True,
                              max_s=self.total_s + 1.0, on_progress=self._progress, **options)
        last_start, limit = self.offset_s, self.offset_s + self.total_s
        async for segment in job:
            final = to_final(segment, self.offset_s, job.language, segment.id, last_start, limit)
            if final is None:
                continue
            if self.room.publish(final) is None:  # the room was deleted (here or by `realtime room delete`)
                raise asyncio.CancelledError
            self.finals += 1
            self.language = job.language
            last_start = final.start
            self.room.audio_s = max(self.room.audio_s, final.end)

    def _progress(self, done_s: float, total_s: float) -> None:
        self.done_s, self.total_s = done_s, total_s or self.total_s
        self.room.audio_s = max(self.room.audio_s, self.offset_s + done_s)
        self.changed.set()
        if self.running:
            self.room.publish(self.status("live"))

    async def _run(self, path: Path) -> None:
        assert self._decoding is not None
        beat = asyncio.get_running_loop().create_task(self._heartbeat())
        try:
            await asyncio.shield(self._decoding)
            self.state, self.done_s = "done", self.total_s
        except asyncio.CancelledError:
            if not self._decoding.done():  # we were cancelled ourselves (shutdown): stop the decoding too
                self._decoding.cancel()
            self.state = "cancelled"
            self.cancel_reason = self.cancel_reason or ("room deleted" if self.room.deleted else "cancelled")
        except AudioError as exc:  # checked whole before, so only a file changed or unreadable meanwhile
            self.state, self.error = "failed", {"code": exc.code, "message": str(exc)}
        except Exception as exc:
            log.exception("room %s: transcribing an upload failed", self.room.name)
            self.state, self.error = "failed", {"code": INTERNAL, "message": f"transcription failed ({exc})"}
        finally:
            beat.cancel()
            with contextlib.suppress(OSError):
                path.unlink()
        await self._finish()

    async def _finish(self) -> None:
        """As at a speaker's stop: the room's clock moves past what was transcribed, the notes catch up with the
        whole transcript and the summary is made (unless the room is gone), then the `stopped` status."""
        room = self.room
        room.audio_s = max(room.audio_s, self.offset_s + self.done_s)
        log.info("room %s: upload %s at %.1f of %.1f s, %d finals", room.name, self.state, self.done_s,
                 self.total_s, self.finals)
        try:
            if not room.deleted and self.app[SETTINGS].notes:
                await self.app[NOTES].flush(room)
            if not room.deleted:
                room.publish(self.status("stopped"))
        finally:
            if room.session is self:
                room.session = None
            self.changed.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.app[SETTINGS].status_interval_s)
            if self.running:
                self.room.publish(self.status("live"))

    def cancel(self, reason: str) -> None:
        if self._decoding is not None and not self._decoding.done():
            self.cancel_reason = self.cancel_reason or reason
            self._decoding.cancel()

    async def stop(self) -> None:
        """The Session protocol (shutdown): cancel, and wait until the notes and the last status are out."""
        self.cancel("server shutting down")
        if self._main is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._main)


def check_file(path: Path, max_s: float) -> float:
    """Blocking: the file's duration, after decoding it once without the model (bounded memory), so that a file
    that is not audio, too long, truncated or corrupt is refused before anything reaches the room."""
    declared = probe(path)
    if declared > max_s:
        raise AudioError("too_long", f"the audio is {declared:.0f} s long, over the limit of {max_s:.0f} s")
    decoded = sum(len(audio) for _, audio in decode_chunks(path, chunk_s=60.0, max_s=max_s)) / SAMPLE_RATE
    if decoded <= 0.0:
        raise AudioError("corrupt", "the file holds no audio samples")
    return decoded
