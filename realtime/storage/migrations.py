"""The SQLite schema's history: MIGRATIONS[i] brings a database from `PRAGMA user_version` i to i + 1."""

from __future__ import annotations

SCHEMA_VERSION = 4

# MIGRATIONS[i] brings a database from user_version i to i + 1. They run with foreign keys off (SQLite's advice
# for schema changes); the connection turns them on afterwards.
MIGRATIONS: list[list[str]] = [
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
    [
        "ALTER TABLE rooms ADD COLUMN ask TEXT NOT NULL DEFAULT 'anyone'",
        "ALTER TABLE rooms ADD COLUMN llm_tokens_notes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE rooms ADD COLUMN llm_tokens_visitors INTEGER NOT NULL DEFAULT 0",
        # finals, notes and summaries gain a foreign key: SQLite cannot add one to a table, so each is rebuilt,
        # keeping the rows whose room exists (no other row is reachable, and it would violate the key).
        """CREATE TABLE finals_v2 (
            room TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE, id INTEGER NOT NULL, seq INTEGER NOT NULL,
            start REAL NOT NULL, "end" REAL NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, id))""",
        """INSERT INTO finals_v2 (room, id, seq, start, "end", data)
            SELECT room, id, seq, start, "end", data FROM finals WHERE room IN (SELECT name FROM rooms)""",
        "DROP TABLE finals",
        "ALTER TABLE finals_v2 RENAME TO finals",
        "CREATE INDEX finals_room_seq ON finals (room, seq)",
        """CREATE TABLE notes_v2 (
            room TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE, version INTEGER NOT NULL,
            seq INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, version))""",
        """INSERT INTO notes_v2 (room, version, seq, data)
            SELECT room, version, seq, data FROM notes WHERE room IN (SELECT name FROM rooms)""",
        "DROP TABLE notes",
        "ALTER TABLE notes_v2 RENAME TO notes",
        "CREATE INDEX notes_room_seq ON notes (room, seq)",
        """CREATE TABLE summaries_v2 (
            room TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE, seq INTEGER NOT NULL,
            created_at REAL NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, seq))""",
        """INSERT INTO summaries_v2 (room, seq, created_at, data)
            SELECT room, seq, created_at, data FROM summaries WHERE room IN (SELECT name FROM rooms)""",
        "DROP TABLE summaries",
        "ALTER TABLE summaries_v2 RENAME TO summaries",
    ],
    [
        "ALTER TABLE rooms ADD COLUMN llm_tokens_translation INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE translations (
            room TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE, final INTEGER NOT NULL,
            lang TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, final, lang))""",
        "CREATE INDEX translations_room_seq ON translations (room, seq)",
    ],
    [
        """CREATE TABLE panels (
            room TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE, panel TEXT NOT NULL,
            version INTEGER NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (room, panel, version))""",
        "CREATE INDEX panels_room_seq ON panels (room, seq)",
    ],
]
assert len(MIGRATIONS) == SCHEMA_VERSION
