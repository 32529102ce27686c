"""Room resume and durability without sockets: the three replay modes, store-before-send, seq reservation in
blocks, restoring a room from the store, and store failures that must not stop the captions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from realtime import PROTOCOL_VERSION
from realtime.core.protocol import UNNUMBERED, Final, Hello, Notes, Panel, Partial, Status, Summary, Word
from realtime.core.records import RoomRecord, RoomState
from realtime.core.room import RESUME_EVENTS, SEQ_BLOCK, Room
from realtime.notes.lecture import LectureNotes
from realtime.notes.scheduler import NotesScheduler
from realtime.notes.service import NotesService
from realtime.notes.state import Bullet
from realtime.server.rooms import Connection, Rooms
from realtime.storage.sqlite import SQLiteStore

BULLETS = [{"id": "b1", "text": "**Entropy** never decreases", "refs": [0, 1], "parent": None},
           {"id": "b2", "text": "in a closed system", "refs": [1], "parent": "b1"}]


def final(i: int) -> Final:
    return Final(UNNUMBERED, i, float(i), i + 0.5, f"sentence {i}", "en", [Word("sentence", float(i), i + 0.3, 0.9)])


def notes(version: int) -> Notes:
    return Notes(version, "extractive", BULLETS, added=["b1", "b2"])


def decode(texts: list[str]) -> list[tuple[str, int]]:
    return [(e["type"], e["seq"]) for e in map(json.loads, texts)]


def drain(conn: Connection) -> list[dict[str, Any]]:
    out = [json.loads(t) for t in conn.backlog]
    while not conn.queue.empty():
        item = conn.queue.get_nowait()
        if item is not None:
            out.append(json.loads(item))
    return out


def lecture(room: Room) -> None:
    """seq 1 partial, 2 final 0, 3 status, 4 notes v1, 5 final 1, 6 notes v2, 7 summary, 8 partial (current)."""
    room.publish(Partial(0, 0.0, "sen", "tence"))
    room.publish(final(0))
    room.publish(Status("live", speaker=True))
    room.publish(notes(1))
    room.publish(final(1))
    room.publish(notes(2))
    room.publish(Summary("extractive", 2, "# Summary\n\n- entropy"))
    room.publish(Partial(2, 2.0, "next", "one"))


# ---------------------------------------------------------------- replay modes


async def test_history_is_finals_partial_latest_notes_and_summary() -> None:
    room = Room("r")
    lecture(room)
    mode, texts = room.replay(None)
    assert (mode, decode(texts)) == ("history", [("final", 2), ("final", 5), ("partial", 8), ("notes", 6),
                                                 ("summary", 7)])
    assert json.loads(texts[2])["committed"] == "next"


async def test_history_without_a_current_partial() -> None:
    room = Room("r")
    room.publish(Partial(0, 0.0, "sen", ""))
    room.publish(final(0))  # the final of the partial's utterance ends it
    room.publish(Partial(1, 1.0, "x", ""))
    room.publish(Partial(1, 1.0, "", ""))  # an empty partial clears it too
    mode, texts = room.replay(None)
    assert (mode, decode(texts)) == ("history", [("final", 2)])


async def test_exact_is_every_event_after_since_in_order() -> None:
    room = Room("r")
    lecture(room)
    mode, texts = room.replay(2)
    assert mode == "exact"
    assert decode(texts) == [("status", 3), ("notes", 4), ("final", 5), ("notes", 6), ("summary", 7),
                             ("partial", 8)]
    assert decode(room.replay(0)[1])[0] == ("partial", 1)
    assert room.replay(7) == ("exact", [texts[-1]])
    assert room.replay(8) == ("exact", [])
    assert room.replay(100) == ("exact", [])


async def test_durable_when_the_ring_does_not_reach_back() -> None:
    room = Room("r")
    lecture(room)  # seqs 1-8
    for i in range(2, RESUME_EVENTS + 2):  # finals at odd seqs, statuses at even ones
        room.publish(final(i))
        room.publish(Status("live"))
    room.publish(Partial(9999, 99.0, "still", "talking"))
    last = room.seq
    assert last == 8 + 2 * RESUME_EVENTS + 1
    oldest = room.recent[0][0]
    assert oldest == last - RESUME_EVENTS + 1
    mode, texts = room.replay(oldest - 1)
    assert (mode, len(texts)) == ("exact", RESUME_EVENTS)
    mode, texts = room.replay(oldest - 2)
    assert mode == "durable"  # finals sit at odd seqs, statuses (gone) at even ones
    assert decode(texts) == [*[("final", s) for s in range(oldest - 1, last, 2)], ("partial", last)]
    mode, texts = room.replay(5)  # notes v2 (6) and the summary (7) are newer; final 0 (2) and final 1 (5) are not
    assert mode == "durable"
    assert decode(texts) == [*[("final", s) for s in range(9, last, 2)], ("notes", 6), ("summary", 7),
                             ("partial", last)]
    assert [json.loads(t)["id"] for t in texts[:3]] == [2, 3, 4]
    assert decode(room.replay(6)[1])[-2:] == [("summary", 7), ("partial", last)]


async def test_durable_below_the_restart_seq() -> None:
    room = Room("r", record=RoomRecord("r", seq_reserved=50))
    assert (room.seq, room.restart_seq) == (50, 50)
    room.publish(final(0))
    room.publish(Status("live"))
    room.publish(Partial(1, 1.0, "a", "b"))
    mode, texts = room.replay(50)
    assert (mode, decode(texts)) == ("exact", [("final", 51), ("status", 52), ("partial", 53)])
    mode, texts = room.replay(49)
    assert mode == "durable"
    assert decode(texts) == [("final", 51), ("partial", 53)]
    assert room.replay(52) == ("exact", [room.recent[-1][1]])


async def test_join_sends_hello_with_the_replay_mode_first() -> None:
    room = Room("r")
    lecture(room)
    for since, mode, n in [(None, "history", 5), (6, "exact", 2), (8, "exact", 0)]:
        conn = Connection("listener", maxsize=4)
        room.join(conn, Hello("r", "listener", finals=2), since=since)
        got = drain(conn)
        assert got[0] == {"type": "hello", "seq": 8, "room": "r", "role": "listener", "protocol": PROTOCOL_VERSION,
                          "model": "", "finals": 2, "replay": mode, "translate": None}
        assert len(got) == 1 + n and conn in room.connections
    room.recent.clear()  # as after a restart: nothing to resume exactly
    conn = Connection("listener", maxsize=4)
    room.join(conn, Hello("r", "listener"), since=3)
    got = drain(conn)
    assert got[0]["replay"] == "durable"
    assert [(e["type"], e["seq"]) for e in got[1:]] == [("final", 5), ("notes", 6), ("summary", 7), ("partial", 8)]


# ---------------------------------------------------------------- durability


class RecordingStore(SQLiteStore):
    """Notes, at each save_final, whether any connection could already see the final, and counts reservations."""

    def __init__(self, path: str, room: Room | None = None):
        super().__init__(path)
        self.room = room
        self.seen_before_save: list[bool] = []
        self.reserved: list[int] = []

    def save_final(self, room: str, final: dict[str, Any], audio_s: float) -> None:
        conns = self.room.connections if self.room else set()
        self.seen_before_save.append(any(final["text"] in t for c in conns for t in [*c.queue._queue, *c.backlog]))
        super().save_final(room, final, audio_s)

    def reserve_seq(self, room: str, upto: int) -> None:
        self.reserved.append(upto)
        super().reserve_seq(room, upto)


def room_in(store: SQLiteStore, name: str = "r") -> Room:
    """A room that exists in `store` (no write creates one)."""
    store.add_room(RoomRecord(name))
    return Room(name, store)


class BrokenStore(SQLiteStore):
    def save_final(self, room: str, final: dict[str, Any], audio_s: float) -> None:
        raise OSError("disk full")


async def test_a_final_is_stored_before_anyone_is_sent_it() -> None:
    store = RecordingStore(":memory:")
    room = store.room = room_in(store)
    a, b = Connection("listener", 16), Connection("speaker", 16)
    room.join(a, Hello("r", "listener"))
    room.join(b, Hello("r", "speaker"))
    room.publish(final(0))
    room.publish(final(1))
    assert store.seen_before_save == [False, False]
    assert [e.get("text") for e in drain(a)] == [None, "sentence 0", "sentence 1"]  # sent after it was stored
    assert [f["text"] for f in store.load_room("r").finals] == ["sentence 0", "sentence 1"]


async def test_seqs_are_reserved_in_blocks() -> None:
    store = RecordingStore(":memory:")
    room = room_in(store, "r")
    for i in range(2 * SEQ_BLOCK + 500):
        room.publish(Partial(i, float(i), "w", ""))
    assert room.seq == 2 * SEQ_BLOCK + 500
    assert store.reserved == [1 + SEQ_BLOCK, 2 + 2 * SEQ_BLOCK, 3 + 3 * SEQ_BLOCK]
    assert store.get_room("r").seq_reserved == 3 + 3 * SEQ_BLOCK


async def test_restore_brings_the_room_back_and_numbering_continues(tmp_path: Path) -> None:
    path = str(tmp_path / "rooms.db")
    store = SQLiteStore(path)
    room = room_in(store, "r")
    lecture(room)
    room.publish(final(2))  # seq 9
    store.close()

    store = SQLiteStore(path)
    back = Room.restore(store.load_room("r"), store)
    assert back.finals == room.finals
    assert [f.id for f in back.finals] == [0, 1, 2]
    assert back._final_texts == room._final_texts
    notes = LectureNotes.restore(back, NotesScheduler())
    assert notes.state.version == 2
    assert notes.state.bullets == [Bullet("b1", BULLETS[0]["text"], (0, 1)),
                                   Bullet("b2", BULLETS[1]["text"], (1,), "b1")]
    assert notes.first_new == 2  # finals 0 and 1 came before notes v2; final 2 is not in the notes yet
    assert notes.schedule.new_words == 2  # so final 2 counts as new text
    assert (notes.summary, notes.summary_finals) == ("# Summary\n\n- entropy", 2)
    assert back.audio_s == 2.5
    assert back.seq == back.restart_seq == 1 + SEQ_BLOCK  # the reservation, above every seq sent (9)
    assert back.partial is None
    assert decode(back.replay(None)[1]) == [("final", 2), ("final", 5), ("final", 9), ("notes", 6), ("summary", 7)]
    assert back.replay(5) == ("durable", [back._final_texts[2], room.latest("notes"), room.latest("summary")])
    assert back.replay(back.seq) == ("exact", [])  # nothing published since the restart

    assert back.publish(final(3)) == 2 + SEQ_BLOCK
    assert back.finals[-1].id == 3
    back.publish(final(4))
    assert back.finals[-1].id == 4
    assert store.get_room("r").seq_reserved == 2 + 2 * SEQ_BLOCK
    assert [f["id"] for f in store.load_room("r").finals] == [0, 1, 2, 3, 4]
    store.close()


async def test_restore_seq_is_above_every_stored_final() -> None:
    state = RoomState(RoomRecord("r", seq_reserved=3), [dict(final(0).to_dict(7), id=0)], None, None)
    back = Room.restore(state, None)
    notes = LectureNotes.restore(back, NotesScheduler())
    assert (back.seq, back.restart_seq, notes.first_new, notes.summary) == (7, 7, 0, "")
    assert back.publish(final(1)) == 8


async def test_a_failing_store_does_not_stop_the_captions() -> None:
    room = room_in(BrokenStore(":memory:"))
    conn = Connection("listener", 16)
    room.join(conn, Hello("r", "listener"))
    room.publish(final(0))
    room.publish(Partial(1, 1.0, "a", ""))
    room.publish(final(1))
    assert room.store_errors == 2
    assert [e["type"] for e in drain(conn)] == ["hello", "final", "partial", "final"]
    assert [f.id for f in room.finals] == [0, 1]


async def test_rooms_load_lazily_and_forget_keeps_store_errors() -> None:
    store = SQLiteStore(":memory:")
    room_in(store, "lec").publish(final(0))
    rooms = Rooms(store)
    service = NotesService(rooms, notes_interval_s=7.0, notes_min_words=3)
    assert len(rooms) == 0
    assert rooms.find("nope") is None
    room = rooms.find("lec")
    assert room is not None and len(rooms) == 1
    assert [f.text for f in room.finals] == ["sentence 0"]
    assert rooms.find("lec") is room
    assert room.published is rooms.published
    schedule = service.of(room).schedule
    assert (schedule.interval_s, schedule.min_new_words, schedule.new_words) == (7.0, 3, 2)  # "sentence 0" is new
    room.publish(final(1))
    assert rooms.published == {"final": 1}
    room.store_errors = 3
    assert rooms.forget("lec") is room
    assert len(rooms) == 0 and rooms.store_errors == 3
    assert rooms.forget("lec") is None and rooms.store_errors == 3
    again = rooms.find("lec")
    assert again is not room and [f.id for f in again.finals] == [0, 1]
    assert Rooms().find("lec") is None


class FlakyReserveStore(SQLiteStore):
    """reserve_seq fails the first time only."""

    def __init__(self, path: str):
        super().__init__(path)
        self.failures = 1

    def reserve_seq(self, room: str, upto: int) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk busy")
        super().reserve_seq(room, upto)


async def test_a_failed_reservation_is_retried_and_loses_no_final() -> None:
    store = FlakyReserveStore(":memory:")
    room = room_in(store, "r")
    room.publish(final(0))  # its reservation fails: the final is stored all the same
    room.publish(final(1))  # and the reservation is retried here
    for i in range(5):
        room.publish(Status("live", speaker=True, audio_s=float(i)))
    assert room.store_errors == 1
    assert [f["text"] for f in store.load_room("r").finals] == ["sentence 0", "sentence 1"]
    again = Room.restore(store.load_room("r"), store)
    assert again.seq >= 7  # above every seq sent
    again.publish(final(2))
    assert again.finals[-1].id == 2


async def test_final_ids_continue_after_a_gap_in_the_store() -> None:
    store = SQLiteStore(":memory:")
    room = room_in(store, "r")
    for i in range(3):
        room.publish(final(i))
    store.delete_room("r")  # as if the write of final 0 and 1 had failed: only final 2 is stored
    store.add_room(RoomRecord("r"))
    store.save_final("r", json.loads(room.final_texts()[2]), 3.0)
    again = Room.restore(store.load_room("r"), store)
    again.publish(final(3))
    assert again.finals[-1].id == 3  # not 1: that would overwrite a stored final
    assert [f["id"] for f in store.load_room("r").finals] == [2, 3]


async def test_a_room_deleted_from_the_store_publishes_nothing_more() -> None:
    store = SQLiteStore(":memory:")
    room = room_in(store)
    conn = Connection("listener", 16)
    room.join(conn, Hello("r", "listener"))
    room.publish(final(0))
    store.delete_room("r")  # by `realtime room delete`, while the server runs
    assert room.publish(final(1)) is None and room.deleted
    assert room.publish(Partial(2, 1.0, "a", "")) is None
    assert [e.get("code") or e["type"] for e in drain(conn)] == ["hello", "final", "no_such_room"]
    assert conn.close_code == 4404 and store.get_room("r") is None


async def test_shutdown_cancels_and_awaits_the_work_of_every_room() -> None:
    import asyncio

    rooms = Rooms()
    finished: list[str] = []

    async def work(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            finished.append(name)  # what a cancelled LLM call does on its way out (record its cost)

    for name in ("a", "b"):
        rooms.track(rooms.get(name), asyncio.get_running_loop().create_task(work(name)))
    await asyncio.sleep(0)  # both under way
    await rooms.cancel_all()
    assert sorted(finished) == ["a", "b"] and not any(rooms.tasks(r) for r in rooms)


async def test_panels_are_stored_replayed_and_restored_latest_version_of_each(tmp_path: Path) -> None:
    path = str(tmp_path / "rooms.db")
    store = SQLiteStore(path)
    room = room_in(store, "r")
    room.publish(final(0))  # seq 1
    term = {"id": "t:entropy", "term": "entropy", "text": "Entropy never decreases.", "refs": [0], "start": 0.0}
    task = {"id": "a0.0", "text": "Read chapter 4.", "kind": "reading", "due": "", "refs": [0], "start": 0.0}
    room.publish(Panel("terms", 1, "extractive", [term], added=[term["id"]]))  # seq 2
    room.publish(Panel("tasks", 1, "extractive", [task], added=[task["id"]]))  # seq 3
    room.publish(Panel("terms", 2, "extractive", [{**term, "text": "Entropy is a measure."}],
                       changed=[term["id"]]))  # seq 4
    assert decode(room.replay(None)[1]) == [("final", 1), ("panel", 3), ("panel", 4)]
    assert [e["seq"] for e in store.events_after("r", 1)] == [2, 3, 4]  # every version is kept
    store.close()

    store = SQLiteStore(path)
    back = Room.restore(store.load_room("r"), store)
    assert decode(back.replay(None)[1]) == [("final", 1), ("panel", 3), ("panel", 4)]
    assert back.replay(3) == ("durable", [room.latest("panel:terms")])
    notes = LectureNotes.restore(back, NotesScheduler())
    assert notes.panels["terms"].version == 2 and notes.panels["terms"].items[0]["text"] == "Entropy is a measure."
    assert notes.panels["tasks"].items == [task] and notes.panels["outline"].version == 0
    store.close()
