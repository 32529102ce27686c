"""The OpenAI Realtime transcription endpoint: `GET /v1/realtime?intent=transcription[&room=NAME]`, the WebSocket
the `openai` SDK's `client.realtime.connect()` opens with `base_url="http://host:port/v1"`.

A thin shell over the speaker pipeline: the connection is a room's speaker (the SDK's api key is the room's speaker
key, as a bearer token or, from browsers, the `openai-insecure-api-key.` subprotocol), its audio goes through the
same `SpeakerSession` (keys, admission, rate and length limits, the decoder pool) into the room, whose viewers see
the captions as from any speaker. What is OpenAI's is translated by `realtime.core.oai_realtime` (client events,
the session config) and `realtime.core.oai_turns` (turns, items, deltas). The lecture starts at the first audio, so
`session.update` can still choose the language, the prompt and the turn detection without restarting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

from realtime import PROTOCOL_VERSION
from realtime.asr.vad import default_classifier
from realtime.core.access import bearer, proxied
from realtime.core.oai_realtime import (
    MIN_COMMIT_S,
    SERVER_ERROR,
    Append,
    Clear,
    Commit,
    Config,
    Decoder,
    OaiError,
    Update,
    Vad,
    apply_update,
    error_event,
    parse_event,
    session_object,
)
from realtime.core.oai_turns import Transcription, TurnSegmenter
from realtime.core.protocol import (
    BAD_KEY,
    CLOSE_BAD_ROOM,
    CLOSE_IDLE,
    CLOSE_INTERNAL,
    CLOSE_KEY,
    CLOSE_NO_SUCH_ROOM,
    CLOSE_NORMAL,
    CLOSING,
    KEY_REQUIRED,
    Event,
    Final,
    Hello,
    Partial,
    ProtocolError,
    Start,
    check_room,
)
from realtime.core.vad import Segmenter
from realtime.server.appkeys import GATE, LIMITS, ROOMS, SETTINGS
from realtime.server.rooms import Connection
from realtime.server.ws import count_wrong_key, key_allowed, sender, serve_socket, throttle

log = logging.getLogger(__name__)

SUBPROTOCOL_KEY = "openai-insecure-api-key."
TICK_S = 0.1  # how soon an item whose utterance produced no final completes


class OaiOutbox(Connection):
    """The session's outbound side. The room sees it as its speaker's connection (takeovers and deletes reach it
    as our `error` events, translated here); the room's own events are not for an OpenAI client, which gets only
    its items (`send`)."""

    def __init__(self, maxsize: int, transcription: Transcription):
        super().__init__("speaker", maxsize)
        self.transcription = transcription

    def catch_up(self, texts: list[str]) -> None:
        pass

    def offer(self, text: str) -> bool:
        if text.startswith('{"type":"error"'):
            data = json.loads(text)
            exc = OaiError(data.get("code", "internal"), data.get("message", ""), None, SERVER_ERROR)
            self.send(error_event(exc, self.transcription.event_id()))
        return True

    def send(self, event: dict[str, Any]) -> None:
        Connection.offer(self, json.dumps(event, ensure_ascii=False, separators=(",", ":")))


def endpoint(session_class: type, oai_class: type[OaiSession] | None = None) -> Any:
    """The handler, given the speaker session class (app.py passes `SpeakerSession`: endpoints do not import each
    other) and the OpenAI session it speaks (`OaiSession`, transcription, or a subclass: translation)."""
    kind = oai_class or OaiSession

    async def realtime_ws(request: web.Request) -> web.StreamResponse:
        session_id = "sess_" + secrets.token_hex(10)
        problem = kind.check(request)
        room = request.query.get("room") or (session_id if request.app[GATE].open_rooms else "")
        if not room and problem is None:
            problem = OaiError("missing_required_parameter", "this server has no open rooms: name one with "
                               "?room=NAME (and its speaker key as the api key)", "room")
        if problem is None:
            try:
                check_room(room, request.app[SETTINGS].max_room_name)
            except ProtocolError as exc:
                problem = OaiError(exc.code, exc.message, "room")
        if problem is None and request.app[ROOMS].find(room) is None and (not request.app[GATE].open_rooms
                                                                          or proxied(request.headers)):
            problem = OaiError("no_such_room", f"there is no room {room!r}", "room")
        if problem is not None:
            return await _refuse_early(request, problem)
        request.match_info["room"] = room  # serve_socket's checks (origin, caps) read the room from the path
        return await serve_socket(request, "speaker",
                                  lambda r, ws, rm, conn: serve(r, ws, rm, conn, session_class, session_id, kind),
                                  _protocols(request))

    return realtime_ws


async def _refuse_early(request: web.Request, exc: OaiError) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=_protocols(request))
    await ws.prepare(request)
    with contextlib.suppress(Exception):
        await ws.send_json(error_event(exc, "event_" + secrets.token_hex(6)))
        code = CLOSE_NO_SUCH_ROOM if exc.code == "no_such_room" else CLOSE_BAD_ROOM
        await ws.close(code=code, message=exc.code.encode())
    return ws


def _protocols(request: web.Request) -> tuple[str, ...]:
    """The subprotocol to select: a browser (which can send the key only as `openai-insecure-api-key.<key>`, beside
    `realtime`, as OpenAI's browser examples do) fails the handshake unless one of those it offered is chosen."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if "realtime" in offered:
        return ("realtime",)
    return tuple(p for p in offered if p.startswith(SUBPROTOCOL_KEY))[:1]


def request_key(request: web.Request) -> str | None:
    key = bearer(request.headers.get("Authorization"))
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if proto.strip().startswith(SUBPROTOCOL_KEY) and not key:
            key = proto.strip()[len(SUBPROTOCOL_KEY):] or None
    return key


class OaiSession:
    """One connection's state between the socket and the speaker session: the transcription session. A subclass
    speaks another session type over the same speaker pipeline (`oai_translation.TranslationSession`)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, room: Any, out: OaiOutbox,
                 speaker: Any, session_id: str):
        self.request, self.ws, self.room, self.out, self.speaker = request, ws, room, out, speaker
        self.settings = request.app[SETTINGS]
        self.session_id = session_id
        self.config = Config(turn_detection=_default_vad(self.settings))
        self.legacy = False
        self.items = out.transcription
        self.decoder = Decoder(self.config.format)
        self.segmenter: TurnSegmenter | None = None

    @staticmethod
    def check(request: web.Request) -> OaiError | None:
        """A problem with the connection's own query parameters, or None."""
        if request.query.get("intent") != "transcription":
            return OaiError("unsupported", "only transcription sessions are served here: connect with "
                            "?intent=transcription (translation sessions: /v1/realtime/translations)", "intent")
        return None

    def created_event(self) -> dict[str, Any]:
        return {"type": "session.created", "event_id": self.items.event_id(),
                "session": session_object(self.config, self.session_id)}

    def parse(self, data: str, max_bytes: int) -> tuple[Any, str | None]:
        return parse_event(data, max_bytes)

    async def dispatch(self, cmd: Any) -> bool:
        """Do one client command; True when the session is over (never, for transcription)."""
        if isinstance(cmd, Update):
            await self.update(cmd.session, cmd.legacy)
        elif isinstance(cmd, Append):
            await self.append(cmd.audio)
        elif isinstance(cmd, Commit):
            await self.commit()
        elif isinstance(cmd, Clear):
            await self.clear()
        return False

    @property
    def stream(self):
        return self.speaker.handle.stream if self.speaker.handle is not None else None

    def send(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.out.send(event)

    def on_event(self, event: Event) -> None:
        """The room's hook: our partials and finals, while this session is the room's speaker."""
        if self.room.session is not self.speaker and self.speaker.handle is None:
            return
        if isinstance(event, Partial):
            self.send(self.items.partial(event))
        elif isinstance(event, Final):
            self.send(self.items.final(event))

    def finish(self) -> None:
        """The connection is gone: unhook from the room."""
        with contextlib.suppress(ValueError):
            self.room.on_publish.remove(self.on_event)

    def on_turn(self, start: bool, t: float, cleared: bool) -> None:
        self.send(self.items.turn_start(t) if start else self.items.turn_cleared(t) if cleared
                  else self.items.turn_end(t))

    def settle(self) -> None:
        stream = self.stream
        if stream is not None:
            self.send(self.items.settle(stream.pending_finals))

    def _segmenter(self, offset_s: float = 0.0) -> TurnSegmenter:
        vad, st = self.config.turn_detection, self.settings
        inner = None
        if vad is not None:
            classify = default_classifier(st.vad_aggressiveness, st.vad_frame_ms, silero=st.vad_silero,
                                          silero_threshold=vad.threshold)
            inner = Segmenter(classify, frame_ms=st.vad_frame_ms, preroll_ms=vad.prefix_padding_ms,
                              hangover_ms=vad.silence_duration_ms, min_speech_ms=st.vad_min_speech_ms)
        return TurnSegmenter(inner, self.on_turn, offset_s)

    async def start(self) -> None:
        await self.speaker.start(Start(self.config.language, prompt=self.config.prompt))
        stream = self.stream
        self.segmenter = self._segmenter()
        stream.segmenter = self.segmenter  # our turns, before any audio reached the old one
        self.items.t0 = stream.t0
        self.room.on_publish.append(self.on_event)

    async def update(self, session: Any, legacy: bool) -> None:
        config = apply_update(self.config, session, legacy)
        old, self.config, self.legacy = self.config, config, legacy
        self.items.logprobs = config.logprobs
        if config.format != old.format:
            self.decoder = Decoder(config.format)
        stream = self.stream
        if stream is not None:
            stream.options = Start(config.language, prompt=config.prompt)
            stream.language = config.language if config.language else stream.language
            if config.turn_detection != old.turn_detection:
                await self.commit(quiet=True)  # the open turn ends under the old rules
                self.segmenter = stream.segmenter = self._segmenter(stream.received_s - stream.t0)
        kind = "transcription_session.updated" if legacy else "session.updated"
        self.send([{"type": kind, "event_id": self.items.event_id(),
                    "session": session_object(config, self.session_id, legacy)}])

    async def append(self, data: bytes) -> None:
        if self.speaker.handle is None:
            await self.start()
        pcm = self.decoder(data)
        step = self.settings.max_frame_bytes - self.settings.max_frame_bytes % 2
        for i in range(0, len(pcm), step):
            await self.speaker.audio(pcm[i:i + step])
        self.settle()

    async def commit(self, quiet: bool = False, discard: bool = False) -> None:
        seg, stream = self.segmenter, self.stream
        if seg is None or stream is None or not seg.in_speech or (seg.open_s < MIN_COMMIT_S and not discard):
            if quiet or discard:
                return
            raise OaiError("input_audio_buffer_commit_empty", "the buffer holds no audio to commit (less than "
                           f"{MIN_COMMIT_S * 1000:g} ms{' of speech' if self.config.turn_detection else ''})")
        seg.end_turn(discard)
        for event in stream.feed(b""):
            self.room.publish(event)
        self.speaker.engine.kick()
        self.settle()

    async def clear(self) -> None:
        await self.commit(discard=True)
        self.send([{"type": "input_audio_buffer.cleared", "event_id": self.items.event_id()}])

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.settle()


def _default_vad(settings: Any) -> Vad:
    return Vad(settings.vad_silero_threshold, settings.vad_preroll_ms, settings.vad_hangover_ms)


async def serve(request: web.Request, ws: web.WebSocketResponse, room: Any, conn: Connection, session_class: type,
                session_id: str, kind: type[OaiSession]) -> None:
    app, settings = request.app, request.app[SETTINGS]
    items = Transcription(secrets.token_hex(4))
    out = OaiOutbox(settings.listener_queue, items)
    out.client = conn.client
    task = asyncio.get_running_loop().create_task(sender(ws, out))
    key = request_key(request)
    speaker = session_class(app, room, out, key, client=conn.client, local=not proxied(request.headers))
    oai = kind(request, ws, room, out, speaker, session_id)
    close_code = CLOSE_NORMAL
    refusal = app[GATE].publish_refusal(room.record.speaker_key_hash, key, not proxied(request.headers))
    if key and not key_allowed(app[LIMITS], conn.client):
        refusal = BAD_KEY
    elif refusal == BAD_KEY:
        count_wrong_key(app[LIMITS], conn.client)
    if refusal is not None:
        out.send(error_event(OaiError(refusal, "this room needs its speaker key as the api key" if refusal ==
                                      KEY_REQUIRED else "that api key is not this room's speaker key"),
                             items.event_id()))
        out.close(CLOSE_KEY, refusal)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        return
    room.join(out, Hello(room.name, "speaker", PROTOCOL_VERSION, speaker.model, len(room.finals)))
    out.send(oai.created_event())
    ticker = asyncio.get_running_loop().create_task(oai.tick())
    opened = time.monotonic()
    max_bytes = max(settings.max_message_bytes, settings.max_frame_bytes * 2 + 4096)
    try:
        while out.close_code is None:
            started = speaker.handle is not None
            timeout = settings.idle_timeout_s if started else max(
                0.0, opened + settings.speaker_start_timeout_s - time.monotonic())
            msg = await ws.receive(timeout=timeout)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            await throttle(speaker.messages)
            event_id = None
            try:
                if msg.type != WSMsgType.TEXT:
                    raise OaiError("invalid_value", "client events are JSON text messages (audio goes base64 in "
                                   "input_audio_buffer.append)")
                cmd, event_id = oai.parse(msg.data, max_bytes)
                if await oai.dispatch(cmd):
                    break
            except OaiError as exc:
                if exc.event_id is None:  # refused after parsing (a session value, an empty commit)
                    exc.event_id = event_id
                out.send(error_event(exc, items.event_id()))
            except ProtocolError as exc:
                failure = OaiError(exc.code, exc.message, None, SERVER_ERROR if exc.code in CLOSING else
                                   "invalid_request_error")
                failure.event_id = event_id
                if exc.code in CLOSING:
                    oai.send(items.fail_open(exc.code, exc.message))
                    speaker.stats.refuse(exc.code)
                    close_code = CLOSING[exc.code]
                out.send(error_event(failure, items.event_id()))
                if exc.code in CLOSING:
                    break
            except Exception:
                log.exception("room %s: realtime session event failed", room.name)
                out.send(error_event(OaiError("internal", "internal server error", None, SERVER_ERROR),
                                     items.event_id()))
                close_code = CLOSE_INTERNAL
                break
    except TimeoutError:
        out.send(error_event(OaiError("idle_timeout", "nothing received for too long; reconnect to go on",
                                      None, SERVER_ERROR), items.event_id()))
        close_code = CLOSE_IDLE
    finally:
        ticker.cancel()
        room.leave(out)
        stopping = asyncio.get_running_loop().create_task(speaker.stop())
        out.close(out.close_code or close_code)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        if not ws.closed:
            await ws.close(code=out.close_code or close_code)
        with contextlib.suppress(Exception):
            await asyncio.shield(stopping)
        oai.finish()
        if room.session is speaker:
            room.session = None
