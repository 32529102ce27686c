"""Runs the notes of every room: when a room's scheduler says so, rank its transcript and publish the change.

Notes work happens off the event loop and never holds up captions: a failure is logged and the notes stay as they
were. Without an LLM configured the extractive engine fills the notes; the LLM engine plugs in here.
"""

from __future__ import annotations

import asyncio
import logging
import time

from realtime.notes.extractive import extract
from realtime.notes.state import InvalidNotes
from realtime.protocol import Notes
from realtime.rooms import Room, Rooms

log = logging.getLogger(__name__)


class NotesService:
    def __init__(self, rooms: Rooms, max_bullets: int = 40):
        self.rooms = rooms
        self.max_bullets = max_bullets
        self.updates = 0
        self.failures = 0

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(tick_s)
            for room in self.rooms:
                if room.notes_schedule.due(time.monotonic()):
                    await self.update(room)

    async def update(self, room: Room) -> None:
        """Recompute the room's notes now (also used at stop, whatever the schedule says)."""
        if room.notes_schedule.new_words == 0:
            return
        room.notes_schedule.updated()
        segments = [(f["id"], f["text"]) for f in room.finals]
        try:
            proposal = await asyncio.get_running_loop().run_in_executor(None, extract, segments, self.max_bullets)
            change = room.notes.apply(proposal, "extractive", known_segments=len(segments))
        except (InvalidNotes, ValueError, FloatingPointError):
            self.failures += 1
            log.exception("room %s: notes update rejected", room.name)
            return
        if change is not None:
            self.updates += 1
            room.publish(Notes(change.version, change.source, [b.to_dict() for b in change.bullets],
                               change.added, change.changed, change.removed))
