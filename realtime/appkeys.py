"""The shared objects an aiohttp application holds, under typed keys (one place, so handler modules don't import
each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from realtime.access import Gate
from realtime.config import Settings
from realtime.engine import Engine
from realtime.notes.service import NotesService
from realtime.origins import OriginPolicy
from realtime.rooms import Rooms
from realtime.store import Store


@dataclass
class ServerStats:
    """Counters of the socket layer, for /metrics; `draining` once SIGTERM arrived."""

    connections: dict[str, int] = field(default_factory=lambda: {"speaker": 0, "listener": 0})
    refused: dict[str, int] = field(default_factory=dict)
    audio_in_s: float = 0.0
    draining: bool = False

    def refuse(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1


ENGINE = web.AppKey("engine", Engine)
ROOMS = web.AppKey("rooms", Rooms)
SETTINGS = web.AppKey("settings", Settings)
STARTED = web.AppKey("started", float)
NOTES = web.AppKey("notes", NotesService)
ORIGINS = web.AppKey("origins", OriginPolicy)
STORE = web.AppKey("store", Store)
GATE = web.AppKey("gate", Gate)
STATS = web.AppKey("stats", ServerStats)
