"""Persistence: rooms, their finals, notes and summaries, in one SQLite file, so a room survives `kill -9`.

The server writes a final to the store *before* broadcasting it, so no final a listener has seen can be lost. It
calls the store synchronously from its event loop thread, which keeps ordering trivial but means every call must be
fast. Hence:

* WAL journal, with ``synchronous`` chosen per store (``SQLiteStore(path, synchronous=...)``):

  - ``"normal"`` (the default): a commit appends to the WAL with a plain ``write()`` and no ``fsync``, so it costs
    tens of microseconds. Once a write method returns, its transaction is in the operating system's page cache: it
    survives a crash or SIGKILL of the process, but the last transactions (everything since the last checkpoint's
    ``fsync``) may be lost on a power loss or an operating system crash. The database itself stays consistent.
  - ``"full"``: the WAL is synced on every commit, so nothing that committed is lost even on power loss or an OS
    crash, at the cost of one ``fsync`` per final (milliseconds on many disks).

  WAL also lets readers and a writer proceed concurrently.
* One connection (``check_same_thread=False``) guarded by a ``threading.Lock``: the CLI and tests may call from
  other threads, and sqlite3 connections must not be used by two threads at once.
* ``isolation_level=None`` (no implicit transactions) with explicit ``BEGIN IMMEDIATE``/``COMMIT`` around writes:
  the write lock is taken up front, so a concurrent writer waits in ``busy_timeout`` (5 s) instead of failing with a
  stale-snapshot "database is locked". Another process (``realtime room create``) may write to the same file while
  the server runs.
* No write creates a room. Every room-scoped write first updates the room's row and raises `RoomGone` (writing
  nothing) when there is none, in the same transaction, so a room deleted by another process cannot come back
  (open and public) because the server still had it in memory. ``finals``, ``notes`` and ``summaries`` reference
  ``rooms`` with ``ON DELETE CASCADE`` (``PRAGMA foreign_keys = ON``), so deleting a room deletes all of it.
* A database file and the directory this creates for it are private to the server's user (0600 and 0700): they
  hold key hashes and whole lectures. SQLite gives its -wal and -shm files the database file's permissions.
* The schema is versioned with ``PRAGMA user_version`` (see `realtime.storage.migrations`) so later versions can
  migrate it.

`Store` (in `realtime.core.records`) is the interface; `SQLiteStore` the only backend so far; `open_store` is
where another would be chosen.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from realtime.core.protocol import dumps
from realtime.core.records import ASK_POLICIES, TOKEN_POOLS, RoomExists, RoomGone, RoomRecord, RoomState, Store
from realtime.storage.migrations import MIGRATIONS as _MIGRATIONS
from realtime.storage.migrations import SCHEMA_VERSION

BUSY_TIMEOUT_MS = 5000
SYNCHRONOUS = ("normal", "full")



_ROOM_COLUMNS = ("name, title, created_at, speaker_key_hash, viewer_key_hash, seq_reserved, audio_s, glossary, ask, "
                 "llm_tokens_notes, llm_tokens_visitors, llm_tokens_translation")

# Every room-scoped write starts with this, and writes nothing more when it matched no row (see `_touch`). It only
# ever raises audio_s and seq_reserved, and sets the glossary unless given NULL. Parameters: audio_s, seq, glossary,
# name.
_TOUCH_ROOM = """UPDATE rooms SET audio_s = MAX(audio_s, ?), seq_reserved = MAX(seq_reserved, ?),
                                  glossary = COALESCE(?, glossary)
                 WHERE name = ?"""

_DAILY_TOKENS_KEY = "llm_tokens:{day}"


def _touch(db: sqlite3.Connection, room: str, audio_s: float = 0.0, seq: int = 0, glossary: str | None = None) -> None:
    """Raise the room's counters, or raise RoomGone when it has no row. Called first in a write transaction, so the
    caller inserts its child rows only into a room that exists, and a RoomGone rolls the whole write back."""
    if db.execute(_TOUCH_ROOM, (audio_s, seq, glossary, room)).rowcount == 0:
        raise RoomGone(room)


def _check_ask(ask: str) -> None:
    if ask not in ASK_POLICIES:
        raise ValueError(f"ask must be one of {', '.join(ASK_POLICIES)}, not {ask!r}")


def _check_tokens(tokens: int) -> None:
    """Token counters feed spending limits, so they only ever go up."""
    if tokens < 0:
        raise ValueError(f"tokens must not be negative, not {tokens}")


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents with mode 0700 (``mkdir(parents=True)`` would give the parents the
    default mode); leave existing ones as they are."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # made meanwhile by someone else: theirs
            pass


def _create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (SQLite takes an empty file for an empty database), so the
    database and the -wal and -shm files SQLite copies its mode to are the owner's only. Never changes a file that
    exists: no O_TRUNC, and O_CREAT leaves an existing file's mode alone."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class SQLiteStore:
    """The `Store` on one SQLite file (or ``":memory:"``). Safe to call from any thread; see the module docstring.

    `synchronous` is ``"normal"`` (survives a crash of the process) or ``"full"`` (also survives a power loss, at an
    fsync per commit)."""

    def __init__(self, path: str, synchronous: str = "normal"):
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        if path not in (":memory:", ""):
            _make_private_dirs(Path(path).parent)
            _create_private_file(Path(path))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")  # persistent; ":memory:" stays "memory"
            self._db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._migrate()
            self._enable_foreign_keys()
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

    def _enable_foreign_keys(self) -> None:
        """Per connection and outside a transaction (inside one the pragma is silently ignored). delete_room relies
        on the cascade, so a build without foreign keys is refused rather than left to keep a deleted room's rows."""
        self._db.execute("PRAGMA foreign_keys = ON")
        if self._db.execute("PRAGMA foreign_keys").fetchone() != (1,):
            raise RuntimeError(f"{self.path}: this SQLite does not enforce foreign keys")

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
        """The only way a room comes into being. RoomExists if the name is taken; ValueError for a bad `ask`."""
        _check_ask(record.ask)
        with self._lock:
            cur = self._db.execute(
                f"INSERT INTO rooms ({_ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (record.name, record.title, record.created_at, record.speaker_key_hash, record.viewer_key_hash,
                 record.seq_reserved, record.audio_s, record.glossary, record.ask, record.llm_tokens_notes,
                 record.llm_tokens_visitors, record.llm_tokens_translation))
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
        """Deletes the room and (by the foreign keys' cascade) its finals, notes and summaries; False if none."""
        with self._write() as db:
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
            translations = db.execute("SELECT data FROM translations WHERE room = ? ORDER BY seq",
                                      (name,)).fetchall()
            panels = db.execute("""SELECT data FROM panels p WHERE room = ?1 AND version =
                                   (SELECT MAX(version) FROM panels WHERE room = ?1 AND panel = p.panel)
                                   ORDER BY seq""", (name,)).fetchall()
        return RoomState(record=RoomRecord(*row), finals=[json.loads(data) for (data,) in finals],
                         notes=json.loads(notes[0]) if notes else None,
                         summary=json.loads(summary[0]) if summary else None,
                         translations=[json.loads(data) for (data,) in translations],
                         panels=[json.loads(data) for (data,) in panels])

    def set_ask(self, room: str, ask: str) -> None:
        """Who may ask questions in `room`: one of ASK_POLICIES (else ValueError). RoomGone if it is missing."""
        _check_ask(ask)
        with self._write() as db:
            if db.execute("UPDATE rooms SET ask = ? WHERE name = ?", (ask, room)).rowcount == 0:
                raise RoomGone(room)

    def add_llm_tokens(self, room: str, pool: str, tokens: int) -> None:
        """Adds `tokens` to the room's spend in `pool` ("notes" or "visitors", else ValueError), so its budget holds
        across restarts. RoomGone if the room is missing."""
        if pool not in TOKEN_POOLS:
            raise ValueError(f"pool must be one of {', '.join(TOKEN_POOLS)}, not {pool!r}")
        _check_tokens(tokens)
        column = f"llm_tokens_{pool}"  # one of the fixed names, checked above
        with self._write() as db:
            if db.execute(f"UPDATE rooms SET {column} = {column} + ? WHERE name = ?",
                          (int(tokens), room)).rowcount == 0:
                raise RoomGone(room)

    # ---------------------------------------------------------------- events

    def save_final(self, room: str, final: dict[str, Any], audio_s: float) -> None:
        """Durable when it returns (see the module docstring for how durable). Replaces an earlier final with the
        same id; raises (never lowers) the room's audio_s and seq_reserved. RoomGone, and nothing written, if the
        room is missing."""
        seq, data = int(final["seq"]), dumps(final)
        with self._write() as db:
            _touch(db, room, audio_s=audio_s, seq=seq)
            db.execute('INSERT OR REPLACE INTO finals (room, id, seq, start, "end", data) VALUES (?, ?, ?, ?, ?, ?)',
                       (room, int(final["id"]), seq, float(final.get("start", 0.0)), float(final.get("end", 0.0)),
                        data))

    def save_notes(self, room: str, notes: dict[str, Any]) -> None:
        """Keeps every version (the same version again replaces it); raises seq_reserved to the notes' seq.
        RoomGone if the room is missing."""
        seq, data = int(notes["seq"]), dumps(notes)
        with self._write() as db:
            _touch(db, room, seq=seq)
            db.execute("INSERT OR REPLACE INTO notes (room, version, seq, data) VALUES (?, ?, ?, ?)",
                       (room, int(notes["version"]), seq, data))

    def save_summary(self, room: str, summary: dict[str, Any]) -> None:
        """Keeps every summary (the same seq again replaces it); raises seq_reserved to the summary's seq.
        RoomGone if the room is missing."""
        seq, data = int(summary["seq"]), dumps(summary)
        with self._write() as db:
            _touch(db, room, seq=seq)
            db.execute("INSERT OR REPLACE INTO summaries (room, seq, created_at, data) VALUES (?, ?, ?, ?)",
                       (room, seq, time.time(), data))

    def save_translation(self, room: str, translation: dict[str, Any]) -> None:
        """One final in one language (the same again replaces it); raises seq_reserved to its seq. RoomGone if the
        room is missing."""
        seq, data = int(translation["seq"]), dumps(translation)
        with self._write() as db:
            _touch(db, room, seq=seq)
            db.execute("INSERT OR REPLACE INTO translations (room, final, lang, seq, data) VALUES (?, ?, ?, ?, ?)",
                       (room, int(translation["final"]), str(translation["lang"]), seq, data))

    def save_panel(self, room: str, panel: dict[str, Any]) -> None:
        """Keeps every version of each study panel (the same version again replaces it); raises seq_reserved to its
        seq. RoomGone if the room is missing."""
        seq, data = int(panel["seq"]), dumps(panel)
        with self._write() as db:
            _touch(db, room, seq=seq)
            db.execute("INSERT OR REPLACE INTO panels (room, panel, version, seq, data) VALUES (?, ?, ?, ?, ?)",
                       (room, str(panel["panel"]), int(panel["version"]), seq, data))

    def save_progress(self, room: str, audio_s: float, glossary: str | None = None) -> None:
        """Raises (never lowers) the room's audio_s; sets its glossary unless None. RoomGone if it is missing."""
        with self._write() as db:
            _touch(db, room, audio_s=audio_s, glossary=glossary)

    def reserve_seq(self, room: str, upto: int) -> None:
        """Raises (never lowers) seq_reserved to `upto`. RoomGone if the room is missing."""
        with self._write() as db:
            _touch(db, room, seq=upto)

    def events_after(self, room: str, seq: int) -> list[dict[str, Any]]:
        """The durable events (finals, every notes and panel version, summaries, translations) with a seq above
        `seq`, in seq order."""
        with self._lock:
            rows = self._db.execute(
                """SELECT seq, data FROM finals WHERE room = ?1 AND seq > ?2
                   UNION ALL SELECT seq, data FROM notes WHERE room = ?1 AND seq > ?2
                   UNION ALL SELECT seq, data FROM summaries WHERE room = ?1 AND seq > ?2
                   UNION ALL SELECT seq, data FROM translations WHERE room = ?1 AND seq > ?2
                   UNION ALL SELECT seq, data FROM panels WHERE room = ?1 AND seq > ?2
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

    def add_daily_tokens(self, day: str, tokens: int) -> int:
        """Adds `tokens` to the server-wide LLM spend of `day` (e.g. "2026-12-02") and returns the new total. One
        transaction, so two processes adding at once both count."""
        _check_tokens(tokens)
        key = _DAILY_TOKENS_KEY.format(day=day)
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            total = (int(row[0]) if row else 0) + int(tokens)
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                       "value = excluded.value", (key, str(total)))
        return total

    def daily_tokens(self, day: str) -> int:
        """The server-wide LLM spend of `day` so far; 0 when nothing was spent."""
        value = self.get_meta(_DAILY_TOKENS_KEY.format(day=day))
        return int(value) if value is not None else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str, synchronous: str = "normal") -> Store:
    """The store at `path`. The one backend is SQLite; this is where another would be picked by URL scheme."""
    return SQLiteStore(path, synchronous=synchronous)
