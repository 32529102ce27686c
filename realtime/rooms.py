"""Rooms: per-room event numbering, the transcript so far, and fan-out to listeners with bounded queues.

A room numbers every published event (`seq`), keeps its finals (for late joiners and the transcript endpoint) and
the current partial, and copies each event's JSON into every connection's queue. A connection whose queue is full
is too slow to keep up: it is closed with `slow_listener` instead of slowing the speaker or anyone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import deque
from typing import Any

from realtime.notes.scheduler import NotesScheduler
from realtime.notes.state import NotesState
from realtime.protocol import CLOSE_SLOW_LISTENER, SLOW_LISTENER, Error, Event, Final, Notes, Partial, encode

log = logging.getLogger(__name__)


class Connection:
    """One WebSocket's outbound side: the catch-up backlog of a joiner, then a bounded queue of live events, both
    drained by one sender task. The backlog (hello, the finals so far) is unbounded so that any room can be joined;
    only live events count against the queue limit."""

    def __init__(self, role: str, maxsize: int):
        self.role = role
        self.backlog: deque[str] = deque()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(max(1, maxsize))
        self.close_code: int | None = None
        self.close_reason = ""

    def offer(self, text: str) -> bool:
        if self.close_code is not None:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.close_code, self.close_reason = CLOSE_SLOW_LISTENER, SLOW_LISTENER
            self._wake_sender()
            return False

    def close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._wake_sender()

    def _wake_sender(self) -> None:
        # Make room for the sentinel so the sender notices the close even when the queue is full.
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


class Room:
    def __init__(self, name: str):
        self.name = name
        self.seq = 0
        self.finals: list[dict[str, Any]] = []
        self._final_texts: list[str] = []  # the same finals, encoded once
        self.partial: dict[str, Any] | None = None
        self.connections: set[Connection] = set()
        self.speaker: Connection | None = None
        self.audio_s = 0.0  # lecture time so far (sum over the room's streams)
        self.notes = NotesState()
        self.notes_schedule = NotesScheduler()
        self._notes_text: str | None = None  # the latest notes event, for late joiners
        self.notes_first_new = 0  # finals from this index on are not in the notes yet
        self.notes_busy = False
        self.llm_tokens = 0
        self.glossary = ""  # the speaker's start prompt: course terms
        self.summary = ""  # the latest end-of-lecture summary (Markdown)

    @property
    def listeners(self) -> int:
        return sum(1 for c in self.connections if c.role == "listener")

    def publish(self, event: Event) -> dict[str, Any]:
        """Number an event, remember what late joiners need, and queue it for every connection."""
        if isinstance(event, Final):
            event = dataclasses.replace(event, id=len(self.finals))
        self.seq += 1
        data = event.to_dict(self.seq)
        if isinstance(event, Final):
            self.finals.append(data)
            if self.partial and self.partial["utterance"] == event.utterance:
                self.partial = None
        elif isinstance(event, Partial):
            self.partial = data if (event.committed or event.unstable) else None
        text = _dumps(data)
        if isinstance(event, Final):
            self._final_texts.append(text)
            self.notes_schedule.add_final(event.text, time.monotonic())
        elif isinstance(event, Notes):
            self._notes_text = text
        for conn in list(self.connections):
            if not conn.offer(text):
                self.connections.discard(conn)
                log.info("room %s: disconnecting a slow %s", self.name, conn.role)
        return data

    def direct(self, conn: Connection, event: Event) -> None:
        """A reply to one connection (hello, error, pong); it repeats the room's current seq."""
        conn.offer(encode(event, self.seq))

    def join(self, conn: Connection, hello: Event) -> None:
        """Greet a connection, give it what it missed (finals so far, the current partial), add it to the fan-out."""
        conn.backlog.append(encode(hello, self.seq))
        conn.backlog.extend(self._final_texts)
        if self.partial is not None:
            conn.backlog.append(_dumps(self.partial))
        if self._notes_text is not None:
            conn.backlog.append(self._notes_text)
        self.connections.add(conn)

    def leave(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.speaker is conn:
            self.speaker = None

    def error(self, conn: Connection, code: str, message: str) -> None:
        self.direct(conn, Error(code, message))


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class Rooms:
    def __init__(self, notes_interval_s: float = 45.0, notes_min_words: int = 120) -> None:
        self._rooms: dict[str, Room] = {}
        self.notes_interval_s = notes_interval_s
        self.notes_min_words = notes_min_words

    def get(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name)
            room.notes_schedule.interval_s = self.notes_interval_s
            room.notes_schedule.min_new_words = self.notes_min_words
        return room

    def find(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def __iter__(self):
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)
