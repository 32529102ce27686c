"""The aiohttp application: `create_app` wires the shared objects, the URL map (the WebSocket endpoints here, the
HTTP API in `http_api.py`, the browser pages) and the server's lifecycle (start, graceful shutdown).

This is the only module that imports the endpoints (`speaker.py`, `listener.py`, `http_api.py`); they share their
plumbing through `ws.py` and `http_common.py` and the application's objects through `appkeys.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from aiohttp import web

from realtime.asr.pool import Engine
from realtime.config import Settings
from realtime.core.access import Gate
from realtime.core.origins import HostPolicy, OriginPolicy
from realtime.core.protocol import (
    CLOSE_GOING_AWAY,
)
from realtime.core.ratelimit import ClientBuckets, ConnectionCounter
from realtime.core.records import Store
from realtime.llm.process import LocalLLM
from realtime.notes.budget import LLMBudget
from realtime.notes.llm import LLMClient
from realtime.notes.service import NotesService
from realtime.notes.translate import Translations
from realtime.server import http_api, memory, metrics, oai_audio, oai_realtime
from realtime.server.appkeys import (
    CONNECTIONS,
    ENGINE,
    EXPORTS,
    GATE,
    HOSTS,
    LIMITS,
    LOCAL_LLM,
    MONITOR,
    NOTES,
    OFFLOAD,
    ORIGINS,
    ROOMS,
    SETTINGS,
    STARTED,
    STATS,
    STORE,
    TRANSLATIONS,
    Limits,
    ServerStats,
)
from realtime.server.exports import ExportCache
from realtime.server.headers import security_headers
from realtime.server.listener import listener_ws
from realtime.server.oai_translation import TranslationSession
from realtime.server.offload import Offload
from realtime.server.rooms import Rooms
from realtime.server.speaker import SpeakerSession, speaker_ws
from realtime.server.upload import add_routes as add_upload_routes

log = logging.getLogger(__name__)

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
               llm: LLMClient | None = None, local_llm: LocalLLM | None = None) -> web.Application:
    # A request line must hold the longest prompt the API accepts, URL-encoded (2000 characters, up to 24 kB).
    app = web.Application(client_max_size=1 << 20, handler_args={"max_line_size": 32768})
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[STORE] = store
    app[GATE] = gate
    app[LOCAL_LLM] = local_llm  # started and stopped by run.py; shown by /healthz and /metrics
    app[STATS] = ServerStats()
    app[ROOMS] = Rooms(store)
    app[OFFLOAD] = Offload()
    budget = LLMBudget({"notes": settings.llm_room_token_budget, "visitors": settings.llm_visitor_token_budget,
                        "translation": settings.llm_translation_token_budget},
                       settings.llm_daily_token_cap)
    notes = app[NOTES] = NotesService(app[ROOMS], llm, budget=budget, offload=app[OFFLOAD],
                                      window_tokens=settings.llm_window_tokens, language=settings.notes_language,
                                      ask_max_tokens=settings.ask_max_tokens,
                                      notes_interval_s=settings.notes_interval_s,
                                      notes_min_words=settings.notes_min_words)
    app[TRANSLATIONS] = Translations(notes, max_languages=settings.max_translation_languages)
    app[STARTED] = time.time()
    app[ORIGINS] = OriginPolicy(settings.allowed_origins)
    app[HOSTS] = HostPolicy(gate.open_rooms, settings.public_url)
    app[CONNECTIONS] = ConnectionCounter(settings.max_connections, settings.max_connections_per_ip)
    app[LIMITS] = Limits(ClientBuckets(settings.ask_per_minute / 60, 3))
    app[EXPORTS] = ExportCache()
    app[MONITOR] = False
    app.router.add_get("/ws/speak/{room}", speaker_ws)
    app.router.add_get("/ws/listen/{room}", listener_ws)
    app.router.add_get("/v1/realtime", oai_realtime.endpoint(SpeakerSession))  # OpenAI Realtime transcription
    app.router.add_get("/v1/realtime/translations", oai_realtime.endpoint(SpeakerSession, TranslationSession))
    app.middlewares.append(security_headers)  # outermost: CSP, nosniff, frame-ancestors, Referrer-Policy on all
    http_api.add_routes(app)
    oai_audio.add_routes(app)  # OpenAI's speech-to-text API: /v1/audio/transcriptions, translations, /v1/models
    add_upload_routes(app)  # recorded lectures into rooms: POST/GET/DELETE /v1/rooms/{room}/upload
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
        await app[ROOMS].cancel_all()  # notes, summaries, answers in flight: before the store and the LLM close
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
    for key in (ENGINE, ROOMS, STATS, NOTES, TRANSLATIONS, STARTED, SETTINGS, GATE, OFFLOAD, LIMITS, LOCAL_LLM):
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
