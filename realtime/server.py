"""aiohttp application: the speaker and listener WebSocket endpoints, health, transcript, and static pages.

Handlers only move bytes between sockets and the core (protocol, stream) and the shell (engine, rooms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from realtime import PROTOCOL_VERSION, __version__
from realtime.config import Settings
from realtime.engine import Engine, Handle
from realtime.notes.llm import LLMClient
from realtime.notes.service import NotesService
from realtime.protocol import (
    ALREADY_STARTED,
    BAD_MESSAGE,
    BAD_ROOM,
    CLOSE_BAD_ROOM,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_SPEAKER_EXISTS,
    CLOSE_TRY_AGAIN,
    INTERNAL,
    NOT_A_SPEAKER,
    NOT_STARTED,
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

ENGINE = web.AppKey("engine", Engine)
ROOMS = web.AppKey("rooms", Rooms)
SETTINGS = web.AppKey("settings", Settings)
STARTED = web.AppKey("started", float)
NOTES = web.AppKey("notes", NotesService)


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
    app.router.add_get("/ws/speak/{room}", speaker_ws)
    app.router.add_get("/ws/listen/{room}", listener_ws)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_get("/v1/rooms/{room}/transcript", transcript)
    app.router.add_get("/v1/rooms/{room}/summary", summary)
    app.router.add_post("/v1/rooms/{room}/summary", summary)
    app.router.add_post("/v1/rooms/{room}/ask", ask)
    static = Path(settings.static_dir) if settings.static_dir else default_static_dir()
    if (static / "index.html").is_file():
        app.router.add_get("/", lambda _: web.FileResponse(static / "index.html"))
        app.router.add_static("/static/", static, follow_symlinks=False)

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


# ---------------------------------------------------------------- WebSocket plumbing


async def _open(request: web.Request, role: str) -> tuple[web.WebSocketResponse, Connection, Room | None]:
    settings = request.app[SETTINGS]
    # Frames a little over the limit reach us and get a polite error; far larger ones are closed by aiohttp (1009).
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * max(settings.max_frame_bytes,
                                                                  settings.max_message_bytes))
    await ws.prepare(request)
    conn = Connection(role, settings.listener_queue)
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


# ---------------------------------------------------------------- HTTP


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    decoder = engine.decoder
    stats = engine.stats
    rooms = request.app[ROOMS]
    return web.json_response({
        "status": "ok",
        "ready": True,
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "model": {"name": decoder.name, "path": str(getattr(decoder, "path", "")),
                  "device": getattr(decoder, "device", ""), "compute_type": getattr(decoder, "compute_type", "")},
        "uptime_s": round(time.time() - request.app[STARTED], 1),
        "rooms": len(rooms),
        "speakers": engine.speakers,
        "max_speakers": engine.max_speakers,
        "listeners": sum(r.listeners for r in rooms),
        "queue": engine.queue_depth,
        "lag_s": engine.lags(),
        "decodes": stats.decodes,
        "decode_s": {k: round(v, 2) for k, v in stats.decode_s.items()},
        "decode_errors": stats.errors,
        "loop_retries": getattr(decoder, "loop_retries", 0),
        "refused": stats.refused,
        "notes": _notes_health(request.app[NOTES]),
    })


def _notes_health(notes: NotesService) -> dict:
    usage = notes.llm.usage if notes.llm else None
    return {"engine": "llm" if notes.llm else "extractive", "updates": notes.updates, "failures": notes.failures,
            "last_latency_s": round(notes.last_latency_s, 3),
            "llm": None if usage is None else {"model": notes.llm.config.model, "calls": usage.calls,
                                               "errors": usage.errors, "prompt_tokens": usage.prompt_tokens,
                                               "completion_tokens": usage.completion_tokens}}


async def list_rooms(request: web.Request) -> web.Response:
    return web.json_response([{"room": r.name, "finals": len(r.finals), "listeners": r.listeners,
                               "speaking": r.speaker is not None, "audio_s": round(r.audio_s, 2)}
                              for r in request.app[ROOMS]])


def _room_or_404(request: web.Request) -> Room | web.Response:
    room = request.app[ROOMS].find(request.match_info["room"])
    if room is None:
        return web.json_response({"type": "error", "code": BAD_ROOM, "message": "no such room"}, status=404)
    return room


async def summary(request: web.Request) -> web.Response:
    """GET: the latest summary (made now if there is none); POST: make a new one from the lecture so far."""
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    markdown = room.summary
    if request.method == "POST" or not markdown:
        markdown = await request.app[NOTES].summarize(room)
    return web.Response(text=markdown, content_type="text/markdown", charset="utf-8")


async def ask(request: web.Request) -> web.Response:
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    try:
        body = await request.json()
        question = body["question"]
        if not isinstance(question, str) or not 0 < len(question.strip()) <= 1000:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return web.json_response({"type": "error", "code": BAD_MESSAGE,
                                  "message": 'send {"question": "..."} with 1-1000 characters'}, status=400)
    return web.json_response(await request.app[NOTES].ask(room, question.strip()))


async def transcript(request: web.Request) -> web.Response:
    room = request.app[ROOMS].find(request.match_info["room"])
    if room is None:
        return web.json_response({"type": "error", "code": BAD_ROOM, "message": "no such room"}, status=404)
    return web.json_response({"room": room.name, "finals": room.finals,
                              "text": " ".join(f["text"] for f in room.finals)})
