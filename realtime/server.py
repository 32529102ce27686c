"""aiohttp application: the speaker and listener WebSocket endpoints and the browser pages.

Handlers only move bytes between sockets and the core (protocol, stream) and the shell (engine, rooms); the HTTP
API is in `http_api.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from realtime import PROTOCOL_VERSION, http_api
from realtime.appkeys import ENGINE, NOTES, ORIGINS, ROOMS, SETTINGS, STARTED
from realtime.config import Settings
from realtime.engine import Engine, Handle
from realtime.notes.llm import LLMClient
from realtime.notes.service import NotesService
from realtime.origins import OriginPolicy
from realtime.protocol import (
    ALREADY_STARTED,
    BAD_ROOM,
    CLOSE_BAD_ROOM,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_ORIGIN,
    CLOSE_SPEAKER_EXISTS,
    CLOSE_TRY_AGAIN,
    INTERNAL,
    NOT_A_SPEAKER,
    NOT_STARTED,
    ORIGIN_NOT_ALLOWED,
    SERVER_FULL,
    SPEAKER_EXISTS,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Start,
    Status,
    Stop,
    check_audio,
    check_room,
    parse_text,
)
from realtime.rooms import Connection, Room, Rooms
from realtime.stream import LectureStream, StreamConfig
from realtime.vad import Segmenter, combined_classifier, webrtc_classifier

log = logging.getLogger(__name__)



def default_static_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings, engine: Engine, llm: LLMClient | None = None) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[ROOMS] = Rooms(settings.notes_interval_s, settings.notes_min_words)
    notes = app[NOTES] = NotesService(app[ROOMS], llm, window_tokens=settings.llm_window_tokens,
                                      room_token_budget=settings.llm_room_token_budget,
                                      language=settings.notes_language)
    app[STARTED] = time.time()
    app[ORIGINS] = OriginPolicy(settings.allowed_origins)
    app.router.add_get("/ws/speak/{room}", speaker_ws)
    app.router.add_get("/ws/listen/{room}", listener_ws)
    http_api.add_routes(app)
    add_pages(app, Path(settings.static_dir) if settings.static_dir else default_static_dir())

    background: list[asyncio.Task] = []

    async def on_startup(app: web.Application) -> None:
        engine.start()
        if settings.notes:
            background.append(asyncio.get_running_loop().create_task(notes.run(), name="notes"))

    async def on_shutdown(app: web.Application) -> None:
        for room in app[ROOMS]:
            for conn in list(room.connections):
                conn.close(CLOSE_GOING_AWAY, "server shutting down")

    async def on_cleanup(app: web.Application) -> None:
        for task in background:
            task.cancel()
        if llm is not None:
            await llm.close()
        await engine.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def add_pages(app: web.Application, static: Path) -> None:
    """The viewer at `/`, the lecturer page at `/speak`, and their assets (the widget among them) at `/static/`."""
    if not (static / "index.html").is_file():
        return
    def page(path: Path):
        async def handler(_: web.Request) -> web.FileResponse:
            return web.FileResponse(path, headers={"Cache-Control": "no-cache"})
        return handler

    for route, name in {"/": "index.html", "/speak": "speak.html"}.items():
        if (static / name).is_file():
            app.router.add_get(route, page(static / name))
    app.router.add_static("/static/", static, follow_symlinks=False, append_version=False)


# ---------------------------------------------------------------- WebSocket plumbing


async def _open(request: web.Request, role: str) -> tuple[web.WebSocketResponse, Connection, Room | None]:
    settings = request.app[SETTINGS]
    # Frames a little over the limit reach us and get a polite error; far larger ones are closed by aiohttp (1009).
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * max(settings.max_frame_bytes,
                                                                  settings.max_message_bytes))
    await ws.prepare(request)
    conn = Connection(role, settings.listener_queue)
    origin = request.headers.get("Origin")
    if not request.app[ORIGINS].allows(origin, request.host):
        # Refused after the handshake: a browser shows a failed handshake only as 1006, the page needs the code.
        log.info("refused a %s connection from origin %r", role, origin)
        await ws.send_json({"type": "error", "seq": 0, "code": ORIGIN_NOT_ALLOWED,
                            "message": f"pages from {origin} may not connect to this server (--allowed-origins)"})
        await ws.close(code=CLOSE_ORIGIN, message=ORIGIN_NOT_ALLOWED.encode())
        return ws, conn, None
    try:
        name = check_room(request.match_info["room"], settings.max_room_name)
    except ProtocolError as exc:
        await ws.send_json({"type": "error", "seq": 0, "code": exc.code, "message": exc.message})
        await ws.close(code=CLOSE_BAD_ROOM, message=BAD_ROOM.encode())
        return ws, conn, None
    return ws, conn, request.app[ROOMS].get(name)


async def _sender(ws: web.WebSocketResponse, conn: Connection) -> None:
    """Drain a connection's queue into its socket; close it with the code a producer asked for."""
    try:
        while conn.backlog and conn.close_code is None:
            await ws.send_str(conn.backlog.popleft())
        while True:
            text = await conn.queue.get()
            if text is None:
                break
            await ws.send_str(text)
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        pass
    finally:
        if conn.close_code is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close(code=conn.close_code, message=conn.close_reason.encode()[:120])


async def _finish(ws: web.WebSocketResponse, conn: Connection, sender: asyncio.Task, code: int = CLOSE_NORMAL) -> None:
    conn.close(code)
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(sender, 5)
    if not ws.closed:
        await ws.close(code=code)


def _model_name(request: web.Request) -> str:
    return request.app[ENGINE].decoder.name


# ---------------------------------------------------------------- listener


async def listener_ws(request: web.Request) -> web.WebSocketResponse:
    ws, conn, room = await _open(request, "listener")
    if room is None:
        return ws
    settings = request.app[SETTINGS]
    sender = asyncio.get_running_loop().create_task(_sender(ws, conn))
    room.join(conn, Hello(room.name, "listener", PROTOCOL_VERSION, _model_name(request), len(room.finals)))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                room.error(conn, NOT_A_SPEAKER, "listeners cannot send audio; connect to /ws/speak/{room}")
            elif msg.type == WSMsgType.TEXT:
                try:
                    cmd = parse_text(msg.data, settings.max_message_bytes)
                except ProtocolError as exc:
                    room.error(conn, exc.code, exc.message)
                    continue
                if isinstance(cmd, Ping):
                    room.direct(conn, Pong(cmd.id))
                else:
                    room.error(conn, NOT_A_SPEAKER, "only the speaker can start or stop the lecture")
            if conn.close_code is not None:
                break
    finally:
        room.leave(conn)
        await _finish(ws, conn, sender, conn.close_code or CLOSE_NORMAL)
    return ws


# ---------------------------------------------------------------- speaker


class SpeakerSession:
    """One speaker connection: start/stop, audio into the stream, periodic status."""

    def __init__(self, request: web.Request, room: Room, conn: Connection):
        self.settings = request.app[SETTINGS]
        self.engine = request.app[ENGINE]
        self.room = room
        self.conn = conn
        self.handle: Handle | None = None
        self.model = _model_name(request)
        self.notes = request.app[NOTES] if self.settings.notes else None

    def status(self, state: str) -> Status:
        s = self.handle.stream if self.handle else None
        return Status(state, self.room.speaker is not None, self.room.listeners,
                      round(s.received_s if s else self.room.audio_s, 2), round(s.lag_s if s else 0.0, 2),
                      self.engine.queue_depth, self.model, self.room.llm_tokens)

    def start(self, cmd: Start) -> None:
        if self.handle is not None:
            raise ProtocolError(ALREADY_STARTED, "the lecture is already started; send stop first")
        st = self.settings
        classify = (combined_classifier(st.vad_aggressiveness, st.vad_silero_threshold, st.vad_frame_ms)
                    if st.vad_silero else webrtc_classifier(st.vad_aggressiveness, st.vad_frame_ms))
        segmenter = Segmenter(classify, aggressiveness=st.vad_aggressiveness, frame_ms=st.vad_frame_ms,
                              preroll_ms=st.vad_preroll_ms, hangover_ms=st.vad_hangover_ms,
                              min_speech_ms=st.vad_min_speech_ms)
        config = StreamConfig(st.partial_interval_s, st.max_utterance_s, st.max_lag_s, st.prompt_chars)
        stream = LectureStream(segmenter, cmd, config, t0=self.room.audio_s)
        self.room.glossary = cmd.prompt
        self.handle = self.engine.admit(self.room.name, stream, self.room.publish)
        self.room.publish(self.status("live"))

    def audio(self, frame: bytes) -> None:
        if self.handle is None:
            raise ProtocolError(NOT_STARTED, "send a start message before audio")
        check_audio(frame, self.settings.max_frame_bytes)
        for event in self.handle.stream.feed(frame):
            self.room.publish(event)
        self.room.audio_s = self.handle.stream.received_s
        self.engine.kick()

    async def stop(self) -> None:
        """Finish every final of the stream (the last sentence is never lost), then announce `stopped`."""
        handle, self.handle = self.handle, None
        if handle is None:
            return
        for event in handle.stream.stop():
            self.room.publish(event)
        self.engine.finish(handle)
        await handle.done.wait()
        self.room.audio_s = handle.stream.received_s
        if self.notes is not None:
            await self.notes.flush(self.room)
        self.room.publish(self.status("stopped"))

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            if self.handle is not None:
                self.room.publish(self.status("live"))


async def speaker_ws(request: web.Request) -> web.WebSocketResponse:
    ws, conn, room = await _open(request, "speaker")
    if room is None:
        return ws
    sender = asyncio.get_running_loop().create_task(_sender(ws, conn))
    if room.speaker is not None:
        room.error(conn, SPEAKER_EXISTS, "this room already has a speaker")
        await _finish(ws, conn, sender, CLOSE_SPEAKER_EXISTS)
        return ws
    room.speaker = conn
    session = SpeakerSession(request, room, conn)
    room.join(conn, Hello(room.name, "speaker", PROTOCOL_VERSION, session.model, len(room.finals)))
    beat = asyncio.get_running_loop().create_task(session.heartbeat())
    close_code = CLOSE_NORMAL
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.BINARY:
                    session.audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    cmd = parse_text(msg.data, session.settings.max_message_bytes)
                    if isinstance(cmd, Start):
                        session.start(cmd)
                    elif isinstance(cmd, Stop):
                        await session.stop()
                    elif isinstance(cmd, Ping):
                        room.direct(conn, Pong(cmd.id))
            except ProtocolError as exc:
                room.error(conn, exc.code, exc.message)
                if exc.code in (SERVER_FULL, SPEAKER_EXISTS):
                    close_code = CLOSE_TRY_AGAIN if exc.code == SERVER_FULL else CLOSE_SPEAKER_EXISTS
                    break
            except Exception:
                log.exception("room %s: speaker message failed", room.name)
                room.error(conn, INTERNAL, "internal server error; the lecture so far is kept")
                close_code = CLOSE_INTERNAL
                break
            if conn.close_code is not None:
                break
    finally:
        beat.cancel()
        room.leave(conn)
        # A dropped speaker still gets its open utterance finalised for the listeners.
        stopping = asyncio.get_running_loop().create_task(session.stop())
        await _finish(ws, conn, sender, conn.close_code or close_code)
        await asyncio.shield(stopping)
    return ws
