"""Persistence: rooms, their finals, notes and summaries, in one SQLite file, so a room survives `kill -9`.

The server writes a final to the store *before* broadcasting it, so no final a listener has seen can be lost. It
calls the store synchronously from its event loop thread, which keeps ordering trivial but means every call must be
fast. Hence:

* WAL journal with ``synchronous=NORMAL``: a commit appends to the WAL with a plain ``write()`` and no ``fsync``, so
  it costs tens of microseconds. Once ``save_final`` returns, the transaction is in the operating system's page
  cache and survives a crash (or SIGKILL) of the process; only a power loss or kernel crash could drop the last few
  commits, which is not the failure we guard against. WAL also lets readers and a writer proceed concurrently.
* One connection (``check_same_thread=False``) guarded by a ``threading.Lock``: the CLI and tests may call from
  other threads, and sqlite3 connections must not be used by two threads at once.
* ``isolation_level=None`` (no implicit transactions) with explicit ``BEGIN IMMEDIATE``/``COMMIT`` around
  multi-statement writes: the write lock is taken up front, so a concurrent writer waits in ``busy_timeout`` (5 s)
  instead of failing with a stale-snapshot "database is locked". Another process (``realtime room create``) may
  write to the same file while the server runs.
* The schema is versioned with ``PRAGMA user_version`` (see ``_MIGRATIONS``) so later versions can migrate it.

`Store` is the interface; `SQLiteStore` the only backend so far; `open_store` is where another would be chosen.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

# _MIGRATIONS[i] brings a database from user_version i to i + 1.
_MIGRATIONS: list[list[str]] = [
    [
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
    ],
]
assert len(_MIGRATIONS) == SCHEMA_VERSION

_ROOM_COLUMNS = "name, title, created_at, speaker_key_hash, viewer_key_hash, seq_reserved, audio_s, glossary"

# Every room-scoped write goes through this upsert, so no row ever belongs to a room without a `rooms` row (which
# would be invisible to load_room and come back if a room of that name were created later). It creates a missing
# room open (no keys) and only ever raises audio_s and seq_reserved. Parameters: name, created_at, audio_s, seq.
_TOUCH_ROOM = """INSERT INTO rooms (name, created_at, audio_s, seq_reserved) VALUES (?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET audio_s = MAX(audio_s, excluded.audio_s),
                                     seq_reserved = MAX(seq_reserved, excluded.seq_reserved)"""


@dataclass
class RoomRecord:
    name: str
    title: str = ""
    created_at: float = 0.0
    speaker_key_hash: str | None = None  # None: an open room, anyone may speak
    viewer_key_hash: str | None = None  # None: a public room, anyone may listen
    seq_reserved: int = 0  # seqs up to this may have been used; a restarted room continues after it
    audio_s: float = 0.0  # lecture time so far
    glossary: str = ""


@dataclass
class RoomState:
    """What a restart needs to bring a room back."""

    record: RoomRecord
    finals: list[dict[str, Any]]  # in id order
    notes: dict[str, Any] | None  # the latest notes event, or None
    summary: dict[str, Any] | None  # the latest summary event, or None


class RoomExists(Exception):
    """add_room: a room of that name is already stored."""


@runtime_checkable
class Store(Protocol):
    def add_room(self, record: RoomRecord) -> None: ...
    def get_room(self, name: str) -> RoomRecord | None: ...
    def list_rooms(self) -> list[RoomRecord]: ...
    def delete_room(self, name: str) -> bool: ...
    def load_room(self, name: str) -> RoomState | None: ...
    def save_final(self, room: str, final: dict[str, Any], audio_s: float) -> None: ...
    def save_notes(self, room: str, notes: dict[str, Any]) -> None: ...
    def save_summary(self, room: str, summary: dict[str, Any]) -> None: ...
    def save_progress(self, room: str, audio_s: float, glossary: str | None = None) -> None: ...
    def reserve_seq(self, room: str, upto: int) -> None: ...
    def events_after(self, room: str, seq: int) -> list[dict[str, Any]]: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def close(self) -> None: ...


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class SQLiteStore:
    """The `Store` on one SQLite file (or ``":memory:"``). Safe to call from any thread; see the module docstring."""

    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")  # persistent; ":memory:" stays "memory"
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema version {version} is newer than this program's "
                                   f"({SCHEMA_VERSION})")
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from the start."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot across several SELECTs."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # ---------------------------------------------------------------- rooms

    def add_room(self, record: RoomRecord) -> None:
        with self._lock:
            cur = self._db.execute(
                f"INSERT INTO rooms ({_ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (record.name, record.title, record.created_at, record.speaker_key_hash, record.viewer_key_hash,
                 record.seq_reserved, record.audio_s, record.glossary))
            if cur.rowcount == 0:
                raise RoomExists(record.name)

    def get_room(self, name: str) -> RoomRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = ?", (name,)).fetchone()
        return RoomRecord(*row) if row else None

    def list_rooms(self) -> list[RoomRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY created_at, name").fetchall()
        return [RoomRecord(*row) for row in rows]

    def delete_room(self, name: str) -> bool:
        with self._write() as db:
            for table in ("finals", "notes", "summaries"):
                db.execute(f"DELETE FROM {table} WHERE room = ?", (name,))
            return db.execute("DELETE FROM rooms WHERE name = ?", (name,)).rowcount > 0

    def load_room(self, name: str) -> RoomState | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            finals = db.execute("SELECT data FROM finals WHERE room = ? ORDER BY id", (name,)).fetchall()
            notes = db.execute("SELECT data FROM notes WHERE room = ? ORDER BY version DESC LIMIT 1",
                               (name,)).fetchone()
            summary = db.execute("SELECT data FROM summaries WHERE room = ? ORDER BY seq DESC LIMIT 1",
                                 (name,)).fetchone()
        return RoomState(record=RoomRecord(*row), finals=[json.loads(data) for (data,) in finals],
                         notes=json.loads(notes[0]) if notes else None,
                         summary=json.loads(summary[0]) if summary else None)

    # ---------------------------------------------------------------- events

    def save_final(self, room: str, final: dict[str, Any], audio_s: float) -> None:
        """Durable when it returns. Replaces an earlier final with the same id; raises (never lowers) the room's
        audio_s and seq_reserved; creates the room, open, if it is missing."""
        seq, data = int(final["seq"]), _dumps(final)
        with self._write() as db:
            db.execute(_TOUCH_ROOM, (room, time.time(), audio_s, seq))
            db.execute('INSERT OR REPLACE INTO finals (room, id, seq, start, "end", data) VALUES (?, ?, ?, ?, ?, ?)',
                       (room, int(final["id"]), seq, float(final.get("start", 0.0)), float(final.get("end", 0.0)),
                        data))

    def save_notes(self, room: str, notes: dict[str, Any]) -> None:
        """Keeps every version (the same version again replaces it); raises seq_reserved to the notes' seq."""
        seq, data = int(notes["seq"]), _dumps(notes)
        with self._write() as db:
            db.execute(_TOUCH_ROOM, (room, time.time(), 0.0, seq))
            db.execute("INSERT OR REPLACE INTO notes (room, version, seq, data) VALUES (?, ?, ?, ?)",
                       (room, int(notes["version"]), seq, data))

    def save_summary(self, room: str, summary: dict[str, Any]) -> None:
        """Keeps every summary (the same seq again replaces it); raises seq_reserved to the summary's seq."""
        seq, data, now = int(summary["seq"]), _dumps(summary), time.time()
        with self._write() as db:
            db.execute(_TOUCH_ROOM, (room, now, 0.0, seq))
            db.execute("INSERT OR REPLACE INTO summaries (room, seq, created_at, data) VALUES (?, ?, ?, ?)",
                       (room, seq, now, data))

    def save_progress(self, room: str, audio_s: float, glossary: str | None = None) -> None:
        """Raises (never lowers) the room's audio_s; sets its glossary unless None."""
        with self._write() as db:
            db.execute(_TOUCH_ROOM, (room, time.time(), audio_s, 0))
            if glossary is not None:
                db.execute("UPDATE rooms SET glossary = ? WHERE name = ?", (glossary, room))

    def reserve_seq(self, room: str, upto: int) -> None:
        with self._lock:
            self._db.execute(_TOUCH_ROOM, (room, time.time(), 0.0, upto))

    def events_after(self, room: str, seq: int) -> list[dict[str, Any]]:
        """The durable events (finals, every notes version, summaries) with a seq above `seq`, in seq order."""
        with self._lock:
            rows = self._db.execute(
                """SELECT seq, data FROM finals WHERE room = ?1 AND seq > ?2
                   UNION ALL SELECT seq, data FROM notes WHERE room = ?1 AND seq > ?2
                   UNION ALL SELECT seq, data FROM summaries WHERE room = ?1 AND seq > ?2
                   ORDER BY seq""", (room, seq)).fetchall()
        return [json.loads(data) for _, data in rows]

    # ---------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                             "value = excluded.value", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str) -> Store:
    """The store at `path`. The one backend is SQLite; this is where another would be picked by URL scheme."""
    return SQLiteStore(path)

