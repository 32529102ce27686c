"""The shared objects an aiohttp application holds, under typed keys (one place, so handler modules don't import
each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from realtime.asr.offline import OfflineTranscriber
from realtime.asr.pool import Engine
from realtime.config import Settings
from realtime.core.access import Gate
from realtime.core.origins import HostPolicy, OriginPolicy
from realtime.core.ratelimit import ClientBuckets, ConnectionCounter
from realtime.core.records import Store
from realtime.llm.process import LocalLLM
from realtime.notes.service import NotesService
from realtime.notes.translate import Translations
from realtime.server.exports import ExportCache
from realtime.server.offload import Offload
from realtime.server.rooms import Rooms


@dataclass
class ServerStats:
    """Counters of the socket layer, for /metrics; `draining` once SIGTERM arrived."""

    connections: dict[str, int] = field(default_factory=lambda: {"speaker": 0, "listener": 0})
    refused: dict[str, int] = field(default_factory=dict)
    audio_in_s: float = 0.0
    draining: bool = False

    def refuse(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1


@dataclass
class Limits:
    """Per-client limits: questions and summaries (`asks`), and keys that opened nothing (`keys`, HTTP and
    WebSocket alike)."""

    asks: ClientBuckets
    keys: ClientBuckets = field(default_factory=lambda: ClientBuckets(rate=1 / 6, burst=10))


ENGINE = web.AppKey("engine", Engine)
ROOMS = web.AppKey("rooms", Rooms)
SETTINGS = web.AppKey("settings", Settings)
STARTED = web.AppKey("started", float)
NOTES = web.AppKey("notes", NotesService)
TRANSLATIONS = web.AppKey("translations", Translations)
ORIGINS = web.AppKey("origins", OriginPolicy)
STORE = web.AppKey("store", Store)
GATE = web.AppKey("gate", Gate)
STATS = web.AppKey("stats", ServerStats)
CONNECTIONS = web.AppKey("connections", ConnectionCounter)
HOSTS = web.AppKey("hosts", HostPolicy)
LIMITS = web.AppKey("limits", Limits)
EXPORTS = web.AppKey("exports", ExportCache)
OFFLOAD = web.AppKey("offload", Offload)
LOCAL_LLM = web.AppKey("local_llm", LocalLLM)  # the managed local model (--llm-model local), or None
OFFLINE = web.AppKey("offline", OfflineTranscriber)  # the batched offline path on the loaded model, or None
MONITOR = web.AppKey("monitor", bool)  # the --metrics-port app: its answers need no key
