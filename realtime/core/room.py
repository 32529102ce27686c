"""Rooms: per-room event numbering, the transcript so far, durability, resume, and fan-out with bounded queues.

A room numbers every published event (`seq`), keeps its finals (for late joiners and the transcript endpoint) and
the current partial, and copies each event's JSON into every connection's queue. A connection whose queue is full
is too slow to keep up: it is closed with `slow_listener` instead of slowing the speaker or anyone else.

Durability: finals, notes and summaries are written to the store *before* anyone is sent them, so a crash never
loses what a listener has seen. Seqs are reserved in the store in blocks, so after a crash numbering continues
above anything that was sent. A listener that reconnects with the last `seq` it saw gets exactly the events it
missed from a ring of recent events, or, when the ring does not reach back that far (a long outage, a restart),
every final, notes and summary it missed and the current partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from typing import Any

from realtime.core.protocol import (
    CLOSE_NO_SUCH_ROOM,
    CLOSE_SLOW_LISTENER,
    NO_SUCH_ROOM,
    SLOW_LISTENER,
    Error,
    Event,
    Final,
    Hello,
    Notes,
    Partial,
    Status,
    Summary,
    encode,
)
from realtime.notes.scheduler import NotesScheduler
from realtime.notes.state import NotesState
from realtime.storage.sqlite import RoomExists, RoomGone, RoomRecord, RoomState, Store

RESUME_EVENTS = 2048  # recent events kept for exact resume: about 8 minutes of a lecture's partials and statuses
SEQ_BLOCK = 1000  # seqs reserved in the store at a time

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
        self.client = ""  # the client address whose connection slot this holds (ratelimit.ConnectionCounter)

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
    def __init__(self, name: str, store: Store | None = None, record: RoomRecord | None = None):
        self.name = name
        self.store = store
        self.record = record or RoomRecord(name)
        self.seq = self.record.seq_reserved  # after a restart, above every seq that may have been sent
        self.restart_seq = self.seq  # events up to here were sent before a restart: only durable ones replay
        self.finals: list[dict[str, Any]] = []
        self._final_texts: list[str] = []  # the same finals, encoded once
        self.partial: dict[str, Any] | None = None
        self.recent: deque[tuple[int, str]] = deque(maxlen=RESUME_EVENTS)
        self.connections: set[Connection] = set()
        self.speaker: Connection | None = None
        self.session: Any = None  # the speaker's session while one is connected (server.SpeakerSession)
        self.audio_s = self.record.audio_s  # lecture time so far (sum over the room's streams)
        self.notes = NotesState()
        self.notes_schedule = NotesScheduler()
        self._notes_text: str | None = None  # the latest notes event, for late joiners
        self._summary_text: str | None = None
        self.notes_first_new = 0  # finals from this index on are not in the notes yet
        self.notes_busy = False
        self.flushing = False  # notes and summary of a stopped stream still being made in the background
        self.llm_tokens = 0
        self.glossary = self.record.glossary  # the speaker's start prompt: course terms
        self.summary = ""  # the latest end-of-lecture summary (Markdown)
        self.summary_finals = -1  # how many finals it covers (-1: there is none)
        self.deleted = False  # deleted rooms publish nothing more (their in-flight work is cancelled)
        self.tasks: set[asyncio.Task] = set()  # notes, summary and question work in flight for this room
        self.used_at = time.monotonic()  # last HTTP read (rooms only read are released after a while)
        self.store_errors = 0
        self.published: dict[str, int] = {}  # events by type; shared by all rooms of a server (Rooms sets it)

    @classmethod
    def restore(cls, state: RoomState, store: Store | None) -> Room:
        """A room as the store kept it: its finals, notes and summary, and its clock and seq carried on."""
        room = cls(state.record.name, store, state.record)
        room.seq = max(room.seq, *(f["seq"] for f in state.finals), 0)
        room.restart_seq = room.seq
        room.finals = list(state.finals)
        room._final_texts = [_dumps(f) for f in state.finals]
        if state.finals:
            room.audio_s = max(room.audio_s, state.finals[-1]["end"])
        if state.notes is not None:
            room.notes = NotesState.from_event(state.notes)
            room._notes_text = _dumps(state.notes)
            room.notes_first_new = sum(1 for f in state.finals if f["seq"] < state.notes["seq"])
        for f in state.finals[room.notes_first_new:]:
            room.notes_schedule.add_final(f["text"], time.monotonic())
        if state.summary is not None:
            room.summary = state.summary["markdown"]
            room.summary_finals = int(state.summary.get("finals", 0))
            room._summary_text = _dumps(state.summary)
        return room

    @property
    def listeners(self) -> int:
        """Connections other than the publishing speaker: listeners, and speaker sockets that have not started
        (they receive the room's events too, so they count against --max-listeners like listeners)."""
        return sum(1 for c in self.connections if c is not self.speaker)

    def final_texts(self) -> list[str]:
        """The finals as the JSON texts they were sent as (a snapshot)."""
        return list(self._final_texts)

    def track(self, task: asyncio.Task) -> asyncio.Task:
        """Work on behalf of this room that a delete must cancel (a notes update, a summary, a question)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @property
    def private(self) -> bool:
        return self.record.viewer_key_hash is not None

    def publish(self, event: Event) -> dict[str, Any] | None:
        """Number an event, store what must survive, remember what late joiners need, and queue it for everyone.
        None, and nothing sent, once the room is deleted (here, or in the database by another process)."""
        if self.deleted:
            return None
        if isinstance(event, Final):  # ids continue after the last one (a restored room may miss a failed write)
            event = dataclasses.replace(event, id=self.finals[-1]["id"] + 1 if self.finals else 0)
        self.seq += 1
        self.published[event.type] = self.published.get(event.type, 0) + 1
        data = event.to_dict(self.seq)
        try:
            self._persist(event, data)  # before anyone can see it
        except RoomGone:
            self.gone()
            return None
        if isinstance(event, Final):
            self.finals.append(data)
            if self.partial and self.partial["utterance"] == event.utterance:
                self.partial = None
        elif isinstance(event, Partial):
            self.partial = data if (event.committed or event.unstable) else None
        text = _dumps(data)
        self.recent.append((self.seq, text))
        if isinstance(event, Final):
            self._final_texts.append(text)
            self.notes_schedule.add_final(event.text, time.monotonic())
        elif isinstance(event, Notes):
            self._notes_text = text
        elif isinstance(event, Summary):
            self._summary_text = text
            self.summary, self.summary_finals = event.markdown, event.finals
        for conn in list(self.connections):
            if not conn.offer(text):
                self.connections.discard(conn)
                log.info("room %s: disconnecting a slow %s", self.name, conn.role)
        return data

    def _persist(self, event: Event, data: dict[str, Any]) -> None:
        """Write durable events through to the store. A failing disk is logged and counted, and captions go on:
        losing durability is better than losing the live lecture."""
        if self.store is None:
            return
        if self.seq > self.record.seq_reserved:
            try:  # retried with the next event until it succeeds
                self.store.reserve_seq(self.name, self.seq + SEQ_BLOCK)
                self.record.seq_reserved = self.seq + SEQ_BLOCK
            except RoomGone:
                raise
            except Exception:
                self.store_errors += 1
                log.exception("room %s: reserving seqs failed", self.name)
        try:
            if isinstance(event, Final):
                self.store.save_final(self.name, data, max(self.audio_s, event.end))
            elif isinstance(event, Notes):
                self.store.save_notes(self.name, data)
            elif isinstance(event, Summary):
                self.store.save_summary(self.name, data)
            elif isinstance(event, Status):
                self.store.save_progress(self.name, self.audio_s, self.glossary)
        except RoomGone:
            raise
        except Exception:
            self.store_errors += 1
            log.exception("room %s: storing %s %d failed", self.name, event.type, self.seq)

    def gone(self) -> None:
        """The room was deleted: publish nothing more, cancel its work, and close its connections (4404)."""
        if self.deleted:
            return
        self.deleted = True
        log.info("room %s: deleted; closing %d connection(s)", self.name, len(self.connections))
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for conn in list(self.connections):
            self.error(conn, NO_SUCH_ROOM, "this room was deleted")
            conn.close(CLOSE_NO_SUCH_ROOM, NO_SUCH_ROOM)

    def direct(self, conn: Connection, event: Event) -> None:
        """A reply to one connection (hello, error, pong); it repeats the room's current seq."""
        conn.offer(encode(event, self.seq))

    def replay(self, since: int | None) -> tuple[str, list[str]]:
        """What a joining connection is sent after `hello`, and how it was chosen.

        - `history` (no `since`): every final so far, the current partial, the latest notes and summary.
        - `exact`: every event after `since`, when the ring of recent events reaches back that far.
        - `durable`: otherwise (a long outage, a restart in between): every final, notes and summary after
          `since`, then the current partial. Partials and statuses in between are gone, and matter no more.
        """
        if since is None:
            texts = list(self._final_texts)
            texts += [_dumps(self.partial)] if self.partial is not None else []
            texts += [t for t in (self._notes_text, self._summary_text) if t is not None]
            return "history", texts
        if since >= self.seq:
            return "exact", []
        if since >= self.restart_seq and self.recent and self.recent[0][0] <= since + 1:
            return "exact", [text for seq, text in self.recent if seq > since]
        first = next((i for i in range(len(self.finals) - 1, -1, -1) if self.finals[i]["seq"] <= since), -1) + 1
        texts = self._final_texts[first:]
        for text in (self._notes_text, self._summary_text):
            if text is not None and json.loads(text)["seq"] > since:
                texts.append(text)
        if self.partial is not None and self.partial["seq"] > since:
            texts.append(_dumps(self.partial))
        return "durable", texts

    def join(self, conn: Connection, hello: Hello, since: int | None = None) -> None:
        """Greet a connection, send it what it missed, and add it to the fan-out."""
        mode, texts = self.replay(since)
        conn.backlog.append(encode(dataclasses.replace(hello, replay=mode), self.seq))
        conn.backlog.extend(texts)
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
    """The rooms this process serves: in memory while in use, loaded from the store on first use after a start."""

    def __init__(self, store: Store | None = None, notes_interval_s: float = 45.0, notes_min_words: int = 120):
        self._rooms: dict[str, Room] = {}
        self.store = store
        self.notes_interval_s = notes_interval_s
        self.notes_min_words = notes_min_words
        self.published: dict[str, int] = {}  # events by type over all rooms, for /metrics
        self.store_errors = 0  # of rooms no longer in memory

    def _add(self, room: Room) -> Room:
        room.published = self.published
        room.notes_schedule.interval_s = self.notes_interval_s
        room.notes_schedule.min_new_words = self.notes_min_words
        self._rooms[room.name] = room
        return room

    def get(self, name: str) -> Room:
        """The room, made now (keyless, and stored) if it exists nowhere: for callers that already decided it may be
        made (an open room of the loopback quick start)."""
        room = self.find(name)
        if room is None:
            record = RoomRecord(name, created_at=time.time())
            if self.store is not None:
                with contextlib.suppress(RoomExists):  # made meanwhile by `realtime room create`: load that one
                    self.store.add_room(record)
                room = self.find(name)
            room = room or self._add(Room(name, self.store, record))
        return room

    def find(self, name: str) -> Room | None:
        room = self._rooms.get(name)
        if room is None and self.store is not None:
            state = self.store.load_room(name)
            if state is not None:
                room = self._add(Room.restore(state, self.store))
        return room

    async def delete(self, name: str, grace_s: float = 5.0) -> bool:
        """Delete a room for good: nothing it still has in flight may publish into it or write it back. Its work is
        cancelled and awaited before the store forgets it. False when it exists nowhere."""
        room = self._rooms.get(name)
        if room is not None:
            room.gone()
            pending = [t for t in room.tasks if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=grace_s)
            self.forget(name)
        found = self.store.delete_room(name) if self.store is not None else room is not None
        return found or room is not None

    def release(self, room: Room) -> bool:
        """Forget a room nobody uses (the store has it): memory stays bounded however many rooms are visited."""
        busy = room.connections or room.session or room.notes_busy or room.flushing or room.tasks
        if busy or room.notes_schedule.new_words or self._rooms.get(room.name) is not room:
            return False
        self.forget(room.name)
        return True

    def sweep(self, now: float, idle_s: float) -> int:
        """Release the rooms that were only read (over HTTP) and have not been touched for `idle_s`."""
        released = 0
        for room in list(self._rooms.values()):
            if now - room.used_at >= idle_s and self.release(room):
                released += 1
        return released

    def forget(self, name: str) -> Room | None:
        room = self._rooms.pop(name, None)
        if room is not None:
            self.store_errors += room.store_errors
        return room

    def __iter__(self):
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)
