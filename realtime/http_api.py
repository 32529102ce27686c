"""HTTP endpoints: health, metrics, rooms (the admin API), transcript, exports, summary, questions; and CORS for the
origins on the allowlist.

Keys travel in `Authorization: Bearer` headers only, never in URLs (proxies log URLs). The WebSocket endpoints live
in `server.py` and `speaker.py`; the Prometheus series are assembled in `observe.py`.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from realtime import PROTOCOL_VERSION, __version__, export
from realtime.access import bearer, slug
from realtime.appkeys import ENGINE, GATE, NOTES, ORIGINS, ROOMS, SETTINGS, STARTED, STATS, STORE
from realtime.metrics import CONTENT_TYPE, render
from realtime.notes.service import NotesService
from realtime.observe import collect
from realtime.protocol import (
    BAD_KEY,
    BAD_MESSAGE,
    BAD_ROOM,
    INTERNAL,
    KEY_REQUIRED,
    NO_SUCH_ROOM,
    TOO_MANY_ROOMS,
    ProtocolError,
    check_room,
    encodable,
)
from realtime.room_admin import make_room, room_links
from realtime.rooms import Room
from realtime.store import RoomExists, RoomRecord

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_post("/v1/rooms", create_room)
    app.router.add_delete("/v1/rooms/{room}", delete_room)
    app.router.add_get("/v1/rooms/{room}/transcript", transcript)
    app.router.add_get("/v1/rooms/{room}/export", export_room)
    app.router.add_get("/v1/rooms/{room}/summary", summary)
    app.router.add_post("/v1/rooms/{room}/summary", summary)
    app.router.add_post("/v1/rooms/{room}/ask", ask)
    app.middlewares.append(cors)
    app.middlewares.append(json_errors)


async def read_json(request: web.Request) -> dict | None:
    """The request's JSON object, or None for anything else: bad JSON, an unknown charset, lone surrogates."""
    try:
        body = await request.json()
    except (ValueError, LookupError, UnicodeError):
        return None
    return body if isinstance(body, dict) and encodable(body) else None


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status)


@web.middleware
async def cors(request: web.Request, handler) -> web.StreamResponse:
    """Let pages of allowed origins read our answers (a widget fetching a transcript); preflights included."""
    origin = request.headers.get("Origin")
    allowed = request.app[ORIGINS].cross_origin(origin, request.host)
    if request.method == "OPTIONS" and allowed and request.headers.get("Access-Control-Request-Method"):
        response: web.StreamResponse = web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, DELETE",
            "Access-Control-Allow-Headers": "content-type, authorization",
            "Access-Control-Max-Age": "600"})
    else:
        response = await handler(request)
    if allowed and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    return response


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """An unexpected fault becomes a JSON `internal` error: logged here with its traceback, never sent."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, INTERNAL, "internal server error")


# ---------------------------------------------------------------- health and metrics


async def healthz(request: web.Request) -> web.Response:
    """Liveness (any answer) and readiness (`ready`: model loaded, not draining; `?ready=1` answers 503 when not)."""
    engine = request.app[ENGINE]
    decoder = engine.decoder
    stats = engine.stats
    rooms = request.app[ROOMS]
    ready = not request.app[STATS].draining
    body = {
        "status": "ok" if ready else "draining",
        "ready": ready,
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
    }
    return web.json_response(body, status=503 if request.query.get("ready") and not ready else 200)


def _notes_health(notes: NotesService) -> dict:
    usage = notes.llm.usage if notes.llm else None
    return {"engine": "llm" if notes.llm else "extractive", "updates": notes.updates, "failures": notes.failures,
            "last_latency_s": round(notes.last_latency_s, 3),
            "llm": None if usage is None else {"model": notes.llm.config.model, "calls": usage.calls,
                                               "errors": usage.errors, "prompt_tokens": usage.prompt_tokens,
                                               "completion_tokens": usage.completion_tokens}}


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render(collect(request.app)), headers={"Content-Type": CONTENT_TYPE})


# ---------------------------------------------------------------- rooms (admin API)


def _admin_refusal(request: web.Request) -> web.Response | None:
    gate = request.app[GATE]
    if not gate.has_admin:
        return error(403, KEY_REQUIRED, "this server has no admin key (it runs as a loopback quick start): make "
                                        "rooms with `realtime room create`, or set REALTIME_ADMIN_KEY")
    key = bearer(request.headers.get("Authorization"))
    if not gate.is_admin(key):
        return error(401, BAD_KEY if key else KEY_REQUIRED, "send the admin key as Authorization: Bearer <key>")
    return None


async def list_rooms(request: web.Request) -> web.Response:
    """Public rooms for everyone; private ones too for the admin."""
    admin = request.app[GATE].is_admin(bearer(request.headers.get("Authorization")))
    live = {r.name: r for r in request.app[ROOMS]}
    out = []
    for rec in request.app[STORE].list_rooms():
        if rec.viewer_key_hash is not None and not admin:
            continue
        room = live.pop(rec.name, None)
        out.append(_room_info(rec, room))
    out += [_room_info(r.record, r) for r in live.values() if not r.private or admin]
    return web.json_response(out)


def _room_info(rec: RoomRecord, room: Room | None) -> dict:
    return {"room": rec.name, "title": rec.title, "private": rec.viewer_key_hash is not None,
            "open": rec.speaker_key_hash is None, "finals": len(room.finals) if room else None,
            "listeners": room.listeners if room else 0, "speaking": bool(room and room.session is not None),
            "audio_s": round(room.audio_s if room else rec.audio_s, 2)}


async def create_room(request: web.Request) -> web.Response:
    refusal = _admin_refusal(request)
    if refusal is not None:
        return refusal
    body = await read_json(request)
    title, private = (body or {}).get("title"), (body or {}).get("private", False)
    name = (body or {}).get("room") or slug(title if isinstance(title, str) else "")
    if not (isinstance(title, str) and 0 < len(title.strip()) <= 200 and isinstance(private, bool)
            and isinstance(name, str)):
        return error(400, BAD_MESSAGE, 'send {"title": "Physics 101" (1-200 characters), "room": optional name, '
                                       '"private": true or false}')
    title = title.strip()
    settings, store = request.app[SETTINGS], request.app[STORE]
    try:
        name = check_room(name, settings.max_room_name)
    except ProtocolError as exc:
        return error(400, BAD_ROOM, exc.message)
    if len(store.list_rooms()) >= settings.max_rooms:
        return error(429, TOO_MANY_ROOMS, f"this server holds {settings.max_rooms} rooms, its limit (--max-rooms)")
    try:
        created = make_room(store, title, name, private)
    except RoomExists:
        return error(409, BAD_ROOM, f"room {name!r} exists already")
    base = settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return web.json_response(room_links(created, base), status=201)


async def delete_room(request: web.Request) -> web.Response:
    refusal = _admin_refusal(request)
    if refusal is not None:
        return refusal
    name = request.match_info["room"]
    room = request.app[ROOMS].find(name)
    if room is not None and (room.session is not None or room.connections):
        return error(409, BAD_ROOM, "the room is in use; try again when its lecture is over")
    request.app[ROOMS].forget(name)
    if not request.app[STORE].delete_room(name):
        return error(404, NO_SUCH_ROOM, "no such room")
    return web.json_response({"room": name, "deleted": True})


# ---------------------------------------------------------------- a room's content


def _room_or_error(request: web.Request) -> Room | web.Response:
    room = request.app[ROOMS].find(request.match_info["room"])
    if room is None:
        return error(404, NO_SUCH_ROOM, "no such room")
    key = bearer(request.headers.get("Authorization"))
    if not request.app[GATE].may_view(room.record.viewer_key_hash, room.record.speaker_key_hash, key):
        return error(401, BAD_KEY if key else KEY_REQUIRED, "this room is private: send its viewer key as "
                                                            "Authorization: Bearer <key>")
    return room


async def summary(request: web.Request) -> web.Response:
    """GET: the latest summary (made now if there is none); POST: make a new one from the lecture so far."""
    room = _room_or_error(request)
    if isinstance(room, web.Response):
        return room
    markdown = room.summary
    if request.method == "POST" or not markdown:
        markdown = await request.app[NOTES].summarize(room)
    return web.Response(text=markdown, content_type="text/markdown", charset="utf-8")


async def ask(request: web.Request) -> web.Response:
    room = _room_or_error(request)
    if isinstance(room, web.Response):
        return room
    question = (await read_json(request) or {}).get("question")
    if not isinstance(question, str) or not 0 < len(question.strip()) <= 1000:
        return error(400, BAD_MESSAGE, 'send {"question": "..."} with 1-1000 characters')
    return web.json_response(await request.app[NOTES].ask(room, question.strip()))


async def transcript(request: web.Request) -> web.Response:
    room = _room_or_error(request)
    if isinstance(room, web.Response):
        return room
    return web.json_response({"room": room.name, "finals": room.finals,
                              "text": " ".join(f["text"] for f in room.finals)})


async def export_room(request: web.Request) -> web.Response:
    """`?format=txt|srt|vtt|json|md`: the transcript as text or subtitles, everything as JSON, notes and summary
    as Markdown; served as a download named after the room."""
    room = _room_or_error(request)
    if isinstance(room, web.Response):
        return room
    fmt = request.query.get("format", "txt")
    if fmt not in export.FORMATS:
        return error(400, BAD_MESSAGE, f"format must be one of {', '.join(export.FORMATS)}")
    return web.Response(text=render_export(room, fmt), headers={
        "Content-Type": f"{export.FORMATS[fmt][0]}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{room.name}.{export.FORMATS[fmt][1]}"'})


def render_export(room: Room, fmt: str) -> str:
    title = room.record.title or room.name
    bullets = [b.to_dict() for b in room.notes.bullets]
    if fmt == "json":
        return export.to_json(room.name, title, room.finals, bullets, room.summary)
    if fmt == "md":
        return export.to_markdown(title, bullets, room.summary, room.finals)
    return {"txt": export.to_txt, "srt": export.to_srt, "vtt": export.to_vtt}[fmt](room.finals)
