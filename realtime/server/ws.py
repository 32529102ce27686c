"""WebSocket plumbing shared by the speaker and listener endpoints: the handshake's checks (origin, room,
connection caps), keys, the sender task that drains a connection's queue, and the throttle on reading.

Refusals happen after the upgrade, as an `error` message and a documented close code (docs/protocol.md): a browser
sees a failed handshake only as 1006, and could not tell the lecturer why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSMsgType, web

from realtime.asr.pool import Engine
from realtime.core.access import bearer, client_address, proxied
from realtime.core.protocol import (
    BAD_KEY,
    BAD_MESSAGE,
    CLOSE_BAD_ROOM,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_KEY,
    CLOSE_NO_SUCH_ROOM,
    CLOSE_NORMAL,
    CLOSE_ORIGIN,
    CLOSE_TRY_AGAIN,
    INTERNAL,
    KEY_REQUIRED,
    NO_SUCH_ROOM,
    ORIGIN_NOT_ALLOWED,
    ROOM_FULL,
    SHUTTING_DOWN,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ROOMS,
    Auth,
    ProtocolError,
    check_room,
    parse_text,
)
from realtime.core.ratelimit import TokenBucket
from realtime.core.room import Room
from realtime.server.appkeys import (
    CONNECTIONS,
    GATE,
    LIMITS,
    ORIGINS,
    ROOMS,
    SETTINGS,
    STATS,
    STORE,
    Limits,
    ServerStats,
)
from realtime.server.rooms import Connection

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0  # a private room's connection must present its key this soon


async def serve_socket(request: web.Request, role: str, handler,
                       protocols: tuple[str, ...] = ()) -> web.WebSocketResponse:
    """An endpoint's socket from handshake to close: `handler(request, ws, room, conn)` runs once the connection is
    accepted, and however it ends the connection's slot is freed (`close_socket`). `protocols`: subprotocols the
    endpoint may select (a browser fails a handshake that selects none of those it offered)."""
    ws, conn, room = await open_socket(request, role, protocols)
    if room is None:
        return ws
    try:
        await handler(request, ws, room, conn)
    finally:
        close_socket(request, room, conn)
    return ws


async def refuse(ws: web.WebSocketResponse, stats: ServerStats, code: str, message: str, close_code: int) -> None:
    """An error message, then the close code: a browser sees a failed handshake only as 1006, so refusals happen
    after it, where the page can read why."""
    stats.refuse(code)
    with contextlib.suppress(Exception):
        await ws.send_json({"type": "error", "seq": 0, "code": code, "message": message})
        await ws.close(code=close_code, message=code.encode())


async def open_socket(request: web.Request, role: str,
                      protocols: tuple[str, ...] = ()) -> tuple[web.WebSocketResponse, Connection, Room | None]:
    """Handshake, origin, room and connection-count checks; the room is None when the connection was refused (and
    closed). An accepted connection holds a slot of the connection caps until `close_socket`."""
    app = request.app
    settings, stats = app[SETTINGS], app[STATS]
    # Frames a little over the limit reach us and get a polite error; far larger ones are closed by aiohttp (1009).
    ws = web.WebSocketResponse(heartbeat=30, protocols=protocols,
                               max_msg_size=4 * max(settings.max_frame_bytes, settings.max_message_bytes))
    await ws.prepare(request)
    conn = Connection(role, settings.listener_queue)
    origin = request.headers.get("Origin")
    if stats.draining:
        await refuse(ws, stats, SHUTTING_DOWN, "the server is restarting; reconnect shortly", CLOSE_GOING_AWAY)
        return ws, conn, None
    if not app[ORIGINS].allows(origin, request.host):
        log.info("refused a %s connection from origin %r", role, origin)
        await refuse(ws, stats, ORIGIN_NOT_ALLOWED,
                     f"pages from {origin} may not connect to this server (--allowed-origins)", CLOSE_ORIGIN)
        return ws, conn, None
    try:
        name = check_room(request.match_info["room"], settings.max_room_name)
    except ProtocolError as exc:
        await refuse(ws, stats, exc.code, exc.message, CLOSE_BAD_ROOM)
        return ws, conn, None
    rooms = app[ROOMS]
    room = rooms.find(name)
    if room is None:
        if not app[GATE].open_rooms or proxied(request.headers):
            await refuse(ws, stats, NO_SUCH_ROOM, f"there is no room {name!r}; rooms are made with "
                         "`realtime room create` or the admin API", CLOSE_NO_SUCH_ROOM)
            return ws, conn, None
        if len(app[STORE].list_rooms()) >= settings.max_rooms:
            await refuse(ws, stats, TOO_MANY_ROOMS, "this server has as many rooms as it may hold", CLOSE_TRY_AGAIN)
            return ws, conn, None
        room = rooms.get(name)
    if room.listeners >= settings.max_listeners:  # a speaker socket counts as a listener until it publishes
        await refuse(ws, stats, ROOM_FULL, f"room {name!r} has {room.listeners} listeners, its limit",
                     CLOSE_TRY_AGAIN)
        app[ROOMS].release(room)
        return ws, conn, None
    conn.client = client_address(request.remote, request.headers)
    refusal = app[CONNECTIONS].admit(conn.client)
    if refusal is not None:
        await refuse(ws, stats, TOO_MANY_CONNECTIONS, "this server holds as many connections as it may" if
                     refusal == "total" else "your address holds as many connections as it may", CLOSE_TRY_AGAIN)
        app[ROOMS].release(room)
        return ws, conn, None
    stats.connections[role] += 1
    return ws, conn, room


def close_socket(request: web.Request, room: Room, conn: Connection) -> None:
    """The end of an accepted connection: its slot is free and its room, if unused now, leaves memory."""
    room.leave(conn)
    request.app[CONNECTIONS].release(conn.client)
    request.app[ROOMS].release(room)


async def first_key(request: web.Request, ws: web.WebSocketResponse, room: Room, needed: bool) -> str | None | bool:
    """The key a connection presents: its `Authorization: Bearer` header, or else, where the room needs one before
    anything is sent (a private room), an `auth` first message. False when it was refused (and closed)."""
    key = bearer(request.headers.get("Authorization"))
    if key or not needed:
        return key
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_S)
        cmd = parse_text(msg.data, 1024) if msg.type == WSMsgType.TEXT else None
    except (TimeoutError, ProtocolError):
        cmd = None
    if not isinstance(cmd, Auth):
        await refuse(ws, request.app[STATS], KEY_REQUIRED,
                     f"room {room.name!r} is private: send {{\"type\": \"auth\", \"key\": ...}} first", CLOSE_KEY)
        return False
    return cmd.key


async def check_view(request: web.Request, ws: web.WebSocketResponse, room: Room) -> str | None | bool:
    """The connection's key, after checking that it may see the room (False: refused and closed)."""
    key = await first_key(request, ws, room, room.private)
    if key is False:
        return False
    limits, client = request.app[LIMITS], client_address(request.remote, request.headers)
    if key and room.private and not key_allowed(limits, client):
        await refuse(ws, request.app[STATS], BAD_KEY, "too many wrong keys from your address; wait", CLOSE_KEY)
        return False
    if not request.app[GATE].may_view(room.record.viewer_key_hash, room.record.speaker_key_hash, key):
        log.info("room %s: refused a wrong viewer key", room.name)
        count_wrong_key(limits, client)
        await refuse(ws, request.app[STATS], BAD_KEY, "that key does not open this room", CLOSE_KEY)
        return False
    return key


def key_allowed(limits: Limits, client: str) -> bool:
    """Whether a key presented on a WebSocket may be tried at all: not while its client is throttled for wrong keys
    (the HTTP API's throttle; there a right key is refused too, so a guesser learns nothing until it waits)."""
    return limits.keys.blocked(client, time.monotonic()) == 0


def count_wrong_key(limits: Limits, client: str) -> None:
    limits.keys.take(client, time.monotonic())


def since_of(request: web.Request) -> int | None:
    """`?since=SEQ`: resume after the last event a client saw."""
    raw = request.query.get("since")
    if raw is None:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        raise ProtocolError(BAD_MESSAGE, "since must be a whole number (the last seq you saw)") from None


async def sender(ws: web.WebSocketResponse, conn: Connection) -> None:
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
    except Exception:  # a message that cannot be sent must not leave the connection silent: close it instead
        log.exception("sending to a %s failed", conn.role)
        conn.close_code, conn.close_reason = CLOSE_INTERNAL, INTERNAL
    finally:
        if conn.close_code is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close(code=conn.close_code, message=conn.close_reason.encode()[:120])


async def finish(ws: web.WebSocketResponse, conn: Connection, task: asyncio.Task, code: int = CLOSE_NORMAL) -> None:
    conn.close(code)
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    if not ws.closed:
        await ws.close(code=code)


async def throttle(bucket: TokenBucket) -> None:
    """One message read: beyond its connection's rate, stop reading for a while (TCP pushes back on the sender)."""
    wait = bucket.spend(1.0, time.monotonic())
    if wait > 0:
        await asyncio.sleep(wait)


def model_name(engine: Engine) -> str:
    return engine.decoder.name


