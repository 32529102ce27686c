"""A room: per-room event numbering, the transcript so far, durability, resume, and fan-out through outboxes.

A room numbers every published event (`seq`) and every final (`id`), keeps its finals (typed, for late joiners,
the notes and the exports) and the current partial, and offers each event's JSON to every connection's outbox. An
outbox that refuses (its bounded queue is full: a listener too slow to keep up) is dropped from the fan-out and
closes itself with `slow_listener`, instead of slowing the speaker or anyone else.

Durability: finals, notes and summaries are written to the store *before* anyone is sent them, so a crash never
loses what a listener has seen. Seqs are reserved in the store in blocks, so after a crash numbering continues
above anything that was sent. A listener that reconnects with the last `seq` it saw gets exactly the events it
missed from a ring of recent events, or, when the ring does not reach back that far (a long outage, a restart),
every final, notes and summary it missed and the current partial.

Sans-I/O: the room knows outboxes, a speaker session and a store only by the small protocols below; the asyncio
side (queues, tasks, the registry of rooms) is `realtime.server.rooms`, the notes' state `realtime.notes.lecture`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from realtime.core.protocol import (
    CLOSE_NO_SUCH_ROOM,
    NO_SUCH_ROOM,
    Error,
    Event,
    Final,
    Hello,
    Notes,
    Panel,
    Partial,
    Status,
    Summary,
    Translation,
    dumps,
    encode,
)
from realtime.core.records import RoomGone, RoomRecord, RoomState, Store

RESUME_EVENTS = 2048  # recent events kept for exact resume: about 8 minutes of a lecture's partials and statuses
SEQ_BLOCK = 1000  # seqs reserved in the store at a time

log = logging.getLogger(__name__)


class Outbox(Protocol):
    """One connection's outbound side, as the room sees it."""

    role: str

    def catch_up(self, texts: list[str]) -> None:
        """Queue what a joiner is owed (hello, the history); never refused, however long."""

    def offer(self, text: str) -> bool:
        """Queue a live event; False when the outbox cannot take it (then it closes itself as too slow)."""

    def close(self, code: int, reason: str = "") -> None: ...


class Session(Protocol):
    """The speaker's session while one streams into the room (`realtime.server.speaker.SpeakerSession`)."""

    conn: Outbox

    async def stop(self) -> None: ...


def latest_key(data: dict[str, Any]) -> str:
    """Where a room keeps the latest event of a kind: its type, and a panel's name with it ("panel:terms")."""
    return f"panel:{data['panel']}" if data["type"] == "panel" else data["type"]


class Room:
    def __init__(self, name: str, store: Store | None = None, record: RoomRecord | None = None):
        self.name = name
        self.store = store
        self.record = record or RoomRecord(name)
        self.seq = self.record.seq_reserved  # after a restart, above every seq that may have been sent
        self.restart_seq = self.seq  # events up to here were sent before a restart: only durable ones replay
        self.finals: list[Final] = []
        self._final_seqs: list[int] = []  # the seq each final was sent with
        self._final_texts: list[str] = []  # the same finals, encoded once
        self.partial: dict[str, Any] | None = None
        # the latest notes, summary and panel events (a panel's under "panel:<name>"): seq and text
        self._latest: dict[str, tuple[int, str]] = {}
        # lang -> final id -> (seq, text): translation events, sent only to the listeners of their language
        self.translations: dict[str, dict[int, tuple[int, str]]] = {}
        self.recent: deque[tuple[int, str, str | None]] = deque(maxlen=RESUME_EVENTS)  # seq, text, lang or None
        self.connections: set[Outbox] = set()
        self.speaker: Outbox | None = None
        self.session: Session | None = None
        self.audio_s = self.record.audio_s  # lecture time so far (sum over the room's streams)
        self.glossary = self.record.glossary  # the speaker's start prompt: course terms
        self.deleted = False  # deleted rooms publish nothing more (their in-flight work is cancelled)
        self.used_at = time.monotonic()  # last HTTP read (rooms only read are released after a while)
        self.store_errors = 0
        self.published: dict[str, int] = {}  # events by type; shared by all rooms of a server (Rooms sets it)
        self.on_publish: list[Callable[[Event], None]] = []  # told of every published event (the notes)
        self.on_gone: list[Callable[[], None]] = []  # told once the room is deleted (cancel its work)

    @classmethod
    def restore(cls, state: RoomState, store: Store | None) -> Room:
        """A room as the store kept it: its finals, latest notes and summary, and its clock and seq carried on."""
        room = cls(state.record.name, store, state.record)
        room.seq = max(room.seq, *(f["seq"] for f in state.finals), 0)
        room.restart_seq = room.seq
        room.finals = [Final.from_dict(f) for f in state.finals]
        room._final_seqs = [int(f["seq"]) for f in state.finals]
        room._final_texts = [dumps(f) for f in state.finals]
        if state.finals:
            room.audio_s = max(room.audio_s, state.finals[-1]["end"])
        for data in (state.notes, state.summary, *state.panels):
            if data is not None:
                room._latest[latest_key(data)] = (int(data["seq"]), dumps(data))
        for data in state.translations:
            room.translations.setdefault(data["lang"], {})[int(data["final"])] = (int(data["seq"]), dumps(data))
        return room

    @property
    def listeners(self) -> int:
        """Connections other than the publishing speaker: listeners, and speaker sockets that have not started
        (they receive the room's events too, so they count against --max-listeners like listeners)."""
        return sum(1 for c in self.connections if c is not self.speaker)

    @property
    def private(self) -> bool:
        return self.record.viewer_key_hash is not None

    def final_texts(self) -> list[str]:
        """The finals as the JSON texts they were sent as (a snapshot)."""
        return list(self._final_texts)

    def finals_after(self, seq: int) -> int:
        """The index of the first final sent after `seq` (len(finals) when there is none)."""
        return next((i for i in range(len(self._final_seqs) - 1, -1, -1) if self._final_seqs[i] <= seq), -1) + 1

    def latest(self, kind: str) -> str | None:
        """The latest `notes`, `summary` or `panel:<name>` event as it was sent, or None."""
        latest = self._latest.get(kind)
        return latest[1] if latest else None

    def publish(self, event: Event) -> int | None:
        """Number an event, store what must survive, remember what late joiners need, and offer it to everyone.
        Its seq; None, and nothing sent, once the room is deleted (here, or in the database by another process)."""
        if self.deleted:
            return None
        if isinstance(event, Final):  # ids continue after the last one (a restored room may miss a failed write)
            event = dataclasses.replace(event, id=self.finals[-1].id + 1 if self.finals else 0)
        self.seq += 1
        self.published[event.type] = self.published.get(event.type, 0) + 1
        data = event.to_dict(self.seq)
        try:
            self._persist(event, data)  # before anyone can see it
        except RoomGone:
            self.gone()
            return None
        text = dumps(data)
        if isinstance(event, Final):
            self.finals.append(event)
            self._final_seqs.append(self.seq)
            self._final_texts.append(text)
            if self.partial and self.partial["utterance"] == event.utterance:
                self.partial = None
        elif isinstance(event, Partial):
            self.partial = data if (event.committed or event.unstable) else None
        elif isinstance(event, Notes | Summary | Panel):
            self._latest[latest_key(data)] = (self.seq, text)
        lang = None
        if isinstance(event, Translation):
            lang = event.lang
            self.translations.setdefault(lang, {})[event.final] = (self.seq, text)
        self.recent.append((self.seq, text, lang))
        for hook in self.on_publish:
            hook(event)
        for conn in list(self.connections):
            if lang is not None and getattr(conn, "translate", None) != lang:
                continue
            if not conn.offer(text):
                self.connections.discard(conn)
                log.info("room %s: disconnecting a slow %s", self.name, conn.role)
        return self.seq

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
            elif isinstance(event, Translation):
                self.store.save_translation(self.name, data)
            elif isinstance(event, Panel):
                self.store.save_panel(self.name, data)
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
        for hook in self.on_gone:
            hook()
        for conn in list(self.connections):
            self.error(conn, NO_SUCH_ROOM, "this room was deleted")
            conn.close(CLOSE_NO_SUCH_ROOM, NO_SUCH_ROOM)

    def direct(self, conn: Outbox, event: Event) -> None:
        """A reply to one connection (hello, error, pong); it repeats the room's current seq."""
        conn.offer(encode(event, self.seq))

    def replay(self, since: int | None, lang: str | None = None) -> tuple[str, list[str]]:
        """What a joining connection is sent after `hello`, and how it was chosen; with `lang`, the translations
        into it come too (each after the finals, as it would have come live).

        - `history` (no `since`): every final so far and its translation, the current partial, the latest notes,
          panels and summary.
        - `exact`: every event after `since`, when the ring of recent events reaches back that far.
        - `durable`: otherwise (a long outage, a restart in between): every final, and the latest notes, panels
          and summary, sent after `since`, then the current partial. Partials and statuses in between are gone,
          and matter no more.
        """
        latest = sorted(self._latest.values())  # notes, panels and summary, as they were sent
        translated = sorted(self.translations.get(lang, {}).values()) if lang else []
        if since is None:
            texts = list(self._final_texts) + [text for _, text in translated]
            texts += [dumps(self.partial)] if self.partial is not None else []
            return "history", texts + [text for _, text in latest]
        if since >= self.seq:
            return "exact", []
        if since >= self.restart_seq and self.recent and self.recent[0][0] <= since + 1:
            return "exact", [text for seq, text, of in self.recent if seq > since and of in (None, lang)]
        texts = self._final_texts[self.finals_after(since):]
        texts += [text for seq, text in translated if seq > since]
        texts += [text for seq, text in latest if seq > since]
        if self.partial is not None and self.partial["seq"] > since:
            texts.append(dumps(self.partial))
        return "durable", texts

    def join(self, conn: Outbox, hello: Hello, since: int | None = None) -> None:
        """Greet a connection, send it what it missed, and add it to the fan-out."""
        lang = getattr(conn, "translate", None)
        mode, texts = self.replay(since, lang)
        conn.catch_up([encode(dataclasses.replace(hello, replay=mode, translate=lang), self.seq), *texts])
        self.connections.add(conn)

    def leave(self, conn: Outbox) -> None:
        self.connections.discard(conn)
        if self.speaker is conn:
            self.speaker = None

    def error(self, conn: Outbox, code: str, message: str) -> None:
        self.direct(conn, Error(code, message))
