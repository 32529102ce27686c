"""HTTP endpoints: health, rooms, transcript, summary, questions; and CORS for the origins on the allowlist.

Read-only views of the shell's state (engine, rooms, notes); the WebSocket endpoints live in `server.py`.
"""

from __future__ import annotations

import time

from aiohttp import web

from realtime import PROTOCOL_VERSION, __version__
from realtime.appkeys import ENGINE, NOTES, ORIGINS, ROOMS, STARTED
from realtime.notes.service import NotesService
from realtime.protocol import BAD_MESSAGE, BAD_ROOM
from realtime.rooms import Room


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_get("/v1/rooms/{room}/transcript", transcript)
    app.router.add_get("/v1/rooms/{room}/summary", summary)
    app.router.add_post("/v1/rooms/{room}/summary", summary)
    app.router.add_post("/v1/rooms/{room}/ask", ask)
    app.middlewares.append(cors)


@web.middleware
async def cors(request: web.Request, handler) -> web.StreamResponse:
    """Let pages of allowed origins read our answers (a widget fetching a transcript); preflights included."""
    origin = request.headers.get("Origin")
    allowed = request.app[ORIGINS].cross_origin(origin, request.host)
    if request.method == "OPTIONS" and allowed and request.headers.get("Access-Control-Request-Method"):
        response: web.StreamResponse = web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "content-type",
            "Access-Control-Max-Age": "600"})
    else:
        response = await handler(request)
    if allowed and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    return response


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
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    return web.json_response({"room": room.name, "finals": room.finals,
                              "text": " ".join(f["text"] for f in room.finals)})
