"""The notes side of one room (sans-I/O): its bullet notes and study panels, when to update them, and its latest
summary.

The room (`realtime.core.room.Room`) numbers and sends events and knows nothing of notes; the notes service keeps
one `LectureNotes` per room in memory, made from the room's own events when it comes into memory, and feeds it
every event the room publishes (`published`), so the schedule counts new words and the summary stays current.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from realtime.core.protocol import Event, Final, Summary
from realtime.core.room import Room
from realtime.notes.panels import PANELS, PanelState
from realtime.notes.scheduler import NotesScheduler
from realtime.notes.state import NotesState
from realtime.notes.study_prompt import restore


@dataclass
class LectureNotes:
    state: NotesState = field(default_factory=NotesState)
    schedule: NotesScheduler = field(default_factory=NotesScheduler)
    first_new: int = 0  # finals from this index on are not in the notes yet
    busy: bool = False  # an update is being made
    flushing: bool = False  # notes and summary of a stopped stream still being made in the background
    summary: str = ""  # the latest end-of-lecture summary (Markdown)
    summary_finals: int = -1  # how many finals it covers (-1: there is none)
    clock: Callable[[], float] = time.monotonic  # when new text arrived (a replay runs on simulated time)
    rejected: int = 0  # LLM notes answers rejected (since the room came into memory)
    last_rejection: str = ""  # the reason of the latest (state.REJECTIONS)
    panels: dict[str, PanelState] = field(default_factory=lambda: {p: PanelState(p) for p in PANELS})
    started_at: float | None = None  # wall-clock time the lecture began, as its first final tells (None: unknown)
    refined: dict[tuple[str, str], dict] = field(default_factory=dict)  # the LLM's wording of panel items
    refining: bool = False  # an LLM call refining the panels is under way

    @classmethod
    def restore(cls, room: Room, schedule: NotesScheduler,
                clock: Callable[[], float] = time.monotonic) -> LectureNotes:
        """The notes of a room as it came into memory (perhaps restored from the store): its latest notes and
        summary events, and the finals published after those notes counted as new text."""
        notes = cls(schedule=schedule, clock=clock)
        latest = room.latest("notes")
        if latest is not None:
            data = json.loads(latest)
            notes.state = NotesState.from_event(data)
            notes.first_new = room.finals_after(int(data["seq"]))
        for final in room.finals[notes.first_new:]:
            schedule.add_final(final.text, clock())
        for name in PANELS:
            latest = room.latest(f"panel:{name}")
            if latest is not None:
                notes.panels[name] = PanelState.from_event(json.loads(latest))
                notes.refined.update(restore(notes.panels[name].items))
        latest = room.latest("summary")
        if latest is not None:
            data = json.loads(latest)
            notes.summary, notes.summary_finals = data["markdown"], int(data.get("finals", 0))
        return notes

    def published(self, event: Event) -> None:
        """Told of every event the room publishes."""
        if isinstance(event, Final):
            self.schedule.add_final(event.text, self.clock())
            if self.started_at is None and event.id == 0:  # published as it is said: the lecture began end ago
                self.started_at = time.time() - event.end
        elif isinstance(event, Summary):
            self.summary, self.summary_finals = event.markdown, event.finals

    def in_use(self) -> bool:
        """Work is under way or due: the room must stay in memory."""
        return self.busy or self.flushing or self.schedule.new_words > 0
