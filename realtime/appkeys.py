"""Typed keys of the shared objects an aiohttp application holds (one place, so handler modules don't import
each other)."""

from __future__ import annotations

from aiohttp import web

from realtime.config import Settings
from realtime.engine import Engine
from realtime.notes.service import NotesService
from realtime.origins import OriginPolicy
from realtime.rooms import Rooms

ENGINE = web.AppKey("engine", Engine)
ROOMS = web.AppKey("rooms", Rooms)
SETTINGS = web.AppKey("settings", Settings)
STARTED = web.AppKey("started", float)
NOTES = web.AppKey("notes", NotesService)
ORIGINS = web.AppKey("origins", OriginPolicy)
