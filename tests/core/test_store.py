"""The persistence layer: round trips, ordering, no write recreating a deleted room, the v1 -> v2 migration, file
permissions, concurrent use of one file, and durability across SIGKILL."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from realtime.room_admin import make_room, room_command
from realtime.storage.sqlite import (
    _MIGRATIONS,
    ASK_POLICIES,
    SCHEMA_VERSION,
    RoomExists,
    RoomGone,
    RoomRecord,
    RoomState,
    SQLiteStore,
    Store,
    open_store,
)

ROOT = Path(__file__).resolve().parents[2]


def final(i: int, seq: int, text: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "final", "seq": seq, "id": i, "utterance": i, "start": i * 2.0, "end": i * 2.0 + 1.5,
            "text": text or f"Satz {i} über Übung", "language": "de",
            "words": [{"w": "Satz", "start": i * 2.0, "end": i * 2.0 + 0.4, "p": 0.9}], **extra}


def notes(version: int, seq: int) -> dict[str, Any]:
    return {"type": "notes", "seq": seq, "version": version, "source": "extractive",
            "bullets": [{"id": f"b{version}", "text": f"**Punkt** {version}", "refs": [0], "parent": None}],
            "added": [f"b{version}"], "changed": [], "removed": []}


def summary(seq: int, markdown: str = "# Zusammenfassung") -> dict[str, Any]:
    return {"type": "summary", "seq": seq, "source": "extractive", "finals": 2, "markdown": markdown}


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    s = SQLiteStore(":memory:" if request.param == "memory" else str(tmp_path / "store.db"))
    yield s
    s.close()


def count_rows(path: Path, table: str, room: str) -> int:
    column = "name" if table == "rooms" else "room"
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (room,)).fetchone()[0]


def dump(store: SQLiteStore) -> dict[str, list[tuple]]:
    """Every row of every table, through the store's own connection (so ":memory:" works too)."""
    return {table: store._db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("rooms", "finals", "notes", "summaries", "meta")}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# ---------------------------------------------------------------- round trips


def test_open_store_is_a_store_and_memory_works():
    s = open_store(":memory:")
    assert isinstance(s, SQLiteStore) and isinstance(s, Store)
    s.add_room(RoomRecord("r", title="Analysis I"))
    assert s.get_room("r") == RoomRecord("r", title="Analysis I")
    s.close()
    s.close()  # closing twice is harmless


def test_room_round_trip(store: SQLiteStore):
    rec = RoomRecord("ana1", title="Analysis I — Folgen", created_at=1700000000.5, speaker_key_hash="sk",
                     viewer_key_hash="vk", seq_reserved=1000, audio_s=12.5, glossary="Cauchy, Konvergenz",
                     ask="viewers", llm_tokens_notes=1200, llm_tokens_visitors=34)
    store.add_room(rec)
    assert store.get_room("ana1") == rec
    assert store.get_room("nope") is None
    assert store.list_rooms() == [rec]
    state = store.load_room("ana1")
    assert state == RoomState(record=rec, finals=[], notes=None, summary=None)
    assert store.load_room("nope") is None


def test_add_room_twice_raises_and_keeps_the_first(store: SQLiteStore):
    store.add_room(RoomRecord("r", title="first", speaker_key_hash="a"))
    with pytest.raises(RoomExists):
        store.add_room(RoomRecord("r", title="second"))
    assert store.get_room("r") == RoomRecord("r", title="first", speaker_key_hash="a")


def test_list_rooms_by_created_at_then_name(store: SQLiteStore):
    for name, created in [("c", 2.0), ("b", 1.0), ("z", 0.5), ("a", 1.0)]:
        store.add_room(RoomRecord(name, created_at=created))
    assert [r.name for r in store.list_rooms()] == ["z", "a", "b", "c"]


def test_load_room_brings_back_everything(store: SQLiteStore):
    store.add_room(RoomRecord("r", title="T", created_at=5.0))
    store.save_final("r", final(1, 4), audio_s=4.0)  # out of id order on purpose
    store.save_final("r", final(0, 2), audio_s=2.0)
    store.save_notes("r", notes(1, 3))
    store.save_notes("r", notes(2, 6))
    store.save_summary("r", summary(7, "alt"))
    store.save_summary("r", summary(9, "neu"))
    store.save_progress("r", 30.0, glossary="Übung, Grenzwert")
    state = store.load_room("r")
    assert state is not None
    assert state.finals == [final(0, 2), final(1, 4)]  # in id order, unicode and nested lists intact
    assert state.notes == notes(2, 6)
    assert state.summary == summary(9, "neu")
    assert state.record == RoomRecord("r", title="T", created_at=5.0, seq_reserved=9, audio_s=30.0,
                                      glossary="Übung, Grenzwert")


def test_round_trip_survives_reopening(tmp_path: Path):
    path = tmp_path / "deep" / "er" / "realtime.db"  # parents are created
    with SQLiteStore(str(path)) as s:
        s.add_room(RoomRecord("r", title="T", viewer_key_hash="v"))
        s.save_final("r", final(0, 1), audio_s=1.5)
        s.save_notes("r", notes(1, 2))
        s.save_summary("r", summary(3))
        s.set_meta("admin_key_hash", "h")
    with SQLiteStore(str(path)) as s:
        assert s.load_room("r") == RoomState(RoomRecord("r", title="T", viewer_key_hash="v", seq_reserved=3,
                                                        audio_s=1.5), [final(0, 1)], notes(1, 2), summary(3))
        assert s.get_meta("admin_key_hash") == "h"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "x.db"
    SQLiteStore(str(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteStore(str(path))


def test_meta_round_trip(store: SQLiteStore):
    assert store.get_meta("admin_key_hash") is None
    store.set_meta("admin_key_hash", "one")
    store.set_meta("admin_key_hash", "two")
    store.set_meta("other", "ä")
    assert store.get_meta("admin_key_hash") == "two"
    assert store.get_meta("other") == "ä"


def test_delete_room_cascades(tmp_path: Path):
    path = tmp_path / "s.db"
    with SQLiteStore(str(path)) as s:
        for room in ("gone", "kept"):
            s.add_room(RoomRecord(room))
            s.save_final(room, final(0, 1), audio_s=1.0)
            s.save_notes(room, notes(1, 2))
            s.save_summary(room, summary(3))
        assert s.delete_room("gone") is True
        assert s.delete_room("gone") is False
        assert s.delete_room("never") is False
        assert s.get_room("gone") is None and s.load_room("gone") is None
        assert s.events_after("gone", 0) == []
        assert [r.name for r in s.list_rooms()] == ["kept"]
        # re-creating the name starts empty: nothing of the old room comes back
        s.add_room(RoomRecord("gone"))
        assert s.load_room("gone") == RoomState(RoomRecord("gone"), [], None, None)
    for table in ("finals", "notes", "summaries"):
        assert count_rows(path, table, "gone") == 0
        assert count_rows(path, table, "kept") == 1


# ---------------------------------------------------------------- finals, progress, seq


def test_save_final_is_idempotent(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    store.save_final("r", final(0, 1, "erste Fassung"), audio_s=1.0)
    store.save_final("r", final(0, 1, "zweite Fassung"), audio_s=1.0)
    store.save_final("r", final(1, 2), audio_s=2.0)
    state = store.load_room("r")
    assert state is not None
    assert [f["text"] for f in state.finals] == ["zweite Fassung", final(1, 2)["text"]]
    assert [e["id"] for e in store.events_after("r", 0)] == [0, 1]


def test_audio_s_and_seq_reserved_are_never_lowered(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    store.save_final("r", final(0, 5), audio_s=10.0)
    store.save_final("r", final(1, 3), audio_s=4.0)  # lower on both counts
    rec = store.get_room("r")
    assert rec is not None and (rec.seq_reserved, rec.audio_s) == (5, 10.0)
    store.reserve_seq("r", 1005)
    store.reserve_seq("r", 7)
    store.save_progress("r", 3.0)
    rec = store.get_room("r")
    assert rec is not None and (rec.seq_reserved, rec.audio_s, rec.glossary) == (1005, 10.0, "")
    store.save_progress("r", 12.5, glossary="Begriffe")
    store.save_progress("r", 11.0)  # glossary None leaves it alone
    store.save_final("r", final(2, 1006), audio_s=11.0)
    rec = store.get_room("r")
    assert rec is not None and (rec.seq_reserved, rec.audio_s, rec.glossary) == (1006, 12.5, "Begriffe")


def test_notes_and_summary_raise_seq_reserved(store: SQLiteStore):
    store.add_room(RoomRecord("r", seq_reserved=10))
    store.save_notes("r", notes(1, 12))
    assert store.get_room("r").seq_reserved == 12
    store.save_summary("r", summary(15))
    assert store.get_room("r").seq_reserved == 15
    store.save_notes("r", notes(2, 13))  # lower: kept at 15
    assert store.get_room("r").seq_reserved == 15


def test_events_after_merges_in_seq_order(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    store.add_room(RoomRecord("other"))
    store.save_final("r", final(0, 1), audio_s=1.0)
    store.save_final("r", final(1, 2), audio_s=2.0)
    store.save_notes("r", notes(1, 3))
    store.save_final("r", final(2, 5), audio_s=3.0)
    store.save_notes("r", notes(2, 6))
    store.save_summary("r", summary(8))
    store.save_final("r", final(3, 9), audio_s=4.0)
    store.save_notes("r", notes(3, 10))
    store.save_final("other", final(0, 4), audio_s=1.0)
    store.save_notes("other", notes(1, 7))

    def seen(after: int) -> list[tuple[str, int]]:
        return [(e["type"], e["seq"]) for e in store.events_after("r", after)]

    everything = [("final", 1), ("final", 2), ("notes", 3), ("final", 5), ("notes", 6), ("summary", 8),
                  ("final", 9), ("notes", 10)]
    assert seen(0) == everything
    assert seen(2) == everything[2:]  # seq == 2 itself is excluded
    assert seen(4) == everything[3:]  # a gap: the first event after it
    assert seen(9) == [("notes", 10)]
    assert seen(10) == [] and seen(99) == []
    assert store.events_after("r", 5)[0] == notes(2, 6)  # whole event dicts, every notes version
    assert store.events_after("nope", 0) == []


def test_events_after_uses_the_seq_indexes(store: SQLiteStore):
    plan = store._db.execute(
        """EXPLAIN QUERY PLAN SELECT seq, data FROM finals WHERE room = ?1 AND seq > ?2
           UNION ALL SELECT seq, data FROM notes WHERE room = ?1 AND seq > ?2
           UNION ALL SELECT seq, data FROM summaries WHERE room = ?1 AND seq > ?2 ORDER BY seq""",
        ("r", 0)).fetchall()
    details = [row[-1] for row in plan]
    assert not any(d.startswith("SCAN") for d in details), details
    assert any("finals_room_seq" in d for d in details) and any("notes_room_seq" in d for d in details)


# ---------------------------------------------------------------- no write creates a room


WRITES = {
    "save_final": lambda s, room: s.save_final(room, final(5, 50), audio_s=99.0),
    "save_notes": lambda s, room: s.save_notes(room, notes(5, 51)),
    "save_summary": lambda s, room: s.save_summary(room, summary(52)),
    "save_progress": lambda s, room: s.save_progress(room, 99.0, glossary="neu"),
    "reserve_seq": lambda s, room: s.reserve_seq(room, 5000),
    "set_ask": lambda s, room: s.set_ask(room, "nobody"),
    "add_llm_tokens notes": lambda s, room: s.add_llm_tokens(room, "notes", 10),
    "add_llm_tokens visitors": lambda s, room: s.add_llm_tokens(room, "visitors", 10),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_after_delete_room_raises_room_gone_and_writes_nothing(store: SQLiteStore, write):
    """A server that still has a deleted room in memory must not bring it back (open, public, with its old rows)."""
    store.add_room(RoomRecord("kept"))
    store.add_room(RoomRecord("gone", speaker_key_hash="sk", viewer_key_hash="vk"))
    store.save_final("gone", final(0, 1), audio_s=1.0)
    store.save_notes("gone", notes(1, 2))
    assert store.delete_room("gone")
    before = dump(store)
    with pytest.raises(RoomGone) as raised:
        write(store, "gone")
    assert isinstance(raised.value, LookupError) and raised.value.args == ("gone",)
    with pytest.raises(RoomGone):
        write(store, "never-made")
    assert dump(store) == before
    assert store.get_room("gone") is None and store.load_room("gone") is None
    assert store.events_after("gone", 0) == []


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_racing_a_delete_by_another_process_writes_nothing(tmp_path: Path, write):
    """The CLI deletes the room through its own connection while the server's store has it open."""
    path = tmp_path / "s.db"
    with SQLiteStore(str(path)) as server, SQLiteStore(str(path)) as cli:
        server.add_room(RoomRecord("r", speaker_key_hash="sk"))
        server.save_final("r", final(0, 1), audio_s=1.0)
        assert cli.delete_room("r")
        with pytest.raises(RoomGone):
            write(server, "r")
    for table in ("rooms", "finals", "notes", "summaries"):
        assert count_rows(path, table, "r") == 0


# ---------------------------------------------------------------- foreign keys


def test_foreign_keys_are_on_and_cascade(store: SQLiteStore):
    assert store._db.execute("PRAGMA foreign_keys").fetchone() == (1,)
    store.add_room(RoomRecord("r"))
    store.save_final("r", final(0, 1), audio_s=1.0)
    store.save_notes("r", notes(1, 2))
    store.save_summary("r", summary(3))
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # the schema itself refuses an orphan
        store._db.execute("""INSERT INTO finals (room, id, seq, start, "end", data) VALUES ('x', 0, 1, 0, 0, '{}')""")
    for table in ("finals", "notes", "summaries"):
        fks = store._db.execute(f"PRAGMA foreign_key_list({table})").fetchall()
        assert [(fk[2], fk[3], fk[4], fk[6]) for fk in fks] == [("rooms", "room", "name", "CASCADE")], table
    assert store.delete_room("r") is True
    assert all(rows == [] for rows in dump(store).values())


def test_delete_room_cascades_for_any_connection_with_foreign_keys(tmp_path: Path):
    """The cascade is in the schema: a plain sqlite3 connection (foreign_keys on) deletes a room whole too."""
    path = tmp_path / "s.db"
    with SQLiteStore(str(path)) as s:
        s.add_room(RoomRecord("r"))
        s.save_final("r", final(0, 1), audio_s=1.0)
        s.save_notes("r", notes(1, 2))
        s.save_summary("r", summary(3))
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        with db:
            db.execute("DELETE FROM rooms WHERE name = 'r'")
    finally:
        db.close()
    for table in ("finals", "notes", "summaries"):
        assert count_rows(path, table, "r") == 0


# ---------------------------------------------------------------- migration


# The version-1 schema exactly as the first release created it; _MIGRATIONS[0] must never change.
V1_SCHEMA = [
    """CREATE TABLE rooms (
            name TEXT PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL DEFAULT 0,
            speaker_key_hash TEXT,
            viewer_key_hash TEXT,
            seq_reserved INTEGER NOT NULL DEFAULT 0,
            audio_s REAL NOT NULL DEFAULT 0,
            glossary TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE finals (
            room TEXT NOT NULL, id INTEGER NOT NULL, seq INTEGER NOT NULL,
            start REAL NOT NULL, "end" REAL NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, id))""",
    "CREATE INDEX finals_room_seq ON finals (room, seq)",
    """CREATE TABLE notes (
            room TEXT NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, version))""",
    "CREATE INDEX notes_room_seq ON notes (room, seq)",
    """CREATE TABLE summaries (
            room TEXT NOT NULL, seq INTEGER NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, seq))""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]


def write_v1_database(path: Path) -> None:
    """A file as version 1 of the store left it: WAL, two rooms with events, an admin key, and (as a database edited
    by hand might have) a final whose room row is missing."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        for statement in V1_SCHEMA:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO rooms VALUES ('ana1', 'Analysis I', 5.0, 'sk', 'vk', 1009, 30.5, 'Folge')")
        db.execute("INSERT INTO rooms (name, created_at) VALUES ('open', 6.0)")
        for room in ("ana1", "open", "orphan"):
            for i, seq in ((0, 2), (1, 4)):
                db.execute('INSERT INTO finals (room, id, seq, start, "end", data) VALUES (?, ?, ?, ?, ?, ?)',
                           (room, i, seq, i * 2.0, i * 2.0 + 1.5, json.dumps(final(i, seq))))
            db.execute("INSERT INTO notes VALUES (?, 1, 3, ?)", (room, json.dumps(notes(1, 3))))
            db.execute("INSERT INTO summaries VALUES (?, 5, 7.0, ?)", (room, json.dumps(summary(5))))
        db.execute("INSERT INTO meta VALUES ('admin_key_hash', 'h')")
        db.execute("COMMIT")
    finally:
        db.close()


def test_the_v1_schema_is_frozen():
    assert [" ".join(s.split()) for s in _MIGRATIONS[0]] == [" ".join(s.split()) for s in V1_SCHEMA]


def test_a_v1_database_migrates_and_keeps_its_data(tmp_path: Path):
    path = tmp_path / "v1.db"
    write_v1_database(path)
    with SQLiteStore(str(path)) as s:
        ana1 = s.load_room("ana1")
        assert ana1 == RoomState(RoomRecord("ana1", "Analysis I", 5.0, "sk", "vk", 1009, 30.5, "Folge", "anyone", 0, 0),
                                 [final(0, 2), final(1, 4)], notes(1, 3), summary(5))
        assert s.load_room("open").finals == [final(0, 2), final(1, 4)]
        assert [e["seq"] for e in s.events_after("ana1", 0)] == [2, 3, 4, 5]
        assert s.get_meta("admin_key_hash") == "h"
        assert s.get_room("orphan") is None and s.events_after("orphan", 0) == []  # unreachable rows are dropped
        assert s._db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert s._db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        indexes = {row[0] for row in s._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"finals_room_seq", "notes_room_seq"} <= indexes
        assert not s._db.execute("SELECT name FROM sqlite_master WHERE name LIKE '%_v2'").fetchall()
        s.set_ask("ana1", "viewers")  # the new columns work, and the migrated tables cascade
        s.add_llm_tokens("ana1", "notes", 7)
        s.save_final("ana1", final(2, 1010), audio_s=31.0)
        assert s.delete_room("open")
    for table in ("finals", "notes", "summaries"):
        assert count_rows(path, table, "open") == 0
    with SQLiteStore(str(path)) as s:  # reopening migrates nothing more
        rec = s.get_room("ana1")
        assert (rec.ask, rec.llm_tokens_notes, rec.seq_reserved) == ("viewers", 7, 1010)
        assert len(s.load_room("ana1").finals) == 3
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_failed_migration_leaves_the_v1_database_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "v1.db"
    write_v1_database(path)
    monkeypatch.setattr("realtime.storage.sqlite._MIGRATIONS", [_MIGRATIONS[0], [*_MIGRATIONS[1], "THIS IS NOT SQL"]])
    with pytest.raises(sqlite3.OperationalError):
        SQLiteStore(str(path))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM finals").fetchone()[0] == 6  # the orphan's rows too: untouched
        assert "ask" not in [row[1] for row in db.execute("PRAGMA table_info(rooms)")]


# ---------------------------------------------------------------- ask, LLM tokens


def test_new_rooms_default_to_anyone_and_no_tokens(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    rec = store.get_room("r")
    assert (rec.ask, rec.llm_tokens_notes, rec.llm_tokens_visitors) == ("anyone", 0, 0)
    assert ASK_POLICIES == ("anyone", "viewers", "nobody")


def test_set_ask(store: SQLiteStore):
    store.add_room(RoomRecord("r", ask="nobody"))
    assert store.get_room("r").ask == "nobody"
    for ask in ASK_POLICIES:
        store.set_ask("r", ask)
        assert store.get_room("r").ask == ask
    for bad in ("", "Anyone", "everyone", "viewers "):
        with pytest.raises(ValueError, match="ask"):
            store.set_ask("r", bad)
        with pytest.raises(ValueError, match="ask"):
            store.add_room(RoomRecord(f"bad{bad}", ask=bad))
    assert store.get_room("r").ask == "nobody"
    assert [r.name for r in store.list_rooms()] == ["r"]
    with pytest.raises(ValueError):  # a bad value is refused before the room is even looked up
        store.set_ask("missing", "all")


def test_add_llm_tokens(store: SQLiteStore):
    store.add_room(RoomRecord("r", llm_tokens_notes=5))
    store.add_room(RoomRecord("other"))
    store.add_llm_tokens("r", "notes", 100)
    store.add_llm_tokens("r", "visitors", 30)
    store.add_llm_tokens("r", "visitors", 12)
    store.add_llm_tokens("r", "notes", 0)
    rec = store.get_room("r")
    assert (rec.llm_tokens_notes, rec.llm_tokens_visitors) == (105, 42)
    assert store.get_room("other") == RoomRecord("other")
    for pool in ("summary", "", "notes; DROP TABLE rooms", "tokens_notes"):
        with pytest.raises(ValueError, match="pool"):
            store.add_llm_tokens("r", pool, 1)
    with pytest.raises(ValueError, match="negative"):  # budgets only ever fill up
        store.add_llm_tokens("r", "notes", -1)
    rec = store.get_room("r")
    assert (rec.llm_tokens_notes, rec.llm_tokens_visitors) == (105, 42)
    assert store.load_room("r").record == rec


def test_daily_tokens(store: SQLiteStore):
    assert store.daily_tokens("2026-12-02") == 0
    assert store.add_daily_tokens("2026-12-02", 100) == 100
    assert store.add_daily_tokens("2026-12-02", 23) == 123
    assert store.add_daily_tokens("2026-12-03", 5) == 5
    assert store.add_daily_tokens("2026-12-02", 0) == 123
    assert (store.daily_tokens("2026-12-02"), store.daily_tokens("2026-12-03")) == (123, 5)
    assert store.get_meta("llm_tokens:2026-12-02") == "123"
    with pytest.raises(ValueError, match="negative"):
        store.add_daily_tokens("2026-12-02", -5)
    assert store.daily_tokens("2026-12-02") == 123


def test_daily_tokens_add_up_across_stores_and_threads(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    stores = [SQLiteStore(path), SQLiteStore(path)]
    n, totals, errors = 200, [], []

    def spender(store: SQLiteStore) -> None:
        try:
            totals.extend(store.add_daily_tokens("2026-12-02", 3) for _ in range(n))
        except Exception as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=spender, args=(stores[k % 2],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert sorted(totals) == [3 * i for i in range(1, 4 * n + 1)]  # every add saw all the earlier ones
        assert stores[0].daily_tokens("2026-12-02") == stores[1].daily_tokens("2026-12-02") == 3 * 4 * n
    finally:
        for s in stores:
            s.close()


# ---------------------------------------------------------------- files, durability setting


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual default, which would leave new files world-readable
    yield
    os.umask(old)


def test_a_new_database_and_its_directories_are_private(tmp_path: Path, umask_022):
    top = tmp_path / "var"
    path = top / "lib" / "realtime.db"
    with SQLiteStore(str(path)) as s:
        s.add_room(RoomRecord("r", speaker_key_hash="sk"))
        s.save_final("r", final(0, 1), audio_s=1.0)
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()
        assert (mode(top), mode(path.parent), mode(path), mode(wal), mode(shm)) == (0o700, 0o700, 0o600, 0o600,
                                                                                   0o600)


def test_existing_files_and_directories_keep_their_modes(tmp_path: Path, umask_022):
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    path = directory / "realtime.db"
    SQLiteStore(str(path)).close()
    os.chmod(path, 0o640)  # an administrator's choice: e.g. readable by a backup group
    with SQLiteStore(str(path)) as s:
        s.add_room(RoomRecord("r"))
        s.save_final("r", final(0, 1), audio_s=1.0)
        assert mode(Path(f"{path}-wal")) == 0o640  # SQLite copies the database file's mode
    assert (mode(directory), mode(path)) == (0o755, 0o640)


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2)])
def test_synchronous(tmp_path: Path, synchronous: str, level: int):
    with SQLiteStore(str(tmp_path / "s.db"), synchronous=synchronous) as s:
        assert s._db.execute("PRAGMA synchronous").fetchone() == (level,)
        assert s.synchronous == synchronous
        assert s._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    s = open_store(str(tmp_path / "o.db"), synchronous=synchronous)
    try:
        assert s._db.execute("PRAGMA synchronous").fetchone() == (level,)
    finally:
        s.close()


def test_synchronous_defaults_to_normal_and_refuses_anything_else(tmp_path: Path):
    with SQLiteStore(str(tmp_path / "s.db")) as s:
        assert s._db.execute("PRAGMA synchronous").fetchone() == (1,)
    for bad in ("off", "extra", "FULL", "", "normal; DROP TABLE rooms"):
        with pytest.raises(ValueError, match="synchronous"):
            SQLiteStore(str(tmp_path / "bad" / "s.db"), synchronous=bad)
        with pytest.raises(ValueError, match="synchronous"):
            open_store(str(tmp_path / "bad" / "s.db"), synchronous=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything was created


# ---------------------------------------------------------------- room_admin


def test_make_room_stores_the_ask_policy(store: SQLiteStore):
    made = make_room(store, "Biologie", "bio", private=True, ask="viewers")
    assert made["ask"] == "viewers" and made["private"] is True and made["viewer_key"]
    rec = store.get_room("bio")
    assert rec.ask == "viewers" and rec.viewer_key_hash and rec.speaker_key_hash
    assert make_room(store, "Chemie", "chem", private=False)["ask"] == "anyone"
    assert store.get_room("chem").ask == "anyone" and store.get_room("chem").viewer_key_hash is None
    with pytest.raises(ValueError, match="ask"):
        make_room(store, "Physik", "phys", private=False, ask="everyone")
    assert store.get_room("phys") is None


def room_args(db: Path, action: str, **extra: Any) -> argparse.Namespace:
    return argparse.Namespace(action=action, db=str(db), json=True, public_url="http://h", name=None,
                              title="", private=False, **extra)


def test_room_command_create_with_and_without_ask_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    db = tmp_path / "r.db"
    args = room_args(db, "create", ask="nobody")
    args.title, args.private = "Biology 1", True
    assert room_command(args) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["room"], made["ask"], made["private"]) == ("biology-1", "nobody", True)
    no_flag = room_args(db, "create")  # a parser without --ask
    no_flag.title = "Chemistry"
    assert room_command(no_flag) == 0
    assert json.loads(capsys.readouterr().out)["ask"] == "anyone"
    bad = room_args(db, "create", ask="all")
    bad.title = "Physics"
    assert room_command(bad) == 2
    assert "ask must be one of" in capsys.readouterr().err
    assert room_command(room_args(db, "list")) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(cols[0], cols[1], cols[2], cols[-1]) for cols in lines] == [
        ("biology-1", "private", "ask=nobody", "Biology 1"), ("chemistry", "public", "ask=anyone", "Chemistry")]


# ---------------------------------------------------------------- two stores on one file


def test_a_second_store_sees_the_first_ones_writes(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    server, cli = SQLiteStore(path), SQLiteStore(path)
    try:
        assert cli.get_room("lecture") is None  # the CLI opened its store before the room existed
        server.add_room(RoomRecord("lecture", title="from the server"))
        assert cli.get_room("lecture") == RoomRecord("lecture", title="from the server")
        cli.add_room(RoomRecord("cli-room"))
        assert server.get_room("cli-room") == RoomRecord("cli-room")
        with pytest.raises(RoomExists):
            cli.add_room(RoomRecord("lecture"))
        server.save_final("lecture", final(0, 1), audio_s=1.0)
        assert cli.events_after("lecture", 0) == [final(0, 1)]
    finally:
        server.close()
        cli.close()


def test_writes_from_two_stores_and_many_threads_interleave(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    stores = [SQLiteStore(path), SQLiteStore(path)]
    n, errors = 150, []

    def writer(store: SQLiteStore, room: str) -> None:
        try:
            store.add_room(RoomRecord(room))
            for i in range(n):
                store.save_final(room, final(i, 2 * i + 1), audio_s=float(i))
                store.reserve_seq(room, i + 1000)
                if i % 10 == 0:
                    store.save_notes(room, notes(i, 2 * i + 2))
                    store.load_room(room)
                    store.list_rooms()
                    store.events_after(room, i - 5)
        except Exception as exc:  # collected for the main thread
            errors.append(exc)

    # two threads on each store: exercises the per-store lock and the cross-connection busy timeout
    threads = [threading.Thread(target=writer, args=(stores[k % 2], f"room{k}")) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        for k in range(4):
            state = stores[(k + 1) % 2].load_room(f"room{k}")  # read through the other store
            assert state is not None
            assert [f["id"] for f in state.finals] == list(range(n))
            assert state.record.seq_reserved == n - 1 + 1000
    finally:
        for s in stores:
            s.close()


# ---------------------------------------------------------------- durability


CHILD = """
import sys, time
from realtime.storage.sqlite import RoomRecord, SQLiteStore
store = SQLiteStore(sys.argv[1])
store.add_room(RoomRecord("crash"))
for i in range(int(sys.argv[2])):
    store.save_final("crash", {"type": "final", "seq": i + 1, "id": i, "start": float(i), "end": i + 0.5,
                               "text": f"Satz {i} – ä"}, audio_s=i + 0.5)
    print(i + 1, flush=True)
time.sleep(60)
"""


def test_every_reported_final_survives_sigkill(tmp_path: Path):
    path = tmp_path / "crash" / "realtime.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "100000"], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=ROOT)
    assert child.stdout is not None
    reported = 0
    try:
        deadline = time.monotonic() + 60
        while reported < 300:  # kill it mid-stream, while it is still writing
            line = child.stdout.readline()
            assert line, f"child exited early with {child.poll()}"
            reported = int(line)
            assert time.monotonic() < deadline
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    for line in child.stdout.read().split():  # whatever it printed before it died
        reported = max(reported, int(line))
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with SQLiteStore(str(path)) as s:
        state = s.load_room("crash")
        assert state is not None
        ids = [f["id"] for f in state.finals]
        # every reported final is there; at most one more (committed, killed before it printed)
        assert ids[:reported] == list(range(reported)) and len(ids) - reported in (0, 1), (reported, len(ids))
        assert state.finals[reported - 1]["text"] == f"Satz {reported - 1} – ä"
        assert state.record.seq_reserved == len(ids)
        assert state.record.audio_s == len(ids) - 0.5


def test_save_final_latency(tmp_path: Path):
    with SQLiteStore(str(tmp_path / "latency.db")) as s:
        s.add_room(RoomRecord("r"))
        n = 1000
        times = []
        for i in range(n):
            f = final(i, i + 1)
            t0 = time.perf_counter()
            s.save_final("r", f, audio_s=float(i))
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"\nsave_final on a tmp file: mean {sum(times) / n * 1e6:.0f} µs, median {times[n // 2] * 1e6:.0f} µs,"
              f" p99 {times[int(n * 0.99)] * 1e6:.0f} µs over {n} calls")
        assert len(s.load_room("r").finals) == n
