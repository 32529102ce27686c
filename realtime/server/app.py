"""aiohttp application: the WebSocket endpoints' common plumbing, the listener endpoint, the browser pages and the
server's lifecycle (start, graceful shutdown).

Handlers only move bytes between sockets and the core (protocol, access) and the shell (engine, rooms, store); the
speaker endpoint is in `speaker.py`, the HTTP API in `http_api.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from realtime import PROTOCOL_VERSION
from realtime.asr.pool import Engine
from realtime.config import Settings
from realtime.core.access import Gate, bearer, client_address, proxied
from realtime.core.origins import HostPolicy, OriginPolicy
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
    NOT_A_SPEAKER,
    ORIGIN_NOT_ALLOWED,
    ROOM_FULL,
    SHUTTING_DOWN,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ROOMS,
    Auth,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    check_room,
    parse_text,
)
from realtime.core.ratelimit import MESSAGE_BURST, MESSAGE_RATE, ClientBuckets, ConnectionCounter, TokenBucket
from realtime.core.room import Connection, Room, Rooms
from realtime.notes.budget import LLMBudget
from realtime.notes.llm import LLMClient
from realtime.notes.service import NotesService
from realtime.server import http_api, memory, metrics
from realtime.server.appkeys import (
    CONNECTIONS,
    ENGINE,
    EXPORTS,
    GATE,
    HOSTS,
    LIMITS,
    MONITOR,
    NOTES,
    OFFLOAD,
    ORIGINS,
    ROOMS,
    SETTINGS,
    STARTED,
    STATS,
    STORE,
    Limits,
    ServerStats,
)
from realtime.server.exports import ExportCache
from realtime.server.headers import security_headers
from realtime.server.offload import Offload
from realtime.storage.sqlite import Store

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0  # a private room's connection must present its key this soon
SHUTDOWN_GRACE_S = 8.0  # SIGTERM: time for open utterances to get their finals
READ_ROOM_IDLE_S = 60.0  # rooms only read over HTTP stay in memory this long after their last read


async def housekeeping(rooms: Rooms, period_s: float = 10.0) -> None:
    """Release rooms that were only read, and give memory freed after bursts of connections back to the OS (see
    memory.py, off the event loop)."""
    trim = True
    while True:
        await asyncio.sleep(period_s)
        rooms.sweep(time.monotonic(), READ_ROOM_IDLE_S)
        if trim:
            trim = await asyncio.get_running_loop().run_in_executor(None, memory.trim)


def default_static_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "static"


def create_app(settings: Settings, engine: Engine, store: Store, gate: Gate,
               llm: LLMClient | None = None) -> web.Application:
    from realtime.server.speaker import speaker_ws

    app = web.Application(client_max_size=1 << 20)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[STORE] = store
    app[GATE] = gate
    app[STATS] = ServerStats()
    app[ROOMS] = Rooms(store, settings.notes_interval_s, settings.notes_min_words)
    app[OFFLOAD] = Offload()
    budget = LLMBudget({"notes": settings.llm_room_token_budget, "visitors": settings.llm_visitor_token_budget},
                       settings.llm_daily_token_cap)
    notes = app[NOTES] = NotesService(app[ROOMS], llm, budget=budget, offload=app[OFFLOAD],
                                      window_tokens=settings.llm_window_tokens, language=settings.notes_language,
                                      ask_max_tokens=settings.ask_max_tokens)
    app[STARTED] = time.time()
    app[ORIGINS] = OriginPolicy(settings.allowed_origins)
    app[HOSTS] = HostPolicy(gate.open_rooms, settings.public_url)
    app[CONNECTIONS] = ConnectionCounter(settings.max_connections, settings.max_connections_per_ip)
    app[LIMITS] = Limits(ClientBuckets(settings.ask_per_minute / 60, 3))
    app[EXPORTS] = ExportCache()
    app[MONITOR] = False
    app.router.add_get("/ws/speak/{room}", speaker_ws)
    app.router.add_get("/ws/listen/{room}", listener_ws)
    app.middlewares.append(security_headers)  # outermost: CSP, nosniff, frame-ancestors, Referrer-Policy on all
    http_api.add_routes(app)
    add_pages(app, Path(settings.static_dir) if settings.static_dir else default_static_dir())

    background: list[asyncio.Task] = []

    async def on_startup(app: web.Application) -> None:
        engine.start()
        loop = asyncio.get_running_loop()
        if settings.notes:
            background.append(loop.create_task(notes.run(), name="notes"))
        background.append(loop.create_task(housekeeping(app[ROOMS]), name="housekeeping"))
        if settings.metrics_port:
            monitor = await start_monitor(app, settings.metrics_port)
            app.on_cleanup.insert(0, lambda _: monitor.cleanup())

    async def on_shutdown(app: web.Application) -> None:
        """SIGTERM: new connections are already refused. Finish every open utterance (finals stored and sent),
        bring the notes up to date, then close every socket with 1001 after what is queued for it."""
        app[STATS].draining = True
        sessions = [room.session for room in app[ROOMS] if room.session is not None]
        if sessions:
            log.warning("shutting down: finishing %d lecture stream(s)", len(sessions))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True),
                                       SHUTDOWN_GRACE_S)
        for room in app[ROOMS]:
            for conn in list(room.connections):
                conn.close(CLOSE_GOING_AWAY, "server shutting down")

    async def on_cleanup(app: web.Application) -> None:
        for task in background:
            task.cancel()
        if llm is not None:
            await llm.close()
        await engine.close()
        app[OFFLOAD].close()
        store.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def start_monitor(app: web.Application, port: int) -> web.AppRunner:
    """`--metrics-port`: /metrics and the detailed /healthz on loopback, with no key (for a Prometheus on the same
    machine, or one reached through an SSH tunnel); the main port serves them to the admin key only."""
    monitor = web.Application()
    for key in (ENGINE, ROOMS, STATS, NOTES, STARTED, SETTINGS, GATE, OFFLOAD, LIMITS):
        monitor[key] = app[key]
    monitor[MONITOR] = True
    monitor.router.add_get("/healthz", metrics.healthz)
    monitor.router.add_get("/metrics", metrics.metrics)
    runner = web.AppRunner(monitor, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.warning("metrics on http://127.0.0.1:%d/metrics", port)
    return runner


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


async def refuse(ws: web.WebSocketResponse, stats: ServerStats, code: str, message: str, close_code: int) -> None:
    """An error message, then the close code: a browser sees a failed handshake only as 1006, so refusals happen
    after it, where the page can read why."""
    stats.refuse(code)
    with contextlib.suppress(Exception):
        await ws.send_json({"type": "error", "seq": 0, "code": code, "message": message})
        await ws.close(code=close_code, message=code.encode())


async def open_socket(request: web.Request, role: str) -> tuple[web.WebSocketResponse, Connection, Room | None]:
    """Handshake, origin, room and connection-count checks; the room is None when the connection was refused (and
    closed). An accepted connection holds a slot of the connection caps until `close_socket`."""
    app = request.app
    settings, stats = app[SETTINGS], app[STATS]
    # Frames a little over the limit reach us and get a polite error; far larger ones are closed by aiohttp (1009).
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * max(settings.max_frame_bytes,
                                                                  settings.max_message_bytes))
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
    if key and room.private and not key_allowed(request):
        await refuse(ws, request.app[STATS], BAD_KEY, "too many wrong keys from your address; wait", CLOSE_KEY)
        return False
    if not request.app[GATE].may_view(room.record.viewer_key_hash, room.record.speaker_key_hash, key):
        log.info("room %s: refused a wrong viewer key", room.name)
        count_wrong_key(request)
        await refuse(ws, request.app[STATS], BAD_KEY, "that key does not open this room", CLOSE_KEY)
        return False
    return key


def key_allowed(request: web.Request) -> bool:
    """Whether a key presented on a WebSocket may be tried at all: not while its client is throttled for wrong keys
    (the HTTP API's throttle; there a right key is refused too, so a guesser learns nothing until it waits)."""
    return request.app[LIMITS].keys.blocked(client_address(request.remote, request.headers), time.monotonic()) == 0


def count_wrong_key(request: web.Request) -> None:
    request.app[LIMITS].keys.take(client_address(request.remote, request.headers), time.monotonic())


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


def model_name(request: web.Request) -> str:
    return request.app[ENGINE].decoder.name


# ---------------------------------------------------------------- listener


async def listener_ws(request: web.Request) -> web.WebSocketResponse:
    ws, conn, room = await open_socket(request, "listener")
    if room is None:
        return ws
    try:
        await listen(request, ws, room, conn)
    finally:
        close_socket(request, room, conn)
    return ws


async def listen(request: web.Request, ws: web.WebSocketResponse, room: Room, conn: Connection) -> None:
    try:
        since = since_of(request)
    except ProtocolError as exc:
        await refuse(ws, request.app[STATS], exc.code, exc.message, CLOSE_BAD_ROOM)
        return
    if await check_view(request, ws, room) is False:
        return
    settings = request.app[SETTINGS]
    task = asyncio.get_running_loop().create_task(sender(ws, conn))
    room.join(conn, Hello(room.name, "listener", PROTOCOL_VERSION, model_name(request), len(room.finals)), since)
    messages = TokenBucket(MESSAGE_RATE, MESSAGE_BURST, time.monotonic())
    try:
        async for msg in ws:
            await throttle(messages)
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
                elif not isinstance(cmd, Auth):  # a key sent to a public room changes nothing
                    room.error(conn, NOT_A_SPEAKER, "only the speaker can start or stop the lecture")
            if conn.close_code is not None:
                break
    finally:
        room.leave(conn)
        await finish(ws, conn, task, conn.close_code or CLOSE_NORMAL)
