"""The HTTP API's plumbing and its rooms endpoints (the admin API): routes, the checks every request passes (Host,
Origin, CORS), JSON bodies, errors, keys and per-client limits.

Keys travel in `Authorization: Bearer` headers only, never in URLs (proxies log URLs). A room's content (transcript,
exports, summary, questions) is served by `http_content.py`, health and metrics by `metrics.py`, the WebSocket
endpoints by `listener.py` and `speaker.py`.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from realtime.core.access import bearer, slug
from realtime.core.protocol import (
    BAD_HOST,
    BAD_MESSAGE,
    BAD_ROOM,
    INTERNAL,
    NO_SUCH_ROOM,
    ORIGIN_NOT_ALLOWED,
    TOO_MANY_ROOMS,
    ProtocolError,
    check_room,
)
from realtime.core.records import ASK_POLICIES, RoomExists, RoomGone, RoomRecord
from realtime.core.room import Room
from realtime.room_admin import make_room, room_links
from realtime.server import http_content, metrics
from realtime.server.appkeys import (
    EXPORTS,
    GATE,
    HOSTS,
    NOTES,
    ORIGINS,
    ROOMS,
    SETTINGS,
    STORE,
)
from realtime.server.http_common import (
    BadBody,
    admin_refusal,
    allow_origin,
    error,
    key_blocked,
    read_json,
    wrong_key,
)

log = logging.getLogger(__name__)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", metrics.healthz)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_post("/v1/rooms", create_room)
    app.router.add_patch("/v1/rooms/{room}", update_room)
    app.router.add_delete("/v1/rooms/{room}", delete_room)
    http_content.add_routes(app)
    app.middlewares.append(guard)  # before CORS: a preflight for a foreign Host is 421 too
    app.middlewares.append(cors)
    app.middlewares.append(json_errors)


@web.middleware
async def guard(request: web.Request, handler) -> web.StreamResponse:
    """Every request, WebSocket handshakes included: a Host this server does not answer to is 421 (a DNS-rebinding
    page names its own host); a state-changing request from a page whose Origin is not allowed is 403 (CSRF); a
    request with a key from a client throttled for wrong keys is 429."""
    if not request.app[HOSTS].allows(request.headers.get("Host")):
        return allow_origin(request, error(421, BAD_HOST, "this server does not answer to that host name"))
    origin = request.headers.get("Origin")
    if request.method in STATE_CHANGING and origin is not None and \
            not request.app[ORIGINS].allows(origin, request.host):
        return error(403, ORIGIN_NOT_ALLOWED, f"pages from {origin} may not change anything here (--allowed-origins)")
    # A WebSocket's key is judged after the upgrade, where the refusal is the documented `bad_key` (4401) and only
    # where the key matters (a private room, `start`); a public room's listener is never refused for it.
    blocked = None if request.headers.get("Upgrade", "").lower() == "websocket" else key_blocked(request)
    return allow_origin(request, blocked) if blocked is not None else await handler(request)


@web.middleware
async def cors(request: web.Request, handler) -> web.StreamResponse:
    """Let pages of allowed origins read our answers (a widget fetching a transcript); preflights included."""
    origin = request.headers.get("Origin")
    allowed = request.app[ORIGINS].cross_origin(origin, request.host)
    if request.method == "OPTIONS" and allowed and request.headers.get("Access-Control-Request-Method"):
        response: web.StreamResponse = web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
            "Access-Control-Allow-Headers": "content-type, authorization",
            "Access-Control-Max-Age": "600"})
    else:
        response = await handler(request)
    return allow_origin(request, response)


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """A body an endpoint cannot read, and an unexpected fault: JSON errors (the fault is logged with its
    traceback, never sent)."""
    try:
        return await handler(request)
    except BadBody as exc:
        return exc.response
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, INTERNAL, "internal server error")


# ---------------------------------------------------------------- rooms (admin API)


async def list_rooms(request: web.Request) -> web.Response:
    """Public rooms for everyone; private ones too for the admin."""
    key = bearer(request.headers.get("Authorization"))
    admin = request.app[GATE].is_admin(key)
    if key and not admin:
        refusal = wrong_key(request)
        if refusal is not None:
            return refusal
    live = {r.name: r for r in request.app[ROOMS]}
    out = []
    for rec in request.app[STORE].list_rooms():
        if rec.viewer_key_hash is not None and not admin:
            continue
        out.append(room_info(rec, live.pop(rec.name, None)))
    return web.json_response(out)


def room_info(rec: RoomRecord, room: Room | None) -> dict:
    return {"room": rec.name, "title": rec.title, "private": rec.viewer_key_hash is not None,
            "open": rec.speaker_key_hash is None, "ask": rec.ask, "finals": len(room.finals) if room else None,
            "listeners": room.listeners if room else 0, "speaking": bool(room and room.session is not None),
            "audio_s": round(room.audio_s if room else rec.audio_s, 2)}


def _ask_policy(body: dict, default: str) -> str:
    ask = body.get("ask", default)
    if ask not in ASK_POLICIES:
        raise BadBody(error(400, BAD_MESSAGE, f"ask must be one of {', '.join(ASK_POLICIES)}"))
    return ask


async def create_room(request: web.Request) -> web.Response:
    refusal = admin_refusal(request)
    if refusal is not None:
        return refusal
    body = await read_json(request)
    title, private = body.get("title"), body.get("private", False)
    name = body.get("room") or slug(title if isinstance(title, str) else "")
    if not (isinstance(title, str) and 0 < len(title.strip()) <= 200 and isinstance(private, bool)
            and isinstance(name, str)):
        return error(400, BAD_MESSAGE, 'send {"title": "Physics 101" (1-200 characters), "room": optional name, '
                                       '"private": true or false, "ask": "anyone", "viewers" or "nobody"}')
    ask = _ask_policy(body, "anyone")
    settings, store = request.app[SETTINGS], request.app[STORE]
    try:
        name = check_room(name, settings.max_room_name)
    except ProtocolError as exc:
        return error(400, BAD_ROOM, exc.message)
    if len(store.list_rooms()) >= settings.max_rooms:
        return error(429, TOO_MANY_ROOMS, f"this server holds {settings.max_rooms} rooms, its limit (--max-rooms)")
    try:
        created = make_room(store, title.strip(), name, private, ask=ask)
    except RoomExists:
        return error(409, BAD_ROOM, f"room {name!r} exists already")
    base = settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return web.json_response(room_links(created, base), status=201)


async def update_room(request: web.Request) -> web.Response:
    """PATCH `{"ask": "anyone" | "viewers" | "nobody"}`: who may ask questions (the admin or the room's speaker)."""
    room = request.app[ROOMS].find(request.match_info["room"])
    key = bearer(request.headers.get("Authorization"))
    gate = request.app[GATE]
    if room is None or not (gate.is_admin(key) or gate.is_speaker(room.record.speaker_key_hash, key)):
        if key and not gate.is_admin(key):  # the admin key naming a missing room is a typo, not a guess
            refusal = wrong_key(request)
            if refusal is not None:
                return refusal
        return http_content.no_such_room(room)
    room.used_at = time.monotonic()
    ask = _ask_policy(await read_json(request), room.record.ask)
    try:
        request.app[STORE].set_ask(room.name, ask)
    except RoomGone:
        return http_content.no_such_room(None)
    room.record.ask = ask
    return web.json_response(room_info(room.record, room))


async def delete_room(request: web.Request) -> web.Response:
    """Delete a room for good. Refused while a lecture or a connection uses it; work still running for it (a notes
    update, a summary, a question) is cancelled first, so nothing can write the room back."""
    refusal = admin_refusal(request)
    if refusal is not None:
        return refusal
    name = request.match_info["room"]
    rooms = request.app[ROOMS]
    room = rooms.find(name)
    if room is not None and (room.session is not None or room.connections):
        return error(409, BAD_ROOM, "the room is in use; try again when its lecture is over")
    found = await rooms.delete(name)
    request.app[NOTES].forget(name)
    request.app[EXPORTS].forget(name)
    if not found:
        return error(404, NO_SUCH_ROOM, "no such room")
    return web.json_response({"room": name, "deleted": True})
