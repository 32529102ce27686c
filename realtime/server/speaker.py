"""The speaker endpoint: one lecturer's connection, from its key to the last final of its stream.

A connection may watch the room at once (hello and history), but publishes only after a `start` that the room's
access rules allow: the speaker key (an `Authorization: Bearer` header or an `auth` message), or nothing in an open
room of a loopback quick start. One speaker per room: a second gets `speaker_exists` unless it presents the key
and asks to take over. Audio is rate-limited (the server stops reading a sender that is too fast), a connection
that falls silent is closed, and a lecture cannot outgrow `--max-lecture-s`. However the connection ends, the open
utterance still gets its final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSMsgType, web

from realtime import PROTOCOL_VERSION
from realtime.asr.pool import Handle
from realtime.asr.vad import default_classifier
from realtime.core.access import proxied
from realtime.core.audio import BYTES_PER_SECOND
from realtime.core.lecture import LectureStream, StreamConfig
from realtime.core.protocol import (
    ALREADY_STARTED,
    BAD_KEY,
    CLOSE_IDLE,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_SPEAKER_EXISTS,
    CLOSING,
    IDLE_TIMEOUT,
    INTERNAL,
    KEY_REQUIRED,
    LECTURE_TOO_LONG,
    NOT_STARTED,
    SPEAKER_EXISTS,
    START_TIMEOUT,
    TAKEN_OVER,
    Auth,
    Error,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Start,
    Status,
    Stop,
    check_audio,
    parse_text,
)
from realtime.core.ratelimit import MESSAGE_BURST, MESSAGE_RATE, TokenBucket
from realtime.core.room import Room
from realtime.core.vad import Segmenter
from realtime.server.appkeys import ENGINE, GATE, LIMITS, NOTES, SETTINGS, STATS
from realtime.server.rooms import Connection
from realtime.server.ws import (
    check_view,
    count_wrong_key,
    finish,
    key_allowed,
    model_name,
    sender,
    serve_socket,
    throttle,
)

log = logging.getLogger(__name__)


class SpeakerSession:
    """One speaker connection: key, start/stop, audio into the stream, periodic status."""

    def __init__(self, app: web.Application, room: Room, conn: Connection, key: str | None, *, client: str,
                 local: bool):
        self.settings = app[SETTINGS]
        self.engine = app[ENGINE]
        self.gate = app[GATE]
        self.stats = app[STATS]
        self.limits = app[LIMITS]
        self.room = room
        self.conn = conn
        self.key = key
        self.client = client  # the address wrong keys are counted against
        self.local = local  # open rooms are for the machine itself, not a proxy's clients
        self.handle: Handle | None = None
        self.model = model_name(self.engine)
        self.notes = app[NOTES] if self.settings.notes else None
        self.budget = TokenBucket(self.settings.max_audio_rate, self.settings.audio_burst_s, time.monotonic())
        self.messages = TokenBucket(MESSAGE_RATE, MESSAGE_BURST, time.monotonic())
        self._stopping: asyncio.Task | None = None

    def status(self, state: str) -> Status:
        s = self.handle.stream if self.handle else None
        return Status(state, self.room.speaker is not None, self.room.listeners,
                      round(s.received_s if s else self.room.audio_s, 2), round(s.lag_s if s else 0.0, 2),
                      self.engine.queue_depth, self.model, self.notes.spent(self.room) if self.notes else 0,
                      self.notes.rejected_in(self.room) if self.notes else 0)

    async def start(self, cmd: Start) -> None:
        if self.handle is not None:
            raise ProtocolError(ALREADY_STARTED, "the lecture is already started; send stop first")
        refusal = self.gate.publish_refusal(self.room.record.speaker_key_hash, self.key, self.local)
        if self.key and not key_allowed(self.limits, self.client):
            refusal = BAD_KEY
        elif refusal == BAD_KEY:
            count_wrong_key(self.limits, self.client)
        if refusal is not None:
            log.info("room %s: refused a speaker (%s)", self.room.name, refusal)
            raise ProtocolError(refusal, "this room needs its speaker key to publish (an Authorization: Bearer "
                                         "header or an auth message)" if refusal == KEY_REQUIRED
                                else "that is not this room's speaker key")
        if self.room.audio_s >= self.settings.max_lecture_s:
            raise ProtocolError(LECTURE_TOO_LONG, f"this lecture reached --max-lecture-s "
                                                  f"({self.settings.max_lecture_s:g} s)")
        current = self.room.session
        if current is not None and current is not self:
            if getattr(current, "upload", False):  # server/upload_job.py: a recording is being transcribed
                raise ProtocolError(SPEAKER_EXISTS, "this room is transcribing an uploaded recording; start when it "
                                                    "is done, or cancel it (DELETE /v1/rooms/{room}/upload)")
            if not cmd.takeover:
                raise ProtocolError(SPEAKER_EXISTS, "this room already has a speaker (send start with "
                                                    "\"takeover\": true and the speaker key to replace it)")
            log.info("room %s: a speaker takes over", self.room.name)
            self.room.error(current.conn, TAKEN_OVER, "another connection with the speaker key took over")
            current.conn.close(CLOSE_SPEAKER_EXISTS, TAKEN_OVER)
            await current.stop()
        self.room.session, self.room.speaker = self, self.conn
        self._stopping = None
        st = self.settings
        classify = default_classifier(st.vad_aggressiveness, st.vad_frame_ms, silero=st.vad_silero,
                                      silero_threshold=st.vad_silero_threshold)
        segmenter = Segmenter(classify, frame_ms=st.vad_frame_ms,
                              preroll_ms=st.vad_preroll_ms, hangover_ms=st.vad_hangover_ms,
                              min_speech_ms=st.vad_min_speech_ms)
        config = StreamConfig(st.partial_interval_s, st.max_utterance_s, st.max_lag_s, st.prompt_chars,
                              st.early_final_ms / 1000, st.commit_min_prob)
        stream = LectureStream(segmenter, cmd, config, t0=self.room.audio_s)
        self.room.glossary = cmd.prompt
        try:
            self.handle = self.engine.admit(self.room.name, stream, self.room.publish)
        except ProtocolError:
            self.room.session = self.room.speaker = None
            raise
        self.room.publish(self.status("live"))

    async def audio(self, frame: bytes) -> None:
        if self.handle is None:
            raise ProtocolError(NOT_STARTED, "send a start message before audio")
        check_audio(frame, self.settings.max_frame_bytes)
        seconds = len(frame) / BYTES_PER_SECOND
        if self.room.audio_s + seconds > self.settings.max_lecture_s:
            raise ProtocolError(LECTURE_TOO_LONG, f"this lecture reached --max-lecture-s "
                                                  f"({self.settings.max_lecture_s:g} s); it is kept")
        self.stats.audio_in_s += seconds
        for event in self.handle.stream.feed(frame):
            self.room.publish(event)
        self.room.audio_s = self.handle.stream.received_s
        self.engine.kick()
        wait = self.budget.spend(seconds, time.monotonic())
        if wait > 0:  # too fast: stop reading for a while, TCP pushes back on the sender
            await asyncio.sleep(wait)

    async def stop(self) -> None:
        """Finish every final of the stream (the last sentence is never lost), then announce `stopped`. Safe to
        call from several places at once (stop message, disconnect, takeover, shutdown): they share one stop."""
        if self.handle is None and self._stopping is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        handle, self.handle = self.handle, None
        if handle is None:
            return
        for event in handle.stream.stop():
            self.room.publish(event)
        self.engine.finish(handle)
        await handle.done.wait()
        self.room.audio_s = handle.stream.received_s
        if self.room.session is self:
            self.room.session = None
        if self.notes is not None:
            await self.notes.flush(self.room)
        self.room.publish(self.status("stopped"))

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            if self.handle is not None:
                self.room.publish(self.status("live"))


async def speaker_ws(request: web.Request) -> web.WebSocketResponse:
    return await serve_socket(request, "speaker", speak)


def receive_timeout(session: SpeakerSession, started: bool, opened: float) -> tuple[float, str]:
    """How long to wait for the next message, and what it means if none comes: a socket that never started a
    lecture has `--speaker-start-timeout-s` (it sees the room's events like a listener, and holds a slot)."""
    settings = session.settings
    if started:
        return settings.idle_timeout_s, IDLE_TIMEOUT
    left = opened + settings.speaker_start_timeout_s - time.monotonic()
    return (max(0.0, left), START_TIMEOUT) if left < settings.idle_timeout_s else (settings.idle_timeout_s,
                                                                                   IDLE_TIMEOUT)


async def speak(request: web.Request, ws: web.WebSocketResponse, room: Room, conn: Connection) -> None:
    opened = time.monotonic()
    key = await check_view(request, ws, room)
    if key is False:
        return
    settings = request.app[SETTINGS]
    task = asyncio.get_running_loop().create_task(sender(ws, conn))
    session = SpeakerSession(request.app, room, conn, key, client=conn.client, local=not proxied(request.headers))
    room.join(conn, Hello(room.name, "speaker", PROTOCOL_VERSION, session.model, len(room.finals)))
    beat = asyncio.get_running_loop().create_task(session.heartbeat())
    close_code = CLOSE_NORMAL
    started, why = False, IDLE_TIMEOUT
    try:
        while conn.close_code is None:
            timeout, why = receive_timeout(session, started, opened)
            msg = await ws.receive(timeout=timeout)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            await throttle(session.messages)
            try:
                if msg.type == WSMsgType.BINARY:
                    await session.audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    cmd = parse_text(msg.data, settings.max_message_bytes)
                    if isinstance(cmd, Start):
                        await session.start(cmd)
                        started = True
                    elif isinstance(cmd, Stop):
                        await session.stop()
                    elif isinstance(cmd, Ping):
                        room.direct(conn, Pong(cmd.id))
                    elif isinstance(cmd, Auth):
                        session.key = cmd.key
            except ProtocolError as exc:
                room.error(conn, exc.code, exc.message)
                if exc.code in CLOSING:
                    session.stats.refuse(exc.code)
                    close_code = CLOSING[exc.code]
                    break
            except Exception:
                log.exception("room %s: speaker message failed", room.name)
                room.error(conn, INTERNAL, "internal server error; the lecture so far is kept")
                close_code = CLOSE_INTERNAL
                break
    except TimeoutError:
        if why == START_TIMEOUT:
            session.stats.refuse(START_TIMEOUT)
            room.direct(conn, Error(START_TIMEOUT, f"no lecture started within {settings.speaker_start_timeout_s:g}"
                                                   " s of connecting; connect again when you start"))
        else:
            room.direct(conn, Error(IDLE_TIMEOUT, f"nothing received for {settings.idle_timeout_s:g} s; the "
                                                  "lecture is kept, reconnect to go on"))
        close_code = CLOSE_IDLE
    finally:
        beat.cancel()
        room.leave(conn)
        # A dropped speaker still gets its open utterance finalised for the listeners.
        stopping = asyncio.get_running_loop().create_task(session.stop())
        await finish(ws, conn, task, conn.close_code or close_code)
        with contextlib.suppress(Exception):
            await asyncio.shield(stopping)
        if room.session is session:
            room.session = None
